"""The ``wordformer`` command: a thin layer that parses options, calls one library function and prints.

Model, data and training options are generated from the config dataclasses (``--d-model`` for
``d_model``), so the CLI and the configs cannot drift apart. User mistakes arrive as
:class:`WordformerError` and become one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .config import (ACTIVATIONS, EOS_MODES, NORM_TYPES, NORMS, OPTIMIZERS, POSITIONALS, SAMPLINGS, SCHEDULES, SECTIONS,
                     TOKENIZERS, build_configs, field_help, field_type, read_config_file)
from .errors import WordformerError

CHOICES = {
    "positional": POSITIONALS,
    "norm": NORMS,
    "activation": ACTIVATIONS,
    "tokenizer": TOKENIZERS,
    "eos": EOS_MODES,
    "encoding_errors": ("strict", "replace"),
    "sampling": SAMPLINGS,
    "norm_type": NORM_TYPES,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
}
SKIP = {"vocab_size"}  # set from the tokenizer


def add_config_options(parser: argparse.ArgumentParser, *, skip: Sequence[str] = ()) -> None:
    """One option per config field, defaulting to "not given" so YAML values are not overridden."""
    from .presets import preset_names

    parser.add_argument("--preset", default=None, choices=preset_names(),
                        help="a named bundle of options (`wordformer presets` lists them); options given beside it, "
                             "here or in --config, override it (default: chapter)")
    titles = {"model": "model options", "data": "data options", "train": "training options"}
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(titles[section])
        helps = field_help(cls)
        for f in fields(cls):
            if f.name in SKIP or f.name in skip:
                continue
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not MISSING else None
            text = f"{helps.get(f.name, f.name)} (default: {default})"
            kind = field_type(cls, f.name)
            if kind is bool:
                group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=text)
            else:
                group.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS,
                                   choices=CHOICES.get(f.name), help=text,
                                   metavar=None if f.name in CHOICES else f.name.upper())


def given_config_values(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for cls in SECTIONS.values() for f in fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


# options that only one tokenizer or mode reads: given elsewhere they would be dropped without a word
ONLY_FOR = {"lowercase": ("tokenizer", "word"), "min_freq": ("tokenizer", "word"), "max_vocab": ("tokenizer", "word"),
            "bpe_vocab_size": ("tokenizer", "bpe"), "eos": ("pairs", False)}


def configs_from_args(args: argparse.Namespace, base: Optional[dict[str, Any]] = None):
    """Defaults < ``base`` < preset (``--preset``, else the file's ``preset:``) < YAML file (``--config``) < options
    given on the command line."""
    from .presets import preset_values

    values: dict[str, Any] = dict(base or {})
    where = "options"
    given = dict(given_config_values(args))
    from_file = read_config_file(args.config) if getattr(args, "config", None) else {}
    in_file = from_file.pop("preset", None)
    preset = getattr(args, "preset", None) or in_file
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
        if name in given and getattr(data, field_name) != needed:
            what = f"the {needed} tokenizer" if field_name == "tokenizer" else "plain text (not --pairs)"
            logging.getLogger("wordformer").warning("%s is ignored: it applies to %s only", name, what)
    return configs


# ---------------------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .training import config_from_checkpoint, is_rank_zero, train

    if args.resume is not None:
        out = Path(args.resume)
        if not args.resume.strip() or not (out / "last.ckpt").is_file():
            raise WordformerError(f"nothing to resume in {args.resume!r}: it holds no last.ckpt; give the --out "
                                  "folder of an earlier `wordformer train`")
        model_cfg, data_cfg, train_cfg = config_from_checkpoint(out / "last.ckpt")
        if args.out is not None and Path(args.out).resolve() != out.resolve():
            raise WordformerError(f"--resume {out} continues that run in its own folder; drop --out {args.out} (to "
                                  f"branch off, copy the folder first and resume the copy)")
        base = {**asdict(model_cfg), **asdict(data_cfg), **asdict(train_cfg)}
        base.pop("vocab_size")
        model_cfg, data_cfg, train_cfg = configs_from_args(args, base)
    else:
        out = Path(args.out or TRAIN_OUT)
        model_cfg, data_cfg, train_cfg = configs_from_args(args)
    source = data_cfg.data or "the built-in corpus (Python documentation topics)"
    if is_rank_zero():
        print(f"wordformer: training on {source} with the {data_cfg.tokenizer} tokenizer -> {out}", file=sys.stderr)
    result = train(model_cfg, data_cfg, train_cfg, out, resume=args.resume is not None, overwrite=args.overwrite)
    if is_rank_zero():
        report_training(result)
    return 0


def report_training(result: Any) -> None:
    m = result.metrics
    print(f"steps: {result.steps}   parameters: {result.num_parameters:,}   time: {result.seconds:.1f} s")
    print(f"validation: loss {m.get('val_loss', float('nan')):.4f}   perplexity {m.get('val_ppl', float('nan')):.2f}   "
          f"accuracy {m.get('val_acc', float('nan')):.3f}   (best loss {result.val_loss:.4f})")
    print(f"checkpoints: {result.best_checkpoint} (best), {result.last_checkpoint} (last)")
    print(f"logs: {result.out_dir / 'logs'} (CSV and TensorBoard)")


def _prompt_arg(args: argparse.Namespace) -> str:
    if args.prompt is None:
        raise WordformerError("give a prompt with --prompt TEXT")
    return args.prompt


def cmd_generate(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .generate import check_sampling

    check_sampling(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
    if args.num_samples < 1:
        raise WordformerError(f"--num-samples={args.num_samples} must be >= 1")
    loaded = load_checkpoint(args.checkpoint)
    prompt = _prompt_arg(args)
    append_eos = loaded.pairs if args.append_eos is None else args.append_eos
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i
        text = loaded.generate(prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                               top_k=args.top_k, top_p=args.top_p, seed=seed, append_eos=append_eos,
                               use_cache=not args.no_cache)
        sep = " <eos> " if append_eos else ("" if loaded.tokenizer.kind != "word" else " ")
        print(f"{prompt}{sep}{text}")
        if args.num_samples > 1 and i < args.num_samples - 1:
            print("---")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint

    loaded = load_checkpoint(args.checkpoint)
    append_eos = loaded.pairs if args.append_eos is None else args.append_eos
    predictions = loaded.predict_next(_prompt_arg(args), args.k, append_eos=append_eos)
    if args.json:
        print(json.dumps([{"token": t, "probability": p} for t, p in predictions]))
        return 0
    print(f"next token after {args.prompt!r}:")
    for rank, (token, prob) in enumerate(predictions, 1):
        print(f"{rank:>3}. {token!r:<20} {prob:.4f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .evaluate import evaluate

    loaded = load_checkpoint(args.checkpoint)
    metrics = evaluate(loaded, args.data, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(metrics))
    else:
        where = args.data or "the validation split of its training corpus"
        print(f"on {where}: loss {metrics['loss']:.4f}   perplexity {metrics['perplexity']:.2f}   "
              f"accuracy {metrics['accuracy']:.4f}   ({metrics['tokens']} tokens)")
    return 0


# small enough for ~2 minutes on a laptop CPU: a word-level model on the ~110k-token built-in corpus
DEMO_OPTIONS = dict(tokenizer="word", min_freq=2, block_size=32, d_model=64, num_heads=4, num_layers=2,
                    batch_size=32, lr=3e-3, min_lr=3e-4, warmup_steps=100, max_steps=4000, dropout=0.1,
                    eval_interval=500, max_time=110.0)
DEMO_PROMPTS = ("the python", "a function is", "the list")


TRAIN_OUT = "runs/train"


def _check_demo_out(out: Path) -> None:
    """The demo replaces its own earlier output, never a run that `wordformer train` made."""
    from .training import DEMO_MARK

    if not out.is_dir() or (out / DEMO_MARK).exists():
        return
    held = [p for p in (out / "last.ckpt", out / "best.ckpt", out / "logs") if p.exists()]
    if held:  # `wordformer train` into the folder (a resume too) removes the mark: the run is the user's now
        raise WordformerError(f"{out} holds a training run that `wordformer demo` did not make (or one it did not "
                              "finish); choose another --out for the demo, or delete the folder")


def cmd_demo(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .training import DEMO_MARK, train

    model_cfg, data_cfg, train_cfg = configs_from_args(args, DEMO_OPTIONS)
    out = Path(args.out)
    _check_demo_out(out)
    print(f"wordformer demo: training a {model_cfg.num_layers}-layer word predictor on the Python documentation "
          f"topics for up to {train_cfg.max_time:.0f} s (CPU is fine) -> {out}", file=sys.stderr)
    result = train(model_cfg, data_cfg, train_cfg, out, overwrite=True)
    (out / DEMO_MARK).write_text("made by `wordformer demo`, which replaces this folder on its next run\n")
    report_training(result)
    loaded = load_checkpoint(result.best_checkpoint)
    print("\nsamples (temperature 0.8, top-k 40):")
    for i, prompt in enumerate(DEMO_PROMPTS):
        text = loaded.generate(prompt, max_new_tokens=25, temperature=0.8, top_k=40, seed=i)
        print(f"  {prompt} | {text}")
    print("\nthe word predictor's top next words:")
    for prompt in DEMO_PROMPTS:
        top = ", ".join(f"{t} {p:.2f}" for t, p in loaded.predict_next(prompt, 5))
        print(f"  {prompt} -> {top}")
    ckpt = result.best_checkpoint
    print(f"\ncheckpoint: {ckpt}\nnext:\n"
          f"  wordformer generate --checkpoint {ckpt} --prompt \"the list\" --temperature 0.8 --top-k 40\n"
          f"  wordformer predict --checkpoint {ckpt} --prompt \"a function\" --k 5\n"
          f"  wordformer evaluate --checkpoint {ckpt}\n"
          f"  wordformer train --data YOUR_TEXT.txt --out runs/mine      (your own text)")
    return 0


# ---------------------------------------------------------------------------------------- parser


def _sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate (default: 50)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature; 0 or below means greedy (default: 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample only from the k most likely tokens (default: off)")
    p.add_argument("--top-p", type=float, default=None,
                   help="sample only from the smallest set with this much probability, in (0, 1] (default: off)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples (default: none)")
    p.add_argument("--num-samples", type=int, default=1, help="how many continuations (default: 1)")
    p.add_argument("--no-cache", action="store_true", help="decode without the KV cache (default: cache on)")


def _checkpoint_prompt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by `wordformer train` (required)")
    p.add_argument("--prompt", default=None, help="the input text (required)")
    p.add_argument("--append-eos", action=argparse.BooleanOptionalAction, default=None,
                   help="end the prompt with <eos> so the answer starts (default: on for models trained with --pairs)")


Registrar = Callable[[Any], None]


def _optional_registrars() -> list[Registrar]:
    """Subcommands that live beside their library modules (tuning, tasks, downloads, plots, ...)."""
    found: list[Registrar] = []
    for module, name in (
        ("wordformer.tune.cli", "add_tune_parser"),
        ("wordformer.tasks.cli", "add_task_parser"),
        ("wordformer.download", "add_download_parser"),
        ("wordformer.plots_cli", "add_plot_parser"),
        ("wordformer.explain_cli", "add_explain_parser"),
        ("wordformer.export", "add_export_parser"),
        ("wordformer.presets_cli", "add_parser"),
    ):
        try:
            mod = __import__(module, fromlist=[name])
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("wordformer"):
                continue
            raise
        found.append(getattr(mod, name))
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wordformer",
        description="Build, train, understand and tune decoder-only transformer word predictors.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a word predictor; writes OUT/best.ckpt, OUT/last.ckpt and logs")
    p.add_argument("--out", default=None, help=f"output folder (default: {TRAIN_OUT})")
    p.add_argument("--config", default=None, help="YAML file of options; command-line options override it")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from DIR/last.ckpt")
    p.add_argument("--overwrite", action="store_true", help="replace checkpoints already in --out")
    add_config_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="continue a prompt with a trained model")
    _checkpoint_prompt(p)
    _sampling_options(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("predict", help="the k most likely next tokens after a prompt")
    _checkpoint_prompt(p)
    p.add_argument("--k", type=int, default=5, help="how many tokens (default: 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="loss, perplexity and accuracy on held-out data")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by `wordformer train` (required)")
    p.add_argument("--data", default=None,
                   help="held-out text (file or folder; pairs file for pair models); default: the validation split")
    p.add_argument("--batch-size", type=int, default=32, help="windows per batch (default: 32)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="train on the built-in corpus for about two minutes, then generate and predict")
    p.add_argument("--out", default="runs/demo", help="output folder, replaced on each demo (default: runs/demo)")
    p.add_argument("--config", default=None, help="YAML file of options overriding the demo's")
    add_config_options(p)
    p.set_defaults(func=cmd_demo)

    for register in _optional_registrars():
        register(sub)
    return parser


class _QuietLightning(logging.Filter):
    """Drop Lightning's informational lines (GPU available, tips) unless --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(("lightning", "pytorch_lightning"))


TRAINING_COMMANDS = {"train", "demo", "tune", "task"}


def _setup_logging(verbose: bool, command: str) -> None:
    # A root handler exists before Lightning is imported, so Lightning propagates to it instead of adding
    # its own handler; the filter then works without importing Lightning here (which costs seconds).
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="wordformer: %(message)s")
    if verbose:
        return
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietLightning())
    if command in TRAINING_COMMANDS:  # Lightning adds its own console handler when imported: quiet it too
        import lightning  # noqa: F401

        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            for handler in logging.getLogger(name).handlers:
                handler.addFilter(_QuietLightning())
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _setup_logging(args.verbose, args.command)  # imports Lightning for training commands: seconds
        return int(args.func(args) or 0)
    except WordformerError as exc:
        print(f"wordformer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"wordformer: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `wordformer generate ... | head -1`: the reader left, which is not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain again
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
