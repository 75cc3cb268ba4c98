"""Export a checkpoint to safetensors: weights plus configs and tokenizer, and nothing that can run code.

A Lightning checkpoint is a pickle; even with ``torch.load(weights_only=True)`` the reader has to trust
a restricted unpickler. A safetensors file is a JSON header and raw tensor bytes, so loading it cannot
execute anything. ``wordformer export --checkpoint PATH --to model.safetensors`` writes one, and
:func:`load_safetensors` (reached through :func:`wordformer.checkpoint.load_checkpoint` for any
``.safetensors`` path) rebuilds the same model: identical logits, same tokenizer.

Layout: tensors are the model's ``state_dict`` (no ``model.`` prefix); the header metadata holds
``{"wordformer": json.dumps(entry)}``, ``entry`` being the block a checkpoint stores under
``checkpoint["wordformer"]`` (format version, the three configs, the tokenizer, training info).
Tied weights (output layer = token embedding) are stored once, because safetensors refuses tensors
that share memory, and re-tied on load.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from .errors import WordformerError, file_in_the_way, make_folder

if TYPE_CHECKING:  # torch and the model load on first use, so `wordformer --help` stays fast
    import torch

    from .checkpoint import LoadedModel
    from .model import WordPredictor

__all__ = ["METADATA_KEY", "SUFFIX", "TIED_KEY", "add_export_parser", "cmd_export", "export_checkpoint",
           "load_safetensors", "safetensors_bytes", "save_safetensors"]

METADATA_KEY = "wordformer"  # metadata entry holding the JSON of a checkpoint's "wordformer" block (= checkpoint.KEY)
SUFFIX = ".safetensors"  # load_checkpoint chooses the reader by this suffix
TIED_KEY = "output_layer.weight"  # dropped when tied: it is the token embedding itself
EMBEDDING_KEY = "token_embedding.weight"
PathLike = Union[str, os.PathLike]
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # the only errors freeing space can cure


def _entry(loaded: LoadedModel) -> dict[str, Any]:
    """The same plain-data block a training checkpoint carries, so both formats describe a model alike."""
    from .checkpoint import wordformer_entry

    return wordformer_entry(loaded.model_config, loaded.data_config, loaded.train_config, loaded.tokenizer,
                            **dict(loaded.info))


def _tensors(model: WordPredictor) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, the tied output matrix left out (it is the embedding)."""
    state = model.state_dict()
    if model.config.tie_weights and TIED_KEY in state:
        if state[TIED_KEY].data_ptr() != state[EMBEDDING_KEY].data_ptr():  # pragma: no cover - model invariant
            raise WordformerError("the model says its weights are tied but the output layer has its own matrix")
        del state[TIED_KEY]
    return {name: t.detach().to("cpu").contiguous() for name, t in state.items()}


def safetensors_bytes(loaded: LoadedModel) -> bytes:
    """The complete safetensors file of ``loaded`` (weights + JSON metadata) as bytes."""
    from safetensors.torch import save

    try:
        metadata = json.dumps(_entry(loaded), allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise WordformerError(f"the checkpoint's metadata cannot be written as JSON ({exc})") from None
    return save(_tensors(loaded.model), metadata={METADATA_KEY: metadata, "format": "pt"})


def _check_target(to: Path, *, overwrite: bool) -> None:
    """Refuse a target that would lose data or that ``load_checkpoint`` would not recognise."""
    if to.suffix != SUFFIX:
        raise WordformerError(f"--to {to} must end in {SUFFIX} (load_checkpoint picks the reader by suffix)")
    if to.is_dir():
        raise WordformerError(f"--to {to} is a folder; give a file name such as {to / ('model' + SUFFIX)}")
    if to.exists() and not overwrite:
        raise WordformerError(f"{to} already exists; choose another --to or pass --overwrite to replace it")
    blocker = file_in_the_way(to.parent)
    if blocker is not None:  # checked before the slow read; mkdir alone would only say "File exists"
        raise WordformerError(f"cannot write --to {to}: {blocker} is a file, not a folder; choose another --to")


def save_safetensors(loaded: LoadedModel, to: PathLike, *, overwrite: bool = False) -> Path:
    """Write ``loaded`` to ``to`` atomically: a crash or a full disk leaves any earlier file intact."""
    from .checkpoint import atomic_write_bytes

    to = Path(to)
    _check_target(to, overwrite=overwrite)
    data = safetensors_bytes(loaded)
    make_folder(to.parent, advice="choose another --to")
    try:
        atomic_write_bytes(data, to)
    except OSError as exc:
        # Only a full disk or quota is cured by freeing space; for anything else (read-only, no permission,
        # a filesystem like /proc) that advice would send the user the wrong way.
        advice = "free disk space or choose another --to" if exc.errno in _DISK_FULL else "choose another --to"
        raise WordformerError(f"could not write {to}: {exc.strerror or exc}; {advice}") from None
    return to


def export_checkpoint(checkpoint: PathLike, to: PathLike, *, overwrite: bool = False) -> Path:
    """Convert a training checkpoint (read with ``weights_only=True``) into a safetensors file."""
    from .checkpoint import load_checkpoint

    to = Path(to)
    _check_target(to, overwrite=overwrite)  # before the (possibly slow) read: fail fast
    return save_safetensors(load_checkpoint(checkpoint, map_location="cpu"), to, overwrite=overwrite)


def _read_header(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, with one-line errors for anything else."""
    from safetensors import SafetensorError, safe_open

    if not path.exists():
        raise WordformerError(f"checkpoint {path} does not exist; write one with `wordformer export --to {path}`")
    if path.is_dir():
        raise WordformerError(f"checkpoint {path} is a folder, not a file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise WordformerError(f"{path} is not a readable safetensors file ({first}); it may be truncated "
                              "or another kind of file") from None
    return tensors, metadata


def load_safetensors(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Rebuild model and tokenizer from a file written by :func:`save_safetensors` (never runs code)."""
    from .checkpoint import KEY, build_loaded

    path = Path(path)
    tensors, metadata = _read_header(path)
    raw_entry = metadata.get(METADATA_KEY)
    if raw_entry is None:
        raise WordformerError(f"{path} is a safetensors file but not a wordformer export (no '{METADATA_KEY}' "
                              "metadata); write one with `wordformer export`")
    try:
        entry = json.loads(raw_entry)
    except json.JSONDecodeError as exc:
        raise WordformerError(f"{path}: the '{METADATA_KEY}' metadata is not valid JSON ({exc.msg})") from None
    return build_loaded(path, {KEY: entry}, tensors, map_location=map_location)


# ---------------------------------------------------------------------------------------- command line


def cmd_export(args: argparse.Namespace) -> int:
    """``wordformer export``: convert, then say where the file went."""
    to = export_checkpoint(args.checkpoint, args.to, overwrite=args.overwrite)
    print(f"wrote {to} ({to.stat().st_size:,} bytes: weights, configs and tokenizer) from {args.checkpoint}")
    return 0


def add_export_parser(subparsers: Any) -> Optional[argparse.ArgumentParser]:
    """Register ``wordformer export`` (cli.py calls this when the module is present)."""
    p = subparsers.add_parser(
        "export", help="convert a checkpoint to safetensors (weights + config + tokenizer; loading runs no code)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by `wordformer train` (required)")
    p.add_argument("--to", required=True, help=f"output file, ending in {SUFFIX} (required)")
    p.add_argument("--overwrite", action="store_true", help="replace --to if it exists")
    p.set_defaults(func=cmd_export)
    return p
