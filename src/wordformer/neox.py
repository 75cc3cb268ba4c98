"""Rotary-position models as HuggingFace GPT-NeoX, so ``wordformer export --to hf`` works for the ``fast`` preset.

GPT-2 has learned positions and cannot hold a RoPE model; GPT-NeoX (``GPTNeoXForCausalLM``) is the same
pre-norm decoder with rotary positions in the same "rotate half" layout (pair ``i`` is numbers ``i`` and
``i + D/2`` of a head, turned by ``position * base^(-2i/D)``), layer norms, a plain MLP and biases. So a
wordformer model with ``positional: rope``, pre-norm layer norms, one of the plain activations, the default
attention scale and no logit cap is exactly a GPT-NeoX model. Two things differ in layout only:

* GPT-NeoX's fused ``query_key_value`` rows run head by head (``q_h, k_h, v_h`` for each head ``h``), wordformer's
  ``qkv`` rows run part by part (all queries, all keys, all values);
* a bias-free wordformer model gets zero MLP and layer-norm biases (GPT-NeoX always has them): the same function.

Muon, WSD and the other training options leave no trace in the weights, so they export like any other run.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .config import ModelConfig
from .errors import WordformerError
from .model import WordPredictor

__all__ = ["NEOX_ACTIVATION", "check_neox_exportable", "neox_config_dict", "to_neox_state_dict"]

NEOX_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "relu2": "relu2"}


def check_neox_exportable(config: ModelConfig) -> None:
    """Refuse, naming the option, a RoPE model GPT-NeoX cannot express."""
    need = "to export a rotary-position model to HuggingFace (GPT-NeoX)"
    if config.positional != "rope":
        raise WordformerError(f"--positional {config.positional}: GPT-NeoX has rotary positions (--positional rope)")
    if config.norm != "pre":
        raise WordformerError(f"--norm {config.norm}: GPT-NeoX has a layer norm before each sublayer; train with "
                              f"--norm pre {need}")
    if config.norm_type != "layernorm":
        raise WordformerError(f"--norm-type {config.norm_type}: GPT-NeoX has layer norms; train with --norm-type "
                              f"layernorm {need}")
    if config.qk_norm:
        raise WordformerError(f"--qk-norm: GPT-NeoX does not normalise queries and keys; train without it {need}")
    if config.activation not in NEOX_ACTIVATION:
        raise WordformerError(f"--activation {config.activation}: GPT-NeoX's feed-forward net is not gated; train "
                              f"with one of {', '.join(NEOX_ACTIVATION)} {need}")
    if config.attn_scale is not None:
        raise WordformerError(f"--attn-scale {config.attn_scale}: GPT-NeoX scales q . k by 1/sqrt(head size); train "
                              f"without --attn-scale {need}")
    if config.logit_softcap:
        raise WordformerError(f"--logit-softcap {config.logit_softcap}: GPT-NeoX does not cap logits; train with "
                              f"--logit-softcap 0 {need}")


def neox_config_dict(model: WordPredictor, *, eos_token_id: Optional[int] = None,
                     pad_token_id: Optional[int] = None) -> dict[str, Any]:
    """The fields of ``model``'s ``transformers.GPTNeoXConfig``, as ``config.json`` holds them."""
    config = model.config
    check_neox_exportable(config)
    return {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
        "vocab_size": config.vocab_size, "max_position_embeddings": config.block_size,
        "hidden_size": config.d_model, "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads, "intermediate_size": config.ff_mult * config.d_model,
        "hidden_act": NEOX_ACTIVATION[config.activation],
        "rope_parameters": {"rope_type": "default", "rope_theta": float(config.rope_base),
                            "partial_rotary_factor": 1.0},
        "attention_dropout": config.dropout, "hidden_dropout": config.dropout,
        "layer_norm_eps": config.layer_norm_eps, "initializer_range": 0.02,
        "use_parallel_residual": False, "attention_bias": True, "use_cache": True,
        "tie_word_embeddings": config.tie_weights,
        "bos_token_id": eos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id,
    }


def _heads_first(t: Tensor, heads: int) -> Tensor:
    """wordformer's (3*H*D, ...) rows [all q; all k; all v] -> GPT-NeoX's [q_0, k_0, v_0, q_1, ...]."""
    rest = t.shape[1:]
    return t.reshape(3, heads, -1, *rest).transpose(0, 1).reshape(-1, *rest).contiguous()


def to_neox_state_dict(model: WordPredictor) -> dict[str, Tensor]:
    """The model's weights as a ``GPTNeoXForCausalLM`` state dict (``lm_head.weight`` included, tied or not)."""
    if not isinstance(model, WordPredictor):
        raise WordformerError(f"expected a WordPredictor, got {type(model).__name__}")
    config = model.config
    check_neox_exportable(config)
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    dtype = ours["token_embedding.weight"].dtype
    out: dict[str, Tensor] = {"gpt_neox.embed_in.weight": ours["token_embedding.weight"].clone()}

    def get(name: str, size: int) -> Tensor:  # a missing bias (bias=False) is a zero one: the same function
        return ours[name].clone() if name in ours else torch.zeros(size, dtype=dtype)

    c, hidden = config.d_model, config.ff_mult * config.d_model
    for i in range(config.num_layers):
        ours_, theirs = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        for mine, name, size in (("norm1", "input_layernorm", c), ("norm2", "post_attention_layernorm", c)):
            out[theirs + name + ".weight"] = ours[ours_ + mine + ".weight"].clone()
            out[theirs + name + ".bias"] = get(ours_ + mine + ".bias", size)
        out[theirs + "attention.query_key_value.weight"] = _heads_first(ours[ours_ + "attention.qkv.weight"],
                                                                         config.num_heads)
        out[theirs + "attention.query_key_value.bias"] = _heads_first(get(ours_ + "attention.qkv.bias", 3 * c),
                                                                       config.num_heads)
        out[theirs + "attention.dense.weight"] = ours[ours_ + "attention.out.weight"].clone()
        out[theirs + "attention.dense.bias"] = get(ours_ + "attention.out.bias", c)
        out[theirs + "mlp.dense_h_to_4h.weight"] = ours[ours_ + "feed_forward.up.weight"].clone()
        out[theirs + "mlp.dense_h_to_4h.bias"] = get(ours_ + "feed_forward.up.bias", hidden)
        out[theirs + "mlp.dense_4h_to_h.weight"] = ours[ours_ + "feed_forward.down.weight"].clone()
        out[theirs + "mlp.dense_4h_to_h.bias"] = get(ours_ + "feed_forward.down.bias", c)
    out["gpt_neox.final_layer_norm.weight"] = ours["final_norm.weight"].clone()
    out["gpt_neox.final_layer_norm.bias"] = get("final_norm.bias", c)
    out["lm_head.weight"] = out["gpt_neox.embed_in.weight"] if config.tie_weights else ours["output_layer.weight"].clone()
    return out
