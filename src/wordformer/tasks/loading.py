"""Read checkpoints without running pickled code, including PyTorch Lightning 1.x ones.

``torch.load(weights_only=True)`` refuses every pickled global outside a short list of tensor
builders. Lightning 1.x checkpoints carry a few harmless ones: the ``AttributeDict`` holding the
hyperparameters and, before Lightning 1.5, callback *classes* used as dictionary keys. For exactly
those names we register inert stand-ins (an ``OrderedDict`` factory, and marker classes that keep
only the dotted name); everything else is still refused, so a crafted file cannot execute code.
We never fall back to ``weights_only=False``.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Union

import torch

from ..checkpoint import load_error_reason
from ..errors import WordformerError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

# Dict-like hyperparameter containers of Lightning 1.x / 2.x: loaded as plain dicts.
ATTRIBUTE_DICT_NAMES = (
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
)
# Callback classes that Lightning < 1.5 used as keys of checkpoint["callbacks"]: loaded as names.
CALLBACK_CLASS_NAMES = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
    "pytorch_lightning.callbacks.progress.ProgressBar",
)


class _AttributeDictStandIn:
    """Unpickles an ``AttributeDict`` as an ``OrderedDict``: torch only fills exact dict types with items."""

    def __new__(cls, *args: Any) -> Any:  # type: ignore[misc]
        return OrderedDict(*args)


class InertGlobal:
    """Marker for an allow-listed class named in a checkpoint; it has no behaviour and runs nothing."""

    dotted_name = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.dotted_name}>"


def _stand_ins() -> list[tuple[Any, str]]:
    pairs: list[tuple[Any, str]] = [(_AttributeDictStandIn, name) for name in ATTRIBUTE_DICT_NAMES]
    for name in CALLBACK_CLASS_NAMES:
        # One class per name: they are dictionary keys, so they must stay distinct.
        marker = type(f"Inert[{name}]", (InertGlobal,), {"dotted_name": name})
        pairs.append((marker, name))
    return pairs


_STAND_INS = _stand_ins()
_ALLOWED_NAMES = frozenset(name for _, name in _STAND_INS)


def _plain(obj: Any) -> Any:
    """Replace stand-ins by plain values: OrderedDicts of hyperparameters by dicts, marker classes by names."""
    if isinstance(obj, type) and issubclass(obj, InertGlobal):
        return obj.dotted_name
    if isinstance(obj, InertGlobal):
        return {"class": obj.dotted_name, "state": _plain(getattr(obj, "state", None))}
    if isinstance(obj, dict):
        if _is_state_dict(obj):
            return obj
        return {_plain(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return obj


def _is_state_dict(obj: dict) -> bool:
    # Tensors under string keys are returned untouched (an OrderedDict keeps its order and metadata).
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _refused_globals(path: Path, message: str) -> list[str]:
    """Names of the globals that made torch refuse ``path`` (read from the pickle opcodes, not executed)."""
    names: list[str] = []
    try:
        names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if n not in _ALLOWED_NAMES]
    except Exception:  # not a zip checkpoint, or unreadable: fall back to torch's message
        names = []
    if not names:
        names = re.findall(r"GLOBAL ([\w.]+)", message)[:1]
    return names


def _allow_stand_ins() -> Any:
    """Scope the stand-ins to one load; torch < 2.5 lacks the mechanism, so it then reads plain files only."""
    scoped = getattr(torch.serialization, "safe_globals", None)
    return scoped(_STAND_INS) if scoped is not None else contextlib.nullcontext()


def safe_load(path: PathLike, *, kind: str = "checkpoint", hint: str = "pass the path of an existing .ckpt file") -> Any:
    """``torch.load(path, weights_only=True)`` with Lightning 1.x metadata allowed; stand-ins made plain.

    Raises :class:`WordformerError` when the file is missing, unreadable, or contains any other pickled
    global (code that a full unpickle would run). ``kind`` and ``hint`` name the file in those messages
    (a features file is not a checkpoint).
    """
    p = Path(path)
    if not p.is_file():
        raise WordformerError(f"{kind} {p} not found: {hint}")
    try:
        with _allow_stand_ins():
            raw = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = _refused_globals(p, str(exc))
        if names:
            raise WordformerError(
                f"refusing to load {p}: it contains pickled code ({', '.join('GLOBAL ' + n for n in names)}); only "
                "tensors, plain containers and Lightning 1.x metadata are read, so re-save just the weights and hyperparameters"
            ) from None
        raise WordformerError(f"cannot read {kind} {p} as a weights-only PyTorch file ({load_error_reason(str(exc))}): check the file") from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise WordformerError(f"cannot read {kind} {p} as a PyTorch file ({load_error_reason(str(exc))}): check the file") from None
    log.debug("loaded %s", p)
    return _plain(raw)
