"""GPT-2 in wordformer: the decoder configured as GPT-2, and weights in and out of HuggingFace and nanoGPT.

GPT-2 is the chapter's decoder with four choices fixed: learned positions, pre-norm (plus a final layer
norm), GELU in the tanh approximation, and an output layer tied to the token embedding; every linear
layer and layer norm has a bias. Only the parameter names and one memory layout differ, so a GPT-2
checkpoint is a renaming away from a :class:`~wordformer.model.WordPredictor`.

Loading the real GPT-2 weights (needs ``pip install transformers`` and internet, once)
---------------------------------------------------------------------------------------
::

    from wordformer.gpt2 import load_pretrained_gpt2

    m = load_pretrained_gpt2("gpt2")  # or "gpt2-medium", "gpt2-large", "gpt2-xl", or a local folder
    print(m.generate("The transformer is", max_new_tokens=20, temperature=0))
    print(m.predict_next("The capital of France is", k=5))

HuggingFace downloads the weights and tokenizer into its cache (``~/.cache/huggingface``), so later
calls work offline too (set ``HF_HUB_OFFLINE=1`` to be sure nothing is fetched). A folder written by
``GPT2LMHeadModel.save_pretrained(DIR)`` (plus ``GPT2TokenizerFast.save_pretrained(DIR)`` for the
tokenizer) loads the same way: ``load_pretrained_gpt2(DIR)``. Without tokenizer files pass
``with_tokenizer=False``; ``m.tokenizer`` is then None and you feed token ids to
:func:`wordformer.generation.generate_ids` yourself. The GPT-2 tokenizer has no ``<pad>`` or ``<eos>``:
``<|endoftext|>`` (id 50256) plays both parts, and the literal text ``<eos>`` is ordinary text to it.

Other conversions: :func:`from_hf_model`, :func:`from_hf_state_dict` / :func:`to_hf_state_dict`
(:func:`to_hf_model` builds the ``GPT2LMHeadModel``), :func:`from_nanogpt_checkpoint` /
:func:`to_nanogpt_checkpoint` (nanoGPT's ``ckpt.pt``).

Parameter names
---------------
HuggingFace prefixes everything but ``lm_head`` with ``transformer.``; nanoGPT uses the same names.

==========================  ==================================  =========================================
GPT-2                       wordformer                          shape: HF Conv1D | ours and nanoGPT
==========================  ==================================  =========================================
wte.weight                  token_embedding.weight              (V, C) | (V, C)
wpe.weight                  positional_encoding.table.weight    (T, C) | (T, C)
h.N.ln_1.{weight,bias}      blocks[N].norm1.{weight,bias}       (C,) | (C,)
h.N.attn.c_attn.weight      blocks[N].attention.qkv.weight      (C, 3C) | (3C, C)   transposed
h.N.attn.c_attn.bias        blocks[N].attention.qkv.bias        (3C,) | (3C,)
h.N.attn.c_proj.weight      blocks[N].attention.out.weight      (C, C) | (C, C)     transposed
h.N.attn.c_proj.bias        blocks[N].attention.out.bias        (C,) | (C,)
h.N.ln_2.{weight,bias}      blocks[N].norm2.{weight,bias}       (C,) | (C,)
h.N.mlp.c_fc.weight         blocks[N].feed_forward.up.weight    (C, 4C) | (4C, C)   transposed
h.N.mlp.c_fc.bias           blocks[N].feed_forward.up.bias      (4C,) | (4C,)
h.N.mlp.c_proj.weight       blocks[N].feed_forward.down.weight  (4C, C) | (C, 4C)   transposed
h.N.mlp.c_proj.bias         blocks[N].feed_forward.down.bias    (C,) | (C,)
ln_f.{weight,bias}          final_norm.{weight,bias}            (C,) | (C,)
lm_head.weight              output_layer.weight                 (V, C); the same tensor as wte when tied
h.N.attn.{bias,masked_bias} (none)                              causal-mask buffers of older versions: skipped
==========================  ==================================  =========================================

HuggingFace's ``Conv1D`` computes ``x @ W + b`` with ``W`` of shape (in, out); ``nn.Linear`` (ours and
nanoGPT's) computes ``x @ W.T + b`` with ``W`` of shape (out, in). Only those four weights per block are
transposed; the query/key/value split (q, k, v along the output, heads contiguous) is the same.

Activations: HuggingFace GPT-2 uses ``gelu_new`` (the tanh approximation, ``activation="gelu_tanh"``
here); nanoGPT uses the exact ``nn.GELU()``, also for weights it imports from GPT-2. Each import here
reproduces its source's forward pass exactly.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor

from .config import ACTIVATIONS, DataConfig, ModelConfig, TrainConfig
from .errors import WordformerError
from .model import WordPredictor
from .tokenizers import BPETokenizer

logger = logging.getLogger(__name__)

__all__ = [
    "GPT2_PRESETS",
    "GPT2BPETokenizer",
    "check_gpt2_exportable",
    "from_hf_model",
    "from_hf_state_dict",
    "from_nanogpt_checkpoint",
    "gpt2_config",
    "gpt2_preset",
    "hf_config_dict",
    "load_gpt2_tokenizer",
    "load_pretrained_gpt2",
    "to_hf_config",
    "to_hf_model",
    "to_hf_state_dict",
    "to_nanogpt_checkpoint",
    "with_learned_positions",
]

ENDOFTEXT = "<|endoftext|>"
GPT2_VOCAB_SIZE = 50257  # 50,000 merges + 256 bytes + <|endoftext|>
GPT2_HEAD_SIZE = 64  # all four released sizes; used to guess heads, which no weight shape reveals

# The four released sizes (Radford et al. 2019); all have 1024 positions and the 50257-token vocabulary.
GPT2_PRESETS: dict[str, dict[str, int]] = {
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768},  # 124M parameters
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024},  # 350M
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280},  # 774M
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600},  # 1558M
}

# Per block: (GPT-2 name under h.N., wordformer name under blocks.N., stored transposed by HF Conv1D)
BLOCK_NAMES: tuple[tuple[str, str, bool], ...] = (
    ("ln_1.weight", "norm1.weight", False),
    ("ln_1.bias", "norm1.bias", False),
    ("attn.c_attn.weight", "attention.qkv.weight", True),
    ("attn.c_attn.bias", "attention.qkv.bias", False),
    ("attn.c_proj.weight", "attention.out.weight", True),
    ("attn.c_proj.bias", "attention.out.bias", False),
    ("ln_2.weight", "norm2.weight", False),
    ("ln_2.bias", "norm2.bias", False),
    ("mlp.c_fc.weight", "feed_forward.up.weight", True),
    ("mlp.c_fc.bias", "feed_forward.up.bias", False),
    ("mlp.c_proj.weight", "feed_forward.down.weight", True),
    ("mlp.c_proj.bias", "feed_forward.down.bias", False),
)
# Outside the blocks: (GPT-2 name under transformer., wordformer name)
TOP_NAMES: tuple[tuple[str, str], ...] = (
    ("wte.weight", "token_embedding.weight"),
    ("wpe.weight", "positional_encoding.table.weight"),
    ("ln_f.weight", "final_norm.weight"),
    ("ln_f.bias", "final_norm.bias"),
)
HEAD_NAME = ("lm_head.weight", "output_layer.weight")

# HuggingFace ``activation_function`` <-> wordformer activation ("gelu_tanh": see the module notes)
HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
TO_HF_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DistributedDataParallel

StateDict = Mapping[str, Tensor]


# --------------------------------------------------------------------------------------------------- configs


def gpt2_config(
    n_layer: int = 12,
    n_head: int = 12,
    n_embd: int = 768,
    n_positions: int = 1024,
    vocab_size: int = GPT2_VOCAB_SIZE,
    *,
    n_inner: Optional[int] = None,
    dropout: float = 0.0,
    layer_norm_eps: float = 1e-5,
) -> ModelConfig:
    """A :class:`ModelConfig` with GPT-2's architecture, under GPT-2's own size names.

    ``dropout`` is 0 for inference; GPT-2 trained with 0.1.
    """
    hidden = 4 * n_embd if n_inner is None else n_inner
    if isinstance(n_embd, int) and n_embd > 0 and hidden % n_embd:
        raise WordformerError(f"n_inner={n_inner} must be a multiple of n_embd={n_embd} (wordformer's ff_mult)")
    return ModelConfig(
        vocab_size=vocab_size, block_size=n_positions, d_model=n_embd, num_heads=n_head, num_layers=n_layer,
        ff_mult=hidden // n_embd if isinstance(n_embd, int) and n_embd > 0 else 4,
        positional="learned", norm="pre", activation="gelu_tanh", tie_weights=True,
        bias=True, dropout=dropout, layer_norm_eps=layer_norm_eps,
    )


def gpt2_preset(name: str, **overrides: Any) -> ModelConfig:
    """The config of a released GPT-2 size: ``"gpt2"``, ``"gpt2-medium"``, ``"gpt2-large"`` or ``"gpt2-xl"``."""
    key = name.removeprefix("openai-community/")
    if key not in GPT2_PRESETS:
        raise WordformerError(f"unknown GPT-2 size {name!r}; choose one of: {', '.join(GPT2_PRESETS)}")
    return gpt2_config(**{**GPT2_PRESETS[key], **overrides})


def _check_gpt2_shaped(config: ModelConfig) -> None:
    """GPT-2 has nowhere to put sinusoidal or rotary positions, post-norm or RMS norms, QK-norm, gated or squared
    activations, another attention scale or capped logits: refuse each up front, naming the option (an untied or
    zero-initialised output layer is fine: GPT-2 can hold its own lm_head; exports: :func:`check_gpt2_exportable`)."""
    if config.positional != "learned":
        raise WordformerError(f"positional={config.positional!r} has no GPT-2 equivalent; GPT-2 needs positional='learned'")
    if config.norm != "pre":
        raise WordformerError(f"norm={config.norm!r} has no GPT-2 equivalent; GPT-2 needs norm='pre'")
    if config.norm_type != "layernorm":
        raise WordformerError(f"norm_type={config.norm_type!r} has no GPT-2 equivalent; GPT-2 needs norm_type='layernorm'")
    if config.qk_norm:
        raise WordformerError("qk_norm=True has no GPT-2 equivalent; GPT-2 needs qk_norm=False")
    if config.activation not in TO_HF_ACTIVATION:
        raise WordformerError(f"activation={config.activation!r} has no GPT-2 equivalent; GPT-2 needs one of: "
                              f"{', '.join(TO_HF_ACTIVATION)}")
    if config.attn_scale is not None and not math.isclose(config.attn_scale, config.head_size ** -0.5, rel_tol=1e-12):
        raise WordformerError(f"attn_scale={config.attn_scale} has no GPT-2 equivalent; GPT-2 scales by "
                              f"1/sqrt(head size) = {config.head_size ** -0.5:.6g} (attn_scale=None)")
    if config.logit_softcap:
        raise WordformerError(f"logit_softcap={config.logit_softcap} has no GPT-2 equivalent; GPT-2 needs logit_softcap=0")


# --------------------------------------------------------------------------------------------------- activations

def _activation_of(model: WordPredictor) -> str:
    return model.config.activation


def _build(config: ModelConfig, activation: str) -> WordPredictor:
    config.activation = activation
    return WordPredictor(config)


# --------------------------------------------------------------------------------------------------- import


def _canonical(state: StateDict, source: str) -> dict[str, tuple[str, Tensor]]:
    """GPT-2 names without wrapper or ``transformer.`` prefixes -> (name as given, tensor); buffers dropped."""
    if not isinstance(state, Mapping):
        raise WordformerError(f"{source} must be a dict of tensors, not {type(state).__name__}")
    out: dict[str, tuple[str, Tensor]] = {}
    for key, value in state.items():
        name = str(key)
        for prefix in _WRAPPER_PREFIXES:
            name = name.removeprefix(prefix)
        name = name.removeprefix("transformer.")
        parts = name.split(".")
        if len(parts) == 4 and parts[0] == "h" and parts[2] == "attn" and parts[3] in ("bias", "masked_bias"):
            continue  # the causal mask of older HF versions and of nanoGPT without flash attention
        if not isinstance(value, Tensor):
            raise WordformerError(f"{source}: {key!r} is a {type(value).__name__}, not a tensor")
        if name in out:
            raise WordformerError(f"{source} holds {out[name][0]!r} and {key!r}, the same GPT-2 tensor twice")
        out[name] = (str(key), value)
    return out


def _layer_count(canon: Mapping[str, Any], source: str) -> int:
    indices = {int(k.split(".")[1]) for k in canon if k.startswith("h.") and k.split(".")[1].isdigit()}
    if indices and indices != set(range(len(indices))):
        missing = sorted(set(range(max(indices) + 1)) - indices)
        raise WordformerError(f"{source} lacks block(s) h.{missing[0]} of h.0..h.{max(indices)}")
    return len(indices)


def _infer_config(canon: Mapping[str, tuple[str, Tensor]], *, conv1d: bool, n_head: Optional[int],
                  activation: str, source: str) -> ModelConfig:
    """Sizes from the shapes; heads are not in any shape, so they come from ``n_head`` or GPT-2's head size 64."""
    for name in ("wte.weight", "wpe.weight", "h.0.mlp.c_fc.weight"):
        if name not in canon:
            raise WordformerError(f"{source} has no {name!r}: not a GPT-2 state dict")
        if canon[name][1].dim() != 2:
            raise WordformerError(f"{source}: {canon[name][0]} has shape {tuple(canon[name][1].shape)}, expected a matrix")
    vocab, width = canon["wte.weight"][1].shape
    positions = canon["wpe.weight"][1].shape[0]
    fc = canon["h.0.mlp.c_fc.weight"][1].shape
    hidden = fc[1] if conv1d else fc[0]
    if hidden % width:
        raise WordformerError(f"{source}: {canon['h.0.mlp.c_fc.weight'][0]} has shape {tuple(fc)}; "
                              f"its hidden size must be a multiple of n_embd={width}")
    if n_head is None:
        if width % GPT2_HEAD_SIZE:
            raise WordformerError(f"cannot tell the number of heads of n_embd={width} from the weights; pass n_head= or config=")
        n_head = width // GPT2_HEAD_SIZE
    tied = "lm_head.weight" not in canon or (
        canon["lm_head.weight"][1].shape == canon["wte.weight"][1].shape
        and torch.equal(canon["lm_head.weight"][1], canon["wte.weight"][1])
    )
    config = gpt2_config(_layer_count(canon, source), n_head, width, positions, vocab, n_inner=hidden)
    config.tie_weights = tied
    config.bias = "h.0.attn.c_attn.bias" in canon or "ln_f.bias" in canon
    config.activation = activation
    return config


def _import(state: StateDict, config: Optional[ModelConfig], *, conv1d: bool, n_head: Optional[int],
            activation: str, source: str) -> WordPredictor:
    """Rename and (for HF) transpose every tensor, checking each shape and that nothing is left over."""
    canon = _canonical(state, source)
    if config is None:
        config = _infer_config(canon, conv1d=conv1d, n_head=n_head, activation=activation, source=source)
    else:
        config = ModelConfig(**{**vars(config)})  # our copy: _build sets the activation field
        _check_gpt2_shaped(config)
    layers = _layer_count(canon, source)
    if layers != config.num_layers:
        raise WordformerError(f"{source} has {layers} blocks (h.0..h.{layers - 1}) but the config has num_layers={config.num_layers}")
    model = _build(config, activation)
    target = model.state_dict()
    pairs = [(g, w, False) for g, w in TOP_NAMES]
    pairs += [(f"h.{i}.{g}", f"blocks.{i}.{w}", t) for i in range(config.num_layers) for g, w, t in BLOCK_NAMES]
    if not config.tie_weights:
        pairs.append((*HEAD_NAME, False))
    new: dict[str, Tensor] = {}
    used: set[str] = set()
    for gname, wname, transposed in pairs:
        if wname not in target:  # a bias-free config has no biases to fill
            continue
        if gname not in canon:
            raise WordformerError(f"{source} has no {gname!r}, which the model needs for {wname}")
        key, tensor = canon[gname]
        flip = conv1d and transposed
        want = tuple(target[wname].shape)[::-1] if flip else tuple(target[wname].shape)
        if tuple(tensor.shape) != want:
            raise WordformerError(
                f"{source}: {key} has shape {tuple(tensor.shape)} but the model needs {want} "
                f"(n_layer={config.num_layers}, n_head={config.num_heads}, n_embd={config.d_model}, "
                f"n_positions={config.block_size}, vocab_size={config.vocab_size})"
            )
        new[wname] = tensor.t() if flip else tensor
        used.add(gname)
    if config.tie_weights:
        if HEAD_NAME[0] in canon:
            key, head = canon[HEAD_NAME[0]]
            if head.shape != new["token_embedding.weight"].shape or not torch.equal(head, canon["wte.weight"][1]):
                raise WordformerError(f"{source}: {key} differs from wte.weight but the config ties them; "
                                      "use a config with tie_weights=False")
            used.add(HEAD_NAME[0])
        new[HEAD_NAME[1]] = new["token_embedding.weight"]
    unused = [key for name, (key, _) in canon.items() if name not in used]
    if unused:
        more = f" and {len(unused) - 3} more" if len(unused) > 3 else ""
        raise WordformerError(f"{source} has tensors this GPT-2 config does not use: {', '.join(unused[:3])}{more}")
    with torch.no_grad():
        model.load_state_dict(new, strict=True)
    return model.eval()


def from_hf_state_dict(state_dict: StateDict, config: Optional[ModelConfig] = None, *,
                       n_head: Optional[int] = None, activation: str = "gelu_tanh") -> WordPredictor:
    """A WordPredictor holding the weights of a HuggingFace GPT-2 state dict (Conv1D layout).

    Accepts ``GPT2LMHeadModel`` and ``GPT2Model`` keys (with or without ``transformer.``) and the hub's
    ``model.safetensors``. Without ``config`` the sizes come from the shapes and the heads from ``n_head``
    (default: n_embd / 64, as in every released GPT-2). ``activation`` is the HF model's
    ``activation_function`` in wordformer terms ("gelu_tanh" for GPT-2's "gelu_new").
    """
    if activation not in ACTIVATIONS:
        raise WordformerError(f"activation={activation!r} must be one of: {', '.join(ACTIVATIONS)}")
    return _import(state_dict, config, conv1d=True, n_head=n_head, activation=activation, source="GPT-2 state dict")


def _hf_activation(hf_config: Any) -> str:
    name = getattr(hf_config, "activation_function", "gelu_new")
    if name not in HF_ACTIVATIONS:
        raise WordformerError(f"activation_function={name!r} has no wordformer equivalent; supported: {', '.join(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[name]


def from_hf_model(hf_model: Any) -> WordPredictor:
    """A WordPredictor equal to a HuggingFace ``GPT2LMHeadModel`` (or ``GPT2Model``): same logits, same greedy text.

    Dropout is the HF model's ``resid_pdrop`` (GPT-2 used 0.1 everywhere); it only matters in training.
    """
    hf_config = getattr(hf_model, "config", None)
    if getattr(hf_config, "model_type", None) != "gpt2":
        raise WordformerError(f"expected a HuggingFace GPT-2 model, got {type(hf_model).__name__} "
                              f"(model_type={getattr(hf_config, 'model_type', None)!r})")
    if not getattr(hf_config, "scale_attn_weights", True) or getattr(hf_config, "scale_attn_by_inverse_layer_idx", False):
        raise WordformerError("this GPT-2 scales attention differently (scale_attn_weights=False or "
                              "scale_attn_by_inverse_layer_idx=True); wordformer divides by sqrt(head size) only")
    if getattr(hf_config, "add_cross_attention", False):
        raise WordformerError("this GPT-2 has cross-attention (add_cross_attention=True); wordformer is decoder-only")
    activation = _hf_activation(hf_config)
    config = gpt2_config(
        hf_config.n_layer, hf_config.n_head, hf_config.n_embd, hf_config.n_positions, hf_config.vocab_size,
        n_inner=hf_config.n_inner, dropout=float(hf_config.resid_pdrop), layer_norm_eps=float(hf_config.layer_norm_epsilon),
    )
    config.tie_weights = bool(getattr(hf_config, "tie_word_embeddings", True)) or not hasattr(hf_model, "lm_head")
    return _import(hf_model.state_dict(), config, conv1d=True, n_head=None, activation=activation,
                   source=f"{type(hf_model).__name__} state dict")


# --------------------------------------------------------------------------------------------------- export


def _export(model: WordPredictor, *, conv1d: bool, zero_biases: bool) -> dict[str, Tensor]:
    """GPT-2 names (with ``transformer.``), detached CPU tensors; the tied head shares wte's tensor."""
    if not isinstance(model, WordPredictor):
        raise WordformerError(f"expected a WordPredictor, got {type(model).__name__}")
    config = model.config
    check_gpt2_exportable(config)
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out: dict[str, Tensor] = {}

    def put(gname: str, wname: str, transposed: bool, fallback: Optional[tuple[int, ...]]) -> None:
        if wname in ours:
            tensor = ours[wname]
            out[gname] = tensor.t().contiguous() if (conv1d and transposed) else tensor.clone()
        elif zero_biases and fallback is not None:  # bias-free model: a zero bias adds nothing
            out[gname] = torch.zeros(fallback, dtype=ours["token_embedding.weight"].dtype)

    c, hidden = config.d_model, config.ff_mult * config.d_model
    bias_sizes = {"ln_1.bias": c, "ln_2.bias": c, "attn.c_attn.bias": 3 * c, "attn.c_proj.bias": c,
                  "mlp.c_fc.bias": hidden, "mlp.c_proj.bias": c, "ln_f.bias": c}
    for gname, wname in TOP_NAMES:
        put(f"transformer.{gname}", wname, False, (bias_sizes[gname],) if gname in bias_sizes else None)
    for i in range(config.num_layers):
        for gname, wname, transposed in BLOCK_NAMES:
            put(f"transformer.h.{i}.{gname}", f"blocks.{i}.{wname}", transposed,
                (bias_sizes[gname],) if gname in bias_sizes else None)
    if config.tie_weights:
        out[HEAD_NAME[0]] = out["transformer.wte.weight"]
    else:
        out[HEAD_NAME[0]] = ours[HEAD_NAME[1]].clone()
    return out


def to_hf_state_dict(model: WordPredictor) -> dict[str, Tensor]:
    """The model's weights as a ``GPT2LMHeadModel`` state dict (Conv1D layout), for ``load_state_dict(strict=True)``.

    A bias-free model gets zero biases (exactly the same function); build the HF model with
    :func:`to_hf_config` so that activation, sizes and tying match.
    """
    return _export(model, conv1d=True, zero_biases=True)


def check_gpt2_exportable(config: ModelConfig) -> None:
    """Refuse, naming the option to train with, a model GPT-2 cannot express.

    Everything else maps: any of the three activations (HF ``gelu_new``, ``gelu``, ``relu``), an untied
    head (``tie_word_embeddings=False``), ``ff_mult`` (``n_inner``), ``--no-bias`` (zero biases, the same
    function), ``layer_norm_eps`` and dropout.
    """
    if config.positional != "learned":
        raise WordformerError(f"--positional {config.positional}: GPT-2 has learned positions; train with "
                              f"--positional learned to export to GPT-2 (`wordformer export --to hf` writes sinusoidal "
                              f"models as GPT-2 and rope ones as GPT-NeoX)")
    if config.norm != "pre":
        what = "a layer norm after each sublayer" if config.norm == "post" else "no layer norms"
        raise WordformerError(f"--norm {config.norm}: GPT-2 has a layer norm before each sublayer, not {what}; "
                              f"train with --norm pre to export to GPT-2 / HuggingFace")
    _check_gpt2_shaped(config)  # the recipe options (issue 15): RMS norm, QK-norm, ReLU², SwiGLU, attn_scale, softcap


def with_learned_positions(model: WordPredictor) -> WordPredictor:
    """The same function as a sinusoidal-position ``model`` (the chapter's, ``train``'s default), written with
    learned positions so that GPT-2 can hold it: the position table is the fixed sinusoids, the token embedding
    carries its sqrt(d_model) factor, and the output layer keeps the unscaled embedding (so it is untied).

    Other models are returned as they are."""
    from dataclasses import replace

    config = model.config
    if config.positional != "sinusoidal":
        return model
    learned = WordPredictor(replace(config, positional="learned", tie_weights=False))
    learned = learned.to(dtype=model.token_embedding.weight.dtype).eval()
    state = {k: v for k, v in model.state_dict().items() if k not in ("token_embedding.weight", "output_layer.weight")}
    with torch.no_grad():
        embedding = model.token_embedding.weight.detach()
        state["token_embedding.weight"] = embedding * model.token_embedding.scale
        state["output_layer.weight"] = model.output_layer.weight.detach().clone()
        state["positional_encoding.table.weight"] = model.positional_encoding.table.detach().clone()
    learned.load_state_dict(state, strict=True)
    return learned


def hf_config_dict(model: WordPredictor, *, eos_token_id: Optional[int] = None,
                   pad_token_id: Optional[int] = None) -> dict[str, Any]:
    """The fields of ``model``'s ``transformers.GPT2Config``, as ``config.json`` holds them (no transformers needed).

    ``eos_token_id`` is also the ``bos_token_id`` (GPT-2 begins and ends texts with one token).
    """
    check_gpt2_exportable(model.config)
    config = model.config
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_embd": config.d_model,
        "n_layer": config.num_layers, "n_head": config.num_heads,
        "n_inner": None if config.ff_mult == 4 else config.ff_mult * config.d_model,
        "activation_function": TO_HF_ACTIVATION[_activation_of(model)],
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_eps, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "use_cache": True, "tie_word_embeddings": config.tie_weights,
        "bos_token_id": eos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id,
    }


def to_hf_config(model: WordPredictor, *, eos_token_id: Optional[int] = None,
                 pad_token_id: Optional[int] = None) -> Any:
    """The ``transformers.GPT2Config`` of ``model`` (activation read from the modules, not the config).

    Without ``eos_token_id`` a model with GPT-2's vocabulary gets ``<|endoftext|>`` (50256).
    """
    transformers = _transformers("to_hf_config")
    if eos_token_id is None and model.config.vocab_size >= GPT2_VOCAB_SIZE:
        eos_token_id = GPT2_VOCAB_SIZE - 1
    fields = hf_config_dict(model, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    for name in ("architectures", "model_type"):
        fields.pop(name)
    return transformers.GPT2Config(**fields)


def to_hf_model(model: WordPredictor, tokenizer: Optional[Any] = None) -> Any:
    """A ``transformers.GPT2LMHeadModel`` computing what ``model`` computes (save it with ``save_pretrained``).

    With the model's ``tokenizer`` its config holds the ``<eos>`` and ``<pad>`` ids, so ``generate`` stops
    at ``<eos>``. For a folder with the tokenizer too: :func:`wordformer.hf.save_hf` (``wordformer export --to hf DIR``).
    """
    transformers = _transformers("to_hf_model")
    ids = {} if tokenizer is None else {"eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    hf_model = transformers.GPT2LMHeadModel(to_hf_config(model, **ids))
    hf_model.load_state_dict(to_hf_state_dict(model), strict=True)
    return hf_model.eval()


# --------------------------------------------------------------------------------------------------- nanoGPT

NANOGPT_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")


def _read_torch_file(path: Union[str, os.PathLike], what: str) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, so no pickled code runs."""
    path = Path(path)
    if not path.is_file():
        raise WordformerError(f"{what} {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln), lines[0] if lines else "unsupported content")
        raise WordformerError(f"refusing to load {path}: it contains pickled objects that could run code ({detail}); "
                              "load only files from sources you trust") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise WordformerError(f"{path} is not a readable {what} ({first})") from None


def from_nanogpt_checkpoint(path_or_dict: Union[str, os.PathLike, Mapping[str, Any]]) -> WordPredictor:
    """A WordPredictor equal to a nanoGPT model: its ``ckpt.pt`` (read with weights_only) or that dict loaded.

    nanoGPT stores ``{"model": state_dict, "model_args": {...}}`` in nn.Linear layout, possibly with
    ``_orig_mod.`` prefixes from ``torch.compile``; its MLP uses exact GELU, and so does the import.
    """
    if isinstance(path_or_dict, Mapping):
        ckpt, where = path_or_dict, "nanoGPT checkpoint"
    else:
        ckpt, where = _read_torch_file(path_or_dict, "nanoGPT checkpoint"), f"nanoGPT checkpoint {path_or_dict}"
    if not isinstance(ckpt, Mapping) or "model" not in ckpt or "model_args" not in ckpt:
        raise WordformerError(f"{where} is not a nanoGPT checkpoint (needs 'model' and 'model_args' entries)")
    args = ckpt["model_args"]
    missing = [k for k in NANOGPT_ARGS[:-1] if k not in args]
    if missing:
        raise WordformerError(f"{where}: model_args lacks {', '.join(missing)}")
    config = ModelConfig(
        vocab_size=int(args["vocab_size"]), block_size=int(args["block_size"]), d_model=int(args["n_embd"]),
        num_heads=int(args["n_head"]), num_layers=int(args["n_layer"]), ff_mult=4, positional="learned",
        norm="pre", activation="gelu", tie_weights=True, bias=bool(args["bias"]),
        dropout=float(args.get("dropout", 0.0)), layer_norm_eps=1e-5,
    )
    return _import(ckpt["model"], config, conv1d=False, n_head=None, activation="gelu", source=where)


def to_nanogpt_checkpoint(model: WordPredictor) -> dict[str, Any]:
    """A nanoGPT ``ckpt.pt`` dict (``torch.save`` it) that nanoGPT's ``sample.py`` loads.

    nanoGPT needs a tied head and ff_mult 4; its MLP computes exact GELU, so a model with GPT-2's tanh
    GELU runs slightly differently there (as GPT-2 itself does inside nanoGPT). There is no optimizer
    state, so nanoGPT's ``train.py`` cannot resume from it.
    """
    config = model.config
    if not config.tie_weights:
        raise WordformerError("nanoGPT always ties the output layer to the token embedding; this model has tie_weights=False")
    if config.ff_mult != 4:
        raise WordformerError(f"nanoGPT's MLP is 4 * n_embd wide; this model has ff_mult={config.ff_mult}")
    activation = _activation_of(model)
    if activation == "relu":
        raise WordformerError("nanoGPT's MLP uses GELU; this model uses relu")
    if config.layer_norm_eps != 1e-5:
        raise WordformerError(f"nanoGPT's layer norms use eps 1e-5; this model has layer_norm_eps={config.layer_norm_eps}")
    if activation == "gelu_tanh":
        logger.info("nanoGPT computes exact GELU; this model's tanh-approximated GELU will differ slightly there")
    state = _export(model, conv1d=False, zero_biases=False)
    model_args = {"n_layer": config.num_layers, "n_head": config.num_heads, "n_embd": config.d_model,
                  "block_size": config.block_size, "bias": config.bias, "vocab_size": config.vocab_size,
                  "dropout": config.dropout}
    return {"model": state, "model_args": model_args, "iter_num": 0, "best_val_loss": float("inf"),
            "config": dict(model_args)}


# --------------------------------------------------------------------------------------------------- tokenizer


class GPT2BPETokenizer(BPETokenizer):
    """GPT-2's byte-level BPE: ``<|endoftext|>`` ends documents and pads batches, as GPT-2 has no ``<pad>``.

    A plain :class:`BPETokenizer` with other special-token names; ``to_dict`` records them, so a wordformer
    checkpoint holding this tokenizer reloads (as a ``BPETokenizer`` with the same names).
    """

    def __init__(self, tok: Any, *, eos_token: str = ENDOFTEXT) -> None:
        if tok.token_to_id(eos_token) is None:
            raise WordformerError(f"the GPT-2 tokenizer has no {eos_token} token; is it a GPT-2 tokenizer?")
        super().__init__(tok, eos_token=eos_token, pad_token=eos_token)


def _transformers(what: str) -> Any:
    try:
        import transformers
    except ImportError:
        raise WordformerError(f"{what} needs HuggingFace transformers: pip install transformers") from None
    return transformers


def load_gpt2_tokenizer(name_or_path: str) -> GPT2BPETokenizer:
    """GPT-2's tokenizer from the hub or a folder holding ``tokenizer.json`` (or ``vocab.json`` + ``merges.txt``)."""
    transformers = _transformers("load_gpt2_tokenizer")
    hint = ("save one with GPT2TokenizerFast.from_pretrained('gpt2').save_pretrained(DIR), "
            "or pass with_tokenizer=False")
    folder = Path(name_or_path)
    if folder.is_dir() and not (folder / "tokenizer.json").is_file() and not (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    ):
        raise WordformerError(f"{folder} has no GPT-2 tokenizer (tokenizer.json, or vocab.json and merges.txt); {hint}")
    try:
        hf_tok = transformers.GPT2TokenizerFast.from_pretrained(name_or_path)
    except (OSError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or ["not found"])[0]
        raise WordformerError(f"no GPT-2 tokenizer at {name_or_path!r} ({first}); {hint}") from None
    backend = hf_tok.backend_tokenizer
    if backend.get_vocab_size() < 257:  # transformers 5 quietly returns an empty tokenizer when files are missing
        raise WordformerError(f"no GPT-2 tokenizer at {name_or_path!r} (only {backend.get_vocab_size()} tokens); {hint}")
    return GPT2BPETokenizer(backend, eos_token=str(hf_tok.eos_token or ENDOFTEXT))


def load_pretrained_gpt2(name_or_path: str = "gpt2", *, with_tokenizer: bool = True, **from_pretrained: Any) -> Any:
    """GPT-2 from the HuggingFace hub (needs internet once) or a ``save_pretrained`` folder, ready to generate.

    Returns a :class:`wordformer.checkpoint.LoadedModel`; its tokenizer is a :class:`GPT2BPETokenizer`, or
    None with ``with_tokenizer=False``. Extra keyword arguments go to ``GPT2LMHeadModel.from_pretrained``.
    """
    from .checkpoint import LoadedModel

    transformers = _transformers("load_pretrained_gpt2")
    try:
        hf_model = transformers.GPT2LMHeadModel.from_pretrained(name_or_path, **from_pretrained)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or ["not found"])[0]
        raise WordformerError(f"cannot load GPT-2 {name_or_path!r} ({first}); check the name, "
                              "your internet connection, or the folder") from None
    model = from_hf_model(hf_model)
    del hf_model
    tokenizer = load_gpt2_tokenizer(name_or_path) if with_tokenizer else None
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise WordformerError(f"the tokenizer at {name_or_path!r} has {tokenizer.vocab_size} tokens but the model "
                              f"only {model.config.vocab_size}; they do not belong together")
    data_config = DataConfig(tokenizer="bpe", eos="document", bpe_vocab_size=tokenizer.vocab_size if tokenizer else 2000)
    local = Path(name_or_path).is_dir()
    return LoadedModel(model, tokenizer, model.config, data_config, TrainConfig(),  # type: ignore[arg-type]
                       path=Path(name_or_path) if local else None, info={"source": "huggingface", "name": str(name_or_path)})
