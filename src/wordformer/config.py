"""Configuration dataclasses: every architectural, data and training choice in one typed place.

Each dataclass validates itself in ``__post_init__`` and names the offending field and value, so a bad
combination fails before any tensor is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from .errors import WordformerError, check_choice, check_int, check_number

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "relu2", "swiglu")
NORMS = ("pre", "post", "none")
NORM_TYPES = ("layernorm", "rmsnorm")
POSITIONALS = ("sinusoidal", "learned", "rope")
OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")
TOKENIZERS = ("word", "char", "bpe")
EOS_MODES = ("auto", "line", "document", "none")
SAMPLINGS = ("random", "epoch")
ENCODING_ERRORS = ("strict", "replace")


STRATEGIES = ("auto", "ddp", "fsdp")  # Lightning's strategies (README: "Large corpora and many machines")
MIN_BPE_VOCAB = 256 + 2  # the BPE tokenizer's floor: every byte plus <pad> and <eos>


def check_encoding(name: Any) -> str:
    """A text encoding Python can decode with, else one line naming some that work."""
    try:
        if not isinstance(name, str):
            raise LookupError
        "".encode(name)  # refuses unknown names and codecs that are not text encodings (base64, rot13)
    except LookupError:
        raise WordformerError(f"encoding={name!r} is not a text encoding Python knows; use e.g. utf-8, latin-1 "
                              "or cp1252") from None
    return name


def _check_positive(obj: Any, *names: str) -> None:
    for name in names:
        check_int(name, getattr(obj, name))


@dataclass
class ModelConfig:
    """The decoder-only transformer: every architectural choice of the chapter."""

    # vocabulary and context
    vocab_size: int = 256  # one embedding input per token (set from the tokenizer when training)
    block_size: int = 64  # longest context the model sees; learned positions cannot go beyond it
    # widths and depth
    d_model: int = 128  # embedding size; the chapter's toy example uses 2
    num_heads: int = 4  # attention heads; must divide d_model
    num_layers: int = 4  # decoder blocks
    ff_mult: int = 4  # feed-forward hidden size = ff_mult * d_model
    # choices the chapter and its sources differ on
    positional: str = "sinusoidal"  # "sinusoidal" (Vaswani / uvadlc), "learned" (GPT-2) or "rope" (rotated queries and keys)
    norm: str = "pre"  # "pre" (GPT-2), "post" (uvadlc, the original transformer) or "none" (the chapter's toy)
    activation: str = "gelu"  # "gelu" (exact), "gelu_tanh" (GPT-2's), "relu" (uvadlc), "relu2" (squared ReLU) or "swiglu" (gated)
    tie_weights: bool = True  # output layer = token embedding run backwards (the chapter's note)
    bias: bool = True  # biases in linear layers and layer norms
    dropout: float = 0.0  # dropout after embedding, attention and feed-forward; in [0, 1)
    layer_norm_eps: float = 1e-5  # epsilon of every norm (layer norm, RMS norm, qk_norm)
    # --- the recipe options (issue 15); their defaults keep the chapter's model unchanged
    rope_base: float = 10000.0  # positional=rope: the angle of pair i turns by position / rope_base^(2i/head_size)
    norm_type: str = "layernorm"  # "layernorm" (mean and variance) or "rmsnorm" (root mean square only, no bias)
    qk_norm: bool = False  # RMS-normalise each head's queries and keys before their dot products
    attn_scale: Optional[float] = None  # factor on q . k (default 1/sqrt(head_size), the chapter's scaling)
    zero_init_residual: bool = False  # start the projections into the residual stream (attention out, feed-forward down) at zero
    zero_init_output: bool = False  # start the (untied) output layer at zero: every first prediction is uniform
    logit_softcap: float = 0.0  # > 0: logits = cap * tanh(logits / cap), bounded to (-cap, cap); 0 turns it off

    def __post_init__(self) -> None:
        _check_positive(self, "vocab_size", "block_size", "d_model", "num_heads", "num_layers", "ff_mult")
        if self.d_model % self.num_heads:
            raise WordformerError(
                f"num_heads={self.num_heads} must divide d_model={self.d_model}: "
                f"choose num_heads from {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0][:8]}"
            )
        check_choice("positional", self.positional, POSITIONALS)
        check_choice("norm", self.norm, NORMS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_number("dropout", self.dropout, 0.0, 1.0)
        check_number("layer_norm_eps", self.layer_norm_eps, 0.0, 1.0, low_open=True)
        for name in ("tie_weights", "bias", "qk_norm", "zero_init_residual", "zero_init_output"):
            if not isinstance(getattr(self, name), bool):
                raise WordformerError(f"{name}={getattr(self, name)!r} must be true or false")
        check_choice("norm_type", self.norm_type, NORM_TYPES)
        check_number("rope_base", self.rope_base, 1.0, 1e12, low_open=True)
        if self.positional == "rope" and self.head_size % 2:
            raise WordformerError(f"positional='rope' rotates pairs of numbers, so the head size must be even; "
                                  f"d_model={self.d_model} / num_heads={self.num_heads} = {self.head_size}")
        if self.attn_scale is not None:
            check_number("attn_scale", self.attn_scale, 0.0, 1e6, low_open=True)
        check_number("logit_softcap", self.logit_softcap, 0.0, 1e6)
        if self.zero_init_output and self.tie_weights:
            raise WordformerError("zero_init_output=True needs tie_weights=False: a tied output layer is the token "
                                  "embedding, which must not start at zero")

    @property
    def head_size(self) -> int:
        return self.d_model // self.num_heads


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes token ids (``data=None``: the built-in corpus;
    ``cache_dir=None``: $WORDFORMER_CACHE, else ~/.cache/wordformer)."""

    data: Optional[str] = None  # a .txt file or a folder of .txt files
    pairs: bool = False  # data is "prompt<TAB>answer" lines, trained as "prompt <eos> answer <eos>"
    tokenizer: str = "word"  # "word", "char" or "bpe"
    lowercase: bool = True  # word tokenizer: fold case
    min_freq: int = 1  # word tokenizer: rarer words become <unk>
    max_vocab: Optional[int] = None  # word tokenizer: keep only the most frequent words
    bpe_vocab_size: int = 2000  # bpe tokenizer: target vocabulary size
    eos: str = "auto"  # where <eos> goes in plain text: "line", "document", "none"; auto = line for word
    val_fraction: float = 0.1  # the tail of the token stream held out for validation
    sampling: str = "random"  # "random" windows (nanoGPT) or "epoch": each window once per epoch, shuffled
    cache_dir: Optional[str] = None  # where tokenized corpora are kept
    encoding: str = "utf-8"  # the text files' encoding, e.g. latin-1 or cp1252 (any name Python's codecs know)
    encoding_errors: str = "strict"  # "strict" refuses bytes the encoding cannot decode; "replace" makes them U+FFFD
    workers: Optional[int] = None  # processes that tokenize a corpus in parallel (BPE: the tokenizers library's threads)

    def __post_init__(self) -> None:
        check_choice("tokenizer", self.tokenizer, TOKENIZERS)
        if self.workers is not None:
            check_int("workers", self.workers, 1)
        check_choice("eos", self.eos, EOS_MODES)
        _check_positive(self, "min_freq", "bpe_vocab_size")
        if self.tokenizer == "bpe" and self.bpe_vocab_size < MIN_BPE_VOCAB:  # the BPE trainer's floor, said up front
            raise WordformerError(f"bpe_vocab_size={self.bpe_vocab_size} is below {MIN_BPE_VOCAB} (256 bytes + <pad> + "
                                  "<eos>); raise it")
        if self.max_vocab is not None:
            _check_positive(self, "max_vocab")
        check_number("val_fraction", self.val_fraction, 0.0, 0.5, low_open=True, high_open=False)
        check_encoding(self.encoding)
        check_choice("encoding_errors", self.encoding_errors, ENCODING_ERRORS)
        check_choice("sampling", self.sampling, SAMPLINGS)

    def eos_mode(self) -> str:
        """Resolve "auto": word-level text ends each line with <eos>, char and BPE only each document."""
        if self.eos != "auto":
            return self.eos
        return "line" if self.tokenizer == "word" else "document"


@dataclass
class TrainConfig:
    """Optimiser, schedule and Trainer settings."""

    max_steps: int = 2000  # optimiser steps to train
    batch_size: int = 12  # sequences per batch
    lr: float = 1e-3  # peak learning rate after warm-up
    min_lr: float = 1e-4  # floor of the cosine decay
    warmup_steps: int = 100  # linear warm-up, then cosine decay, stepped per batch
    weight_decay: float = 0.1  # applied to weight matrices only
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.99  # AdamW beta2
    grad_clip: float = 1.0  # 0 turns clipping off
    grad_accum: int = 1  # batches per optimiser step
    seed: int = 1337  # seeds weights, batches and sampling
    deterministic: bool = False  # ask PyTorch for deterministic kernels
    precision: str = "auto"  # "auto" (bf16-mixed on capable GPUs, else 32-true) or any Lightning precision: "32-true", "bf16-mixed" (also fast on CPUs with AVX512-BF16/AMX), "16-mixed"
    accelerator: str = "auto"  # "auto" picks cuda, then mps, then cpu
    devices: str = "auto"  # number of devices, or "auto"
    num_nodes: int = 1  # machines; start the same command on each (README: "Large corpora and many machines")
    strategy: str = "auto"  # Lightning's strategy: "auto", "ddp" (a copy of the model per process) or "fsdp" (sharded; CUDA GPUs)
    eval_interval: int = 250  # validate every this many steps
    eval_batches: int = 20  # batches per validation
    log_every: int = 10  # steps between logged training metrics
    max_time: Optional[float] = None  # stop after this many seconds, whatever max_steps says
    compile: bool = False  # torch.compile the model
    progress: bool = True  # show a progress bar
    # --- the recipe options (issue 15); their defaults keep today's AdamW and cosine schedule
    schedule: str = "cosine"  # "cosine" (warm-up, cosine decay) or "wsd" (warm-up, stable, linear decay at the end)
    cooldown_fraction: float = 0.2  # schedule=wsd: the last fraction of max_steps decays linearly to min_lr
    optimizer: str = "adamw"  # "adamw", or "muon": Muon for the blocks' weight matrices, AdamW (lr) for the rest
    muon_lr: float = 0.02  # optimizer=muon: peak learning rate of the Muon matrices (scheduled like lr)
    muon_momentum: float = 0.95  # optimizer=muon: Muon's (Nesterov) momentum after its warm-up
    muon_momentum_start: float = 0.85  # optimizer=muon: momentum at step 0, rising linearly to muon_momentum
    muon_momentum_warmup: int = 300  # optimizer=muon: steps of that momentum warm-up (0: none)
    muon_weight_decay: float = 0.0  # optimizer=muon: torch.optim.Muon's decoupled decay, w <- w - lr_t * wd * w
    muon_split_qkv: bool = True  # optimizer=muon: orthogonalise the query, key and value matrices separately

    def __post_init__(self) -> None:
        _check_positive(self, "max_steps", "batch_size", "grad_accum", "eval_interval", "eval_batches", "log_every",
                        "num_nodes")
        check_choice("strategy", self.strategy, STRATEGIES)
        check_number("lr", self.lr, 0.0, 10.0, low_open=True)
        check_number("min_lr", self.min_lr, 0.0, 10.0)
        if self.min_lr > self.lr:
            raise WordformerError(f"min_lr={self.min_lr} must not exceed lr={self.lr}")
        check_int("warmup_steps", self.warmup_steps, 0)
        check_number("weight_decay", self.weight_decay, 0.0, 10.0)
        check_number("beta1", self.beta1, 0.0, 1.0)
        check_number("beta2", self.beta2, 0.0, 1.0)
        check_number("grad_clip", self.grad_clip, 0.0, 1e9)
        if self.max_time is not None:
            check_number("max_time", self.max_time, 0.0, 1e12, low_open=True)
        check_int("seed", self.seed, 0, 2**32 - 1)
        if self.devices != "auto" and not (str(self.devices).isdigit() and int(self.devices) >= 1):
            raise WordformerError(f"devices={self.devices!r} must be 'auto' or an integer >= 1")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_number("cooldown_fraction", self.cooldown_fraction, 0.0, 1.0, low_open=True, high_open=False)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_number("muon_lr", self.muon_lr, 0.0, 10.0, low_open=True)
        check_number("muon_momentum", self.muon_momentum, 0.0, 1.0)
        check_number("muon_momentum_start", self.muon_momentum_start, 0.0, 1.0)
        check_int("muon_momentum_warmup", self.muon_momentum_warmup, 0)
        check_number("muon_weight_decay", self.muon_weight_decay, 0.0, 10.0)
        if not isinstance(self.muon_split_qkv, bool):
            raise WordformerError(f"muon_split_qkv={self.muon_split_qkv!r} must be true or false")


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def from_dict(cls: type, values: dict[str, Any], *, where: str = "") -> Any:
    """Build ``cls`` from a dict, refusing unknown keys with a message that names them."""
    known = set(field_names(cls))
    unknown = sorted(set(values) - known)
    if unknown:
        loc = f" in {where}" if where else ""
        raise WordformerError(f"unknown option(s){loc}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except TypeError as exc:  # pragma: no cover - dataclass signature mismatch
        raise WordformerError(str(exc)) from None


def field_help(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field in the class source: one place documents each option."""
    import inspect
    import re

    helps: dict[str, str] = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+):\s*[^=]+=\s*[^#]+#\s*(.+)$", line)
        if match:
            helps[match.group(1)] = match.group(2).strip()
    return helps


def field_type(cls: type, name: str) -> type:
    """The scalar type of a field (``Optional[int]`` -> int), from its annotation string."""
    annotation = str({f.name: f.type for f in fields(cls)}[name])
    for scalar in (bool, int, float, str):
        if scalar.__name__ in annotation:
            return scalar
    return str


def field_optional(cls: type, name: str) -> bool:
    """Whether a field may hold None (``Optional[float]``: ``attn_scale``, ``max_time``, ...)."""
    annotation = str({f.name: f.type for f in fields(cls)}[name])
    return "Optional" in annotation or "None" in annotation


def coerce(cls: type, values: dict[str, Any], *, where: str) -> dict[str, Any]:
    """Convert YAML values to the field types, naming the key of any value that does not fit.

    YAML 1.1 reads ``1e-3`` as a string; numbers given as strings are converted, anything else of the
    wrong type is refused here rather than deep inside training.
    """
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in field_names(cls):
            out[name] = value  # from_dict names unknown keys
            continue
        kind = field_type(cls, name)
        optional = "Optional" in str({f.name: f.type for f in fields(cls)}[name]) or "None" in str(
            {f.name: f.type for f in fields(cls)}[name]
        )
        if value is None and optional:
            out[name] = None
            continue
        try:
            if kind is bool:
                if not isinstance(value, bool):
                    raise ValueError
                out[name] = value
            elif kind is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                out[name] = int(value)
            elif kind is float:
                if isinstance(value, bool):
                    raise ValueError
                out[name] = float(value)
            else:
                if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                    raise ValueError
                out[name] = str(value)
        except (TypeError, ValueError):
            raise WordformerError(f"{name}: {value!r} in {where} is not a valid {kind.__name__}") from None
    return out


PATH_FIELDS = ("data", "cache_dir")  # relative paths in a config file are read from the file's own folder


def read_config_file(path: str) -> dict[str, Any]:
    """Read a YAML config: flat keys (field names) or sections ``model:``, ``data:``, ``train:``.

    Relative paths (``data``, ``cache_dir``) are taken from the file's folder, so a config and its corpus can
    move together and the config works from any working folder.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise WordformerError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WordformerError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise WordformerError(f"config file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise WordformerError(f"config file {path} must hold a mapping of option: value, not {type(raw).__name__}")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[str(sub).replace("-", "_")] = subvalue
        else:
            flat[str(key).replace("-", "_")] = value
    for name in PATH_FIELDS:
        value = flat.get(name)
        if isinstance(value, str) and value.strip():
            flat[name] = str(Path(path).parent / Path(value).expanduser())  # an absolute value stays as it is
    return flat


def build_configs(values: dict[str, Any], *, where: str = "options") -> tuple[ModelConfig, DataConfig, TrainConfig]:
    """Split flat ``{field: value}`` options among the three configs and validate them."""
    owner = {name: section for section, cls in SECTIONS.items() for name in field_names(cls)}
    unknown = sorted(k for k in values if k not in owner)
    if unknown:
        raise WordformerError(f"unknown option(s) in {where}: {', '.join(unknown)}")
    parts: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, value in values.items():
        parts[owner[key]][key] = value
    built = [from_dict(cls, coerce(cls, parts[section], where=where), where=where) for section, cls in SECTIONS.items()]
    return built[0], built[1], built[2]
