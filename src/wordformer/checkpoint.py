"""Checkpoints in two formats, both read without running code: Lightning's ``.ckpt`` and ``.safetensors``.

A wordformer checkpoint is a Lightning checkpoint with one extra entry, ``"wordformer"``: the format
version, the three configs and the tokenizer as plain JSON-like data. The checkpoint alone is enough
to rebuild the model and tokenizer and generate. Reading uses ``torch.load(weights_only=True)``, which
refuses any pickled object other than tensors and plain containers. Writing goes through
:func:`wordformer.files.atomic_torch_save` (temporary file, fsync, rename).

A safetensors export (:func:`export_checkpoint`, ``wordformer export``) is a JSON header and raw tensor
bytes, so loading it cannot execute anything even in principle. Its tensors are the model's ``state_dict``
(no ``model.`` prefix); its header metadata holds ``{"wordformer": json.dumps(entry)}``, ``entry`` being the
same block a ``.ckpt`` stores under ``checkpoint["wordformer"]``. Tied weights (output layer = token
embedding) are stored once, because safetensors refuses tensors that share memory, and re-tied on load.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .config import DataConfig, ModelConfig, TrainConfig, from_dict
from .errors import WordformerError
from .files import file_in_the_way, save_bytes
from .model import WordPredictor
from .tokenizers import Tokenizer, tokenizer_from_dict

FORMAT_VERSION = 1
KEY = "wordformer"  # the checkpoint entry (and safetensors metadata key) holding configs and tokenizer
SAFETENSORS = ".safetensors"  # load_checkpoint chooses the reader by this suffix
TIED_KEY = "output_layer.weight"  # left out of exports when tied: it is the token embedding itself
EMBEDDING_KEY = "token_embedding.weight"
PathLike = Union[str, os.PathLike]


def load_error_reason(message: str, limit: int = 200) -> str:
    """The informative part of torch's (long, multi-line) load error, on one line, in whole sentences.

    Sentences are kept while they fit in ``limit`` characters (the first one always, visibly cut with
    "..." only when it alone runs far past the limit), so a quote never stops silently mid-sentence;
    torch's "Could this error message be improved?" aside is dropped.
    """
    match = re.search(r"WeightsUnpickler error:(.*?)(Check the documentation|$)", message, re.S)
    text = match.group(1) if match else message
    text = re.sub(r"\(Could this error message be improved\?.*?\)", "", text, flags=re.S)
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    kept = sentences[0]
    for sentence in sentences[1:]:
        if len(kept) + 1 + len(sentence) > limit:
            break
        kept += " " + sentence
    if len(kept) > 2 * limit:  # one run-on sentence: cut at a word and say so
        kept = kept[:limit].rsplit(" ", 1)[0] + " ..."
    if not re.search(r"[A-Za-z]", kept):  # torch says only a number (a bad magic number) for foreign files
        return "not a file that torch.save wrote"
    return kept if kept.endswith(" ...") else kept.rstrip(".")  # the sentence's full stop, never the cut mark


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    """Load a checkpoint file as plain data, refusing anything that would run code when unpickled."""
    path = Path(path)
    if not path.exists():
        raise WordformerError(f"checkpoint {path} does not exist; train one with `wordformer train --out DIR`")
    if path.is_dir():
        hint = " (did you mean DIR/best.ckpt?)" if (path / "best.ckpt").exists() else ""
        raise WordformerError(f"checkpoint {path} is a folder, not a file{hint}")
    if not os.access(path, os.R_OK):
        raise WordformerError(f"checkpoint {path} cannot be read (permission denied)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        if "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            detail = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln), first)
            raise WordformerError(
                f"refusing to load {path}: it contains pickled objects that could run code ({detail}); "
                "only load checkpoints from sources you trust, converted with `wordformer export`"
            ) from None
        raise WordformerError(f"{path} is not a readable checkpoint ({load_error_reason(str(exc))}); it may be "
                              "truncated or another kind of file") from None
    except Exception as exc:  # the weights-only unpickler fails in many ways on foreign bytes (IndexError, KeyError...)
        raise WordformerError(f"{path} is not a readable checkpoint ({load_error_reason(str(exc) or 'unreadable')}); "
                              "it may be truncated or another kind of file") from None


@dataclass
class LoadedModel:
    """A model with everything needed to use it: tokenizer, configs and training metadata.

    The tokenizer learns from the data config whether the model was trained on prompt/answer pairs
    (``tokenizer.pairs``), so ``generate(loaded.model, loaded.tokenizer, ...)``, ``loaded.generate(...)`` and
    ``wordformer generate`` all end a pairs model's prompt with ``<eos>`` unless told otherwise. ``tokenizer`` is
    None only for GPT-2 loaded ``with_tokenizer=False``; text methods then say to pass token ids.
    """

    model: WordPredictor
    tokenizer: Tokenizer
    model_config: ModelConfig
    data_config: DataConfig
    train_config: TrainConfig
    path: Optional[Path] = None
    info: dict[str, Any] = field(default_factory=dict)  # step, metrics recorded at save time

    def __post_init__(self) -> None:
        if self.tokenizer is not None:
            self.tokenizer.pairs = self.pairs

    @property
    def pairs(self) -> bool:
        """Trained on prompt/answer pairs: prompts then get <eos> appended before generation."""
        return bool(self.data_config.pairs)

    def generate(self, prompt: Union[str, list[int]], **kwargs: Any) -> str:
        """:func:`wordformer.generation.generate` with this model and tokenizer (``echo=True``: the CLI's line)."""
        from .generation import generate

        return generate(self.model, self.tokenizer, prompt, **kwargs)

    def predict_next(self, prompt: str, k: int = 5, **kwargs: Any) -> list[tuple[str, float]]:
        """:func:`wordformer.generation.predict_next` with this model and tokenizer."""
        from .generation import predict_next

        return predict_next(self.model, self.tokenizer, prompt, k, **kwargs)


def wordformer_entry(model_config: ModelConfig, data_config: DataConfig, train_config: TrainConfig,
                     tokenizer: Tokenizer, **info: Any) -> dict[str, Any]:
    """The plain-data block stored under ``checkpoint["wordformer"]``."""
    return {
        "format_version": FORMAT_VERSION,
        "model_config": asdict(model_config),
        "data_config": asdict(data_config),
        "train_config": asdict(train_config),
        "tokenizer": tokenizer.to_dict(),
        "info": info,
    }


def parse_entry(raw: dict[str, Any], path: PathLike) -> tuple[ModelConfig, DataConfig, TrainConfig, Tokenizer, dict]:
    entry = raw.get(KEY) if isinstance(raw, dict) else None
    if not isinstance(entry, dict):
        hint = ""
        if isinstance(raw, dict) and "hyper_parameters" in raw and "state_dict" in raw:
            hint = "; tutorial-6 checkpoints are evaluated with `wordformer task reverse|anomaly test --checkpoint PATH`"
        raise WordformerError(f"{path} is not a wordformer checkpoint (no '{KEY}' entry){hint}")
    version = entry.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WordformerError(
            f"{path} has checkpoint format version {version!r}, newer than this wordformer reads ({FORMAT_VERSION}); "
            "upgrade wordformer"
        )
    try:
        model_config = from_dict(ModelConfig, entry["model_config"], where=str(path))
        data_config = from_dict(DataConfig, entry["data_config"], where=str(path))
        train_config = from_dict(TrainConfig, entry["train_config"], where=str(path))
        tokenizer = tokenizer_from_dict(entry["tokenizer"])
    except KeyError as exc:
        raise WordformerError(f"{path} is a damaged wordformer checkpoint (missing {exc})") from None
    return model_config, data_config, train_config, tokenizer, dict(entry.get("info") or {})


def model_state_dict(raw: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's own tensors: Lightning prefixes them with ``model.``."""
    state = raw.get("state_dict", {}) if isinstance(raw, dict) else {}
    prefix = "model."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_checkpoint(path: PathLike, *, map_location: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Rebuild model and tokenizer from a checkpoint written by ``wordformer train`` (or ``export``)."""
    path = Path(path)
    if path.suffix == SAFETENSORS:
        return load_safetensors(path, map_location=map_location)
    raw = read_checkpoint(path)
    return build_loaded(path, raw, model_state_dict(raw), map_location=map_location)


def build_loaded(path: Path, raw: dict[str, Any], state: dict[str, torch.Tensor], *,
                 map_location: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Model, tokenizer and configs from a ``{"wordformer": entry}`` block and the model's tensors."""
    model_config, data_config, train_config, tokenizer, info = parse_entry(raw, path)
    if tokenizer.vocab_size != model_config.vocab_size:
        raise WordformerError(
            f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model expects {model_config.vocab_size}; "
            "the file is inconsistent"
        )
    model = WordPredictor(model_config)
    if model_config.tie_weights and TIED_KEY not in state and EMBEDDING_KEY in state:
        state = {**state, TIED_KEY: state[EMBEDDING_KEY]}  # stored once, shared
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WordformerError(f"{path}: the weights do not match the stored architecture ({first})") from None
    model.to(map_location).eval()
    return LoadedModel(model, tokenizer, model_config, data_config, train_config, path, info)


# ---------------------------------------------------------------------------------------- safetensors


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

    entry = wordformer_entry(loaded.model_config, loaded.data_config, loaded.train_config, loaded.tokenizer,
                             **dict(loaded.info))
    try:
        metadata = json.dumps(entry, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise WordformerError(f"the checkpoint's metadata cannot be written as JSON ({exc})") from None
    return save(_tensors(loaded.model), metadata={KEY: metadata, "format": "pt"})


def _check_target(to: Path, *, overwrite: bool) -> None:
    """Refuse a target that would lose data or that ``load_checkpoint`` would not recognise."""
    if to.suffix != SAFETENSORS:
        raise WordformerError(f"--to {to} must end in {SAFETENSORS} (load_checkpoint picks the reader by suffix)")
    if to.is_dir():
        raise WordformerError(f"--to {to} is a folder; give a file name such as {to / ('model' + SAFETENSORS)}")
    if to.exists() and not overwrite:
        raise WordformerError(f"{to} already exists; choose another --to or pass --overwrite to replace it")
    blocker = file_in_the_way(to.parent)
    if blocker is not None:  # checked before the slow read; mkdir alone would only say "File exists"
        raise WordformerError(f"cannot write --to {to}: {blocker} is a file, not a folder; choose another --to")


def save_safetensors(loaded: LoadedModel, to: PathLike, *, overwrite: bool = False) -> Path:
    """Write ``loaded`` to ``to`` atomically: a crash or a full disk leaves any earlier file intact."""
    to = Path(to)
    _check_target(to, overwrite=overwrite)
    return save_bytes(safetensors_bytes(loaded), to, advice="choose another --to")


def export_checkpoint(checkpoint: PathLike, to: PathLike, *, overwrite: bool = False) -> Path:
    """Convert a training checkpoint (read with ``weights_only=True``) into a safetensors file."""
    to = Path(to)
    _check_target(to, overwrite=overwrite)  # before the (possibly slow) read: fail fast
    return save_safetensors(load_checkpoint(checkpoint, map_location="cpu"), to, overwrite=overwrite)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
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
    path = Path(path)
    tensors, metadata = _read_safetensors(path)
    raw_entry = metadata.get(KEY)
    if raw_entry is None:
        raise WordformerError(f"{path} is a safetensors file but not a wordformer export (no '{KEY}' "
                              "metadata); write one with `wordformer export`")
    try:
        entry = json.loads(raw_entry)
    except json.JSONDecodeError as exc:
        raise WordformerError(f"{path}: the '{KEY}' metadata is not valid JSON ({exc.msg})") from None
    return build_loaded(path, {KEY: entry}, tensors, map_location=map_location)
