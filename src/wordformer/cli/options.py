"""Options that several commands share, declared once: every config field as a flag, the checkpoint, the
prompt and the sampling options, and how the flags become the three configs.

Model, data and training options are generated from the config dataclasses (``--d-model`` for ``d_model``),
so the command line and the configs cannot drift apart. Only configuration code is imported here, so
``wordformer --help`` never loads torch.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import MISSING, fields
from typing import Any, Optional, Sequence

from ..config import (ACTIVATIONS, ENCODING_ERRORS, EOS_MODES, NORM_TYPES, NORMS, OPTIMIZERS, POSITIONALS, SAMPLINGS,
                      SCHEDULES, SECTIONS, STRATEGIES, TOKENIZERS, DataConfig, ModelConfig, TrainConfig, build_configs,
                      field_help, field_type, read_config_file)
from ..presets import DEFAULT_PRESET, preset_names, preset_values

CHOICES = {
    "positional": POSITIONALS,
    "norm": NORMS,
    "activation": ACTIVATIONS,
    "tokenizer": TOKENIZERS,
    "eos": EOS_MODES,
    "encoding_errors": ENCODING_ERRORS,
    "sampling": SAMPLINGS,
    "norm_type": NORM_TYPES,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "strategy": STRATEGIES,
}
SKIP = {"vocab_size"}  # set from the tokenizer
# help text for defaults that read badly as a value (None, most of all)
DEFAULT_SHOWN = {"data": "the built-in corpus", "max_vocab": "every word", "max_time": "no limit",
                 "cache_dir": "$WORDFORMER_CACHE, else ~/.cache/wordformer", "workers": "every core",
                 "attn_scale": "1/sqrt(head_size)"}
METAVARS = {"encoding": "NAME", "data": "PATH", "cache_dir": "DIR"}

# options that only one tokenizer or mode reads: given elsewhere they would be dropped without a word
ONLY_FOR = {"lowercase": ("tokenizer", "word"), "min_freq": ("tokenizer", "word"), "max_vocab": ("tokenizer", "word"),
            "bpe_vocab_size": ("tokenizer", "bpe"), "eos": ("pairs", False)}


def flag(name: str) -> str:
    """The command-line spelling of a config field: ``top_k`` -> ``--top-k``."""
    return "--" + name.replace("_", "-")


def add_config_options(parser: argparse.ArgumentParser, *, skip: Sequence[str] = (),
                       default_preset: str = DEFAULT_PRESET) -> None:
    """``--preset`` and one option per config field, defaulting to "not given" so YAML values are not overridden."""
    parser.add_argument("--preset", default=None, choices=preset_names(),
                        help="a named bundle of options (`wordformer presets` lists them); options given beside it, "
                             f"here or in --config, override it (default: {default_preset})")
    titles = {"model": "model options", "data": "data options", "train": "training options"}
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(titles[section])
        helps = field_help(cls)
        for f in fields(cls):
            if f.name in SKIP or f.name in skip:
                continue
            default = f.default if f.default is not MISSING else None
            text = f"{helps.get(f.name, f.name)} (default: {DEFAULT_SHOWN.get(f.name, default)})"
            kind = field_type(cls, f.name)
            if kind is bool:
                group.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=text)
            else:
                group.add_argument(flag(f.name), dest=f.name, type=kind, default=argparse.SUPPRESS,
                                   choices=CHOICES.get(f.name), help=text,
                                   metavar=None if f.name in CHOICES else METAVARS.get(f.name, f.name.upper()))


def given_config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config options given on the command line (the others are absent from ``args``)."""
    names = {f.name for cls in SECTIONS.values() for f in fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def configs_from_args(args: argparse.Namespace, base: Optional[dict[str, Any]] = None, *,
                      warn: bool = True) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    """Defaults < ``base`` < preset (``--preset``, else the file's ``preset:``) < YAML file (``--config``) < options
    given on the command line; ``warn``: say which given options the chosen tokenizer or mode ignores."""
    values: dict[str, Any] = dict(base or {})
    where = "options"
    given = dict(given_config_values(args))
    from_file = read_config_file(args.config) if getattr(args, "config", None) else {}
    preset = getattr(args, "preset", None) or from_file.pop("preset", None)
    from_file.pop("preset", None)
    if preset is not None:
        values.update(preset_values(str(preset)))
    if getattr(args, "config", None):
        values.update(from_file)
        given = {**from_file, **given}
        where = f"{args.config} or options"
    values.update(given_config_values(args))
    configs = build_configs(values, where=where)
    data = configs[1]
    for name, (field_name, needed) in ONLY_FOR.items():
        if warn and name in given and getattr(data, field_name) != needed:
            what = f"the {needed} tokenizer" if field_name == "tokenizer" else "plain text (not --pairs)"
            logging.getLogger("wordformer").warning("%s is ignored: it applies to %s only", flag(name), what)
    return configs


def add_checkpoint(p: argparse.ArgumentParser, *, required: bool = True, help: Optional[str] = None) -> None:
    """``--checkpoint PATH``: a ``.ckpt`` written by ``wordformer train`` or a ``.safetensors`` export."""
    text = help or ("a checkpoint written by `wordformer train` (.ckpt; its run folder means the folder's best.ckpt) "
                    "or `wordformer export` (.safetensors)")
    p.add_argument("--checkpoint", required=required, default=None, help=text + (" (required)" if required else ""))


def add_prompt(p: argparse.ArgumentParser) -> None:
    """``--prompt TEXT`` and ``--append-eos``: the input, and whether <eos> after it starts the answer."""
    p.add_argument("--prompt", default=None, help="the input text (required)")
    p.add_argument("--append-eos", action=argparse.BooleanOptionalAction, default=None,
                   help="end the prompt with <eos> so the answer starts (default: on for models trained with --pairs)")


def add_sampling(p: argparse.ArgumentParser) -> None:
    """How the next token is chosen: temperature, top-k, top-p, seed."""
    p.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate (default: 50)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature; 0 or below means greedy (default: 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample only from the k most likely tokens (default: off)")
    p.add_argument("--top-p", type=float, default=None,
                   help="sample only from the smallest set with this much probability, in (0, 1] (default: off)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples (default: none)")


def add_encoding(p: argparse.ArgumentParser, *, default: str) -> None:
    """``--encoding`` and ``--encoding-errors`` for a command that reads text without the other data options."""
    helps = field_help(DataConfig)
    p.add_argument("--encoding", default=None, metavar="NAME", help=f"{helps['encoding']} (default: {default})")
    p.add_argument("--encoding-errors", default=None, choices=ENCODING_ERRORS,
                   help=f"{helps['encoding_errors']} (default: {default})")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def prompt_of(args: argparse.Namespace) -> str:
    """The ``--prompt`` given, or one line saying to give one."""
    from ..errors import WordformerError

    if args.prompt is None:
        raise WordformerError("give a prompt with --prompt TEXT")
    return args.prompt
