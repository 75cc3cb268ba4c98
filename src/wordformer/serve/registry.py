"""The checkpoints a server holds: loaded once at start, reached by id, never by a path from a request.

A model's id is ``<folder>/<file stem>`` (``demo/best`` for ``runs/demo/best.ckpt``), readable in
``/v1/models`` and short to type; two files that would get the same id are told apart by ``-2``, ``-3``.
Requests name a model by this id only; it is looked up in a dict and never reaches the file system.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ..checkpoint import LoadedModel
from ..errors import WordformerError
from .errors import ApiError


def model_id_for(path: Path) -> str:
    """``runs/demo/best.ckpt`` -> ``demo/best``; a file directly in ``/`` or ``.`` gets its stem alone."""
    folder = path.resolve().parent.name
    return f"{folder}/{path.stem}" if folder else path.stem


@dataclass
class ServedModel:
    """One loaded checkpoint and what the API says about it."""

    id: str
    loaded: LoadedModel
    created: int = 0  # the file's modification time, as OpenAI's ``created`` (seconds since 1970)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pairs(self) -> bool:
        return self.loaded.pairs

    def card(self) -> dict[str, Any]:
        """Architecture, size, tokenizer and training facts: what the page's model card shows.

        The checkpoint's file name is given, not its full path (that would tell clients about the server's disk).
        """
        m, d, info = self.loaded.model_config, self.loaded.data_config, self.loaded.info
        metrics = info.get("metrics") if isinstance(info.get("metrics"), dict) else {}
        val_loss = metrics.get("val_loss")
        return {
            "id": self.id,
            "file": self.loaded.path.name if self.loaded.path else None,
            "tokenizer": self.loaded.tokenizer.kind,
            "vocab_size": self.loaded.tokenizer.vocab_size,
            "d_model": m.d_model,
            "num_layers": m.num_layers,
            "num_heads": m.num_heads,
            "head_size": m.head_size,
            "block_size": m.block_size,
            "positional": m.positional,
            "norm": m.norm,
            "activation": m.activation,
            "tie_weights": m.tie_weights,
            "parameters": self.loaded.model.num_parameters(),
            "pairs": bool(d.pairs),
            "step": info.get("step"),
            "val_loss": float(val_loss) if isinstance(val_loss, (int, float)) and math.isfinite(val_loss) else None,
        }


class ModelRegistry:
    """The served models by id, in the order given; the first is the default."""

    def __init__(self, models: Iterable[ServedModel]) -> None:
        self._models: dict[str, ServedModel] = {}
        for served in models:
            if served.id in self._models:
                raise WordformerError(f"two models share the id {served.id!r}")
            self._models[served.id] = served
        if not self._models:
            raise WordformerError("no model to serve; give --checkpoint PATH")

    @classmethod
    def load(cls, paths: Sequence[str | Path]) -> "ModelRegistry":
        """Load every checkpoint (``.ckpt`` or ``.safetensors``) once; a bad one is a :class:`WordformerError`."""
        from ..checkpoint import load_checkpoint

        served: list[ServedModel] = []
        seen_files: set[Path] = set()
        taken: set[str] = set()
        for raw in paths:
            path = Path(raw).expanduser()
            if path.exists() and path.resolve() in seen_files:
                continue  # the same file twice: serve it once
            loaded = load_checkpoint(path)
            seen_files.add(path.resolve())
            base = model_id_for(path)
            model_id, k = base, 2
            while model_id in taken:
                model_id, k = f"{base}-{k}", k + 1
            taken.add(model_id)
            try:
                created = int(path.stat().st_mtime)
            except OSError:  # pragma: no cover - it was just read
                created = 0
            served.append(ServedModel(model_id, loaded, created))
        return cls(served)

    @classmethod
    def from_loaded(cls, models: dict[str, LoadedModel]) -> "ModelRegistry":
        """Serve models already in memory under the given ids (tests, notebooks)."""
        return cls(ServedModel(model_id, loaded) for model_id, loaded in models.items())

    @property
    def ids(self) -> list[str]:
        return list(self._models)

    @property
    def default_id(self) -> str:
        return next(iter(self._models))

    def models(self) -> list[ServedModel]:
        return list(self._models.values())

    def get(self, model_id: Optional[str]) -> ServedModel:
        """The model of this id; an unknown id is a 404 in OpenAI's words (``model_not_found``)."""
        if model_id is None:
            return self._models[self.default_id]
        served = self._models.get(model_id) if isinstance(model_id, str) else None
        if served is None:
            shown = model_id if isinstance(model_id, str) and len(model_id) <= 80 else str(model_id)[:80] + "..."
            raise ApiError(404, f"the model {shown!r} does not exist here; GET /v1/models lists the served ids "
                                f"({', '.join(self.ids[:5])}{', ...' if len(self.ids) > 5 else ''})",
                           param="model", code="model_not_found")
        return served

    def __len__(self) -> int:
        return len(self._models)
