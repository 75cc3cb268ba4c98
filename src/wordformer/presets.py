"""Presets: named, documented bundles of options (as litgpt's named configs), chosen with ``--preset NAME``.

``chapter`` is the chapter's model and wordformer's default. ``gpt2`` is GPT-2's architecture at any size
(the released sizes are :func:`wordformer.gpt2.gpt2_preset`); its models export to GPT-2 exactly. ``fast`` is the
combination of the recipe options (issue 15) that reached the lowest validation loss at 2000 steps in the
measurements of ``benchmarks/bench_recipe.py`` (BENCHMARKS.md, section 12), at char-level tinyshakespeare sizes on a
CPU: Muon and rotary positions. Everything else measured there (RMS norm, QK-norm, squared ReLU, SwiGLU, WSD,
zero-initialisation, soft-capping, no biases) did not lower the loss on top of those two at that size and is left
out. ``wordformer demo`` trains ``fast`` too: it also won at the demo's word-level sizes.

A preset only sets config fields; options given beside it (command line, YAML) override it, and the result is
validated like any other configuration and saved in checkpoints field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import SECTIONS, field_names
from .errors import WordformerError

__all__ = ["DEFAULT_PRESET", "PRESETS", "Preset", "preset_names", "preset_values", "preset_yaml"]


@dataclass(frozen=True)
class Preset:
    """A named set of config values and one line on what it is for."""

    name: str
    summary: str
    values: dict[str, Any] = field(default_factory=dict)


# The fields the recipe options touch, at the chapter's (the default) values: every preset states all of them,
# so a preset means the same whatever other preset or YAML file came before it.
CHAPTER = {
    "positional": "sinusoidal", "norm": "pre", "norm_type": "layernorm", "activation": "gelu", "tie_weights": True,
    "bias": True, "qk_norm": False, "attn_scale": None, "zero_init_residual": False, "zero_init_output": False,
    "logit_softcap": 0.0, "optimizer": "adamw", "muon_lr": 0.02, "schedule": "cosine", "lr": 1e-3, "min_lr": 1e-4,
}

PRESETS: dict[str, Preset] = {
    "chapter": Preset(
        "chapter",
        "the chapter's model, wordformer's default: sinusoidal positions, pre-norm layer norms, GELU, tied output "
        "layer, AdamW with warm-up and cosine decay",
        dict(CHAPTER),
    ),
    "gpt2": Preset(
        "gpt2",
        "GPT-2's architecture (learned positions, pre-norm layer norms, tanh GELU, tied output layer, biases) and "
        "nanoGPT's AdamW + cosine; exports to GPT-2 / nanoGPT exactly",
        {**CHAPTER, "positional": "learned", "activation": "gelu_tanh"},
    ),
    "fast": Preset(
        "fast",
        "the combination that measured best at 2000 steps on char-level tinyshakespeare (BENCHMARKS.md, section "
        "12): rotary positions (RoPE), Muon (lr 0.01) for the blocks' weight matrices, AdamW at lr 4e-3 for the "
        "rest, warm-up and cosine decay; the other recipe options added nothing on top at that size and stay off",
        {**CHAPTER, "positional": "rope", "optimizer": "muon", "muon_lr": 0.01, "lr": 4e-3, "min_lr": 4e-4},
    ),
}
DEFAULT_PRESET = "chapter"


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


def preset_values(name: str) -> dict[str, Any]:
    """The config values of preset ``name`` (a copy), or a one-line error naming the presets there are."""
    if name not in PRESETS:
        raise WordformerError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)} "
                              "(`wordformer presets` shows what each sets)")
    return dict(PRESETS[name].values)


def preset_yaml(name: str) -> str:
    """A YAML config file (``model:`` and ``train:`` sections) that sets exactly what preset ``name`` sets."""
    import yaml

    values = preset_values(name)
    sections: dict[str, dict[str, Any]] = {}
    for section, cls in SECTIONS.items():
        mine = {k: v for k, v in values.items() if k in field_names(cls)}
        if mine:
            sections[section] = mine
    header = f"# wordformer preset {name!r}: {PRESETS[name].summary}\n"
    return header + yaml.safe_dump(sections, sort_keys=False, default_flow_style=False)
