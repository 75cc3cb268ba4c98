"""Checkpoints: written atomically, read without running pickled code.

A wordformer checkpoint is a Lightning checkpoint with one extra entry, ``"wordformer"``: the format
version, the three configs and the tokenizer as plain JSON-like data. The checkpoint alone is enough
to rebuild the model and tokenizer and generate. Reading uses ``torch.load(weights_only=True)``, which
refuses any pickled object other than tensors and plain containers.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .config import DataConfig, ModelConfig, TrainConfig, from_dict
from .errors import WordformerError
from .model import WordPredictor
from .tokenizers import Tokenizer, tokenizer_from_dict

FORMAT_VERSION = 1
KEY = "wordformer"
PathLike = Union[str, os.PathLike]


def _file_mode(path: Path) -> int:
    """An existing file's permissions, else what ``open()`` would give a new file (0o666 minus the umask)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_bytes(data: bytes, path: PathLike) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one, never half.

    The bytes go to a temporary file in the same folder, are flushed to disk (fsync), and the file is
    renamed over the target; a failure (full disk, kill) removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # mkstemp makes 0600 files
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        atomic_write_bytes(buffer.getvalue(), path)
    except OSError as exc:
        raise WordformerError(f"could not write checkpoint {path}: {exc.strerror or exc}; free disk space or choose another --out") from None


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
    return kept.rstrip(".")


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
    """A model with everything needed to use it: tokenizer, configs and training metadata."""

    model: WordPredictor
    tokenizer: Tokenizer
    model_config: ModelConfig
    data_config: DataConfig
    train_config: TrainConfig
    path: Optional[Path] = None
    info: dict[str, Any] = field(default_factory=dict)  # step, metrics recorded at save time

    @property
    def pairs(self) -> bool:
        """Trained on prompt/answer pairs: prompts then get <eos> appended before generation."""
        return bool(self.data_config.pairs)

    def generate(self, prompt: str, **kwargs: Any) -> str:
        from .generate import generate

        kwargs.setdefault("append_eos", self.pairs)
        return generate(self.model, self.tokenizer, prompt, **kwargs)

    def predict_next(self, prompt: str, k: int = 5, **kwargs: Any) -> list[tuple[str, float]]:
        from .generate import predict_next

        kwargs.setdefault("append_eos", self.pairs)
        return predict_next(self.model, self.tokenizer, prompt, k, **kwargs)


def wordformer_entry(model_config: ModelConfig, data_config: DataConfig, train_config: TrainConfig,
                     tokenizer: Tokenizer, **info: Any) -> dict[str, Any]:
    """The plain-data block stored under ``checkpoint["wordformer"]``."""
    from dataclasses import asdict

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
    if path.suffix == ".safetensors":
        from .export import load_safetensors

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
    if model_config.tie_weights and "output_layer.weight" not in state and "token_embedding.weight" in state:
        state = {**state, "output_layer.weight": state["token_embedding.weight"]}  # stored once, shared
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WordformerError(f"{path}: the weights do not match the stored architecture ({first})") from None
    model.to(map_location).eval()
    return LoadedModel(model, tokenizer, model_config, data_config, train_config, path, info)
