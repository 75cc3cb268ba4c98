"""``wordformer plot KIND``: attention maps, positional encodings, the learning-rate schedule, embeddings and
training curves, written as PNG or SVG by the ``--out`` extension."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from ..config import ModelConfig, TrainConfig
from ..errors import WordformerError
from .options import add_checkpoint, add_prompt, prompt_of

LR_OPTIONS = ("lr", "min_lr", "warmup_steps", "max_steps")


def _out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="image file to write, .png or .svg (replaced if it exists; required)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of PNG files (default: 100)")


def add_plot(plot: argparse.ArgumentParser) -> None:
    kinds = plot.add_subparsers(dest="plot_kind", metavar="KIND", required=True)

    p = kinds.add_parser("attention", help="attention maps of every layer and head for a prompt")
    add_checkpoint(p)
    add_prompt(p)
    _out(p)

    model_defaults = ModelConfig()
    p = kinds.add_parser("positional", help="positional encoding: heatmap over position x dimension, and curves")
    add_checkpoint(p, required=False, help="plot this model's encoding (sinusoidal or learned)")
    p.add_argument("--block-size", type=int, default=None,
                   help=f"positions of a sinusoidal table, without --checkpoint (default: {model_defaults.block_size})")
    p.add_argument("--d-model", type=int, default=None,
                   help=f"width of a sinusoidal table, without --checkpoint (default: {model_defaults.d_model})")
    _out(p)

    train_defaults = TrainConfig()
    p = kinds.add_parser("lr", help="learning-rate schedule: linear warm-up, then cosine decay")
    add_checkpoint(p, required=False, help="use the training options stored in this checkpoint")
    for name in LR_OPTIONS:
        kind = float if name.endswith("lr") else int
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None,
                       help=f"(default: {getattr(train_defaults, name)}; without --checkpoint)")
    _out(p)

    p = kinds.add_parser("embeddings", help="token embeddings in 2-D (as is for d_model = 2, else PCA)")
    add_checkpoint(p)
    p.add_argument("--max-tokens", type=int, default=60,
                   help="plot token ids 0..N-1 (the most frequent words; default: 60)")
    _out(p)

    p = kinds.add_parser("curves", help="loss, perplexity, accuracy and learning rate of a training run")
    p.add_argument("--run", required=True, help="the --out folder of `wordformer train`, or its logs/csv/metrics.csv")
    _out(p)


def run_plot(args: argparse.Namespace) -> int:
    """Check --out before any work, build the figure, save it and say where it went."""
    from ..plots import check_image_path, save_figure

    check_image_path(args.out)
    if not 1 <= args.dpi <= 1200:
        raise WordformerError(f"--dpi {args.dpi} must lie in 1..1200")
    path = save_figure(FIGURES[args.plot_kind](args), args.out, dpi=args.dpi)
    print(f"wrote {path}")
    return 0


def _attention(args: argparse.Namespace) -> Any:
    from ..checkpoint import load_checkpoint
    from ..plots import plot_attention

    prompt = prompt_of(args)
    return plot_attention(load_checkpoint(args.checkpoint), prompt=prompt, append_eos=args.append_eos)


def _positional(args: argparse.Namespace) -> Any:
    from ..checkpoint import load_checkpoint
    from ..plots import plot_positional_encoding

    if args.checkpoint:
        if args.block_size is not None or args.d_model is not None:
            raise WordformerError("give --checkpoint or --block-size/--d-model, not both")
        return plot_positional_encoding(load_checkpoint(args.checkpoint))
    return plot_positional_encoding(None, args.block_size, args.d_model)


def _lr(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from ..checkpoint import load_checkpoint
    from ..plots import plot_lr_schedule

    given = {k: getattr(args, k) for k in LR_OPTIONS if getattr(args, k) is not None}
    if args.checkpoint:
        base = load_checkpoint(args.checkpoint).train_config
        return plot_lr_schedule(replace(base, **given))  # replace re-validates
    return plot_lr_schedule(TrainConfig(**given))


def _embeddings(args: argparse.Namespace) -> Any:
    from ..checkpoint import load_checkpoint
    from ..plots import plot_embeddings

    return plot_embeddings(load_checkpoint(args.checkpoint), max_tokens=args.max_tokens)


def _curves(args: argparse.Namespace) -> Any:
    from ..plots import plot_training_curves

    return plot_training_curves(args.run)


FIGURES: dict[str, Callable[[argparse.Namespace], Any]] = {
    "attention": _attention, "positional": _positional, "lr": _lr, "embeddings": _embeddings, "curves": _curves}
