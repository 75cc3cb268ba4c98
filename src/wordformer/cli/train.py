"""``wordformer train``, ``wordformer demo`` and ``wordformer presets``: build the configs from options (or list the
named bundles of them), train, report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import WordformerError
from ..presets import preset_values
from ..schedule import RESUME_SCHEDULES
from .options import add_config_options, configs_from_args

TRAIN_OUT = "runs/train"
DEMO_OUT = "runs/demo"
# small enough for ~2 minutes on a laptop CPU: a word-level model on the ~110k-token built-in corpus
DEMO_SIZES = dict(tokenizer="word", min_freq=2, block_size=32, d_model=64, num_heads=4, num_layers=2,
                  batch_size=32, warmup_steps=100, max_steps=4000, dropout=0.1, eval_interval=500, max_time=110.0)
# fast (RoPE + Muon): within the demo's 110 s its best validation loss was 2.69 against the chapter preset's 2.76
# (lr 3e-3; median of 3 seeds, BENCHMARKS.md section 12); `--preset chapter` trains the chapter's model instead
DEMO_PRESET = "fast"
DEMO_OPTIONS = {**preset_values(DEMO_PRESET), **DEMO_SIZES}
DEMO_PROMPTS = ("the python", "a function is", "the list")


def add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help=f"output folder (default: {TRAIN_OUT})")
    p.add_argument("--config", default=None,
                   help="YAML file of options; command-line options override it; relative paths in it (data, "
                        "cache_dir) are read from the file's folder")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from DIR/last.ckpt")
    p.add_argument("--resume-schedule", choices=RESUME_SCHEDULES, default=None,
                   help="with --resume and a new --max-steps, what the learning rate does: continue (its saved "
                        "schedule; at min_lr once the old --max-steps is passed), decay (a new cosine decay from the "
                        "rate reached to min_lr by the new --max-steps) or restart (the same from the peak lr) "
                        "(default: continue)")
    p.add_argument("--overwrite", action="store_true", help="replace checkpoints already in --out")
    add_config_options(p)


def precheck_train(args: argparse.Namespace) -> None:
    """What can be refused before torch and Lightning load (seconds): the options, and an --out that already
    holds a run."""
    from ..runs import refuse_earlier_run, resume_folder

    if args.resume_schedule is not None and args.resume is None:
        raise WordformerError("--resume-schedule applies to a resumed run only; give it with --resume DIR")
    if args.resume is None:
        configs_from_args(args)
        refuse_earlier_run(Path(args.out or TRAIN_OUT), resume=False, overwrite=args.overwrite)
    else:
        resume_folder(args.resume, args.out)


def run_train(args: argparse.Namespace) -> int:
    from ..checkpoint import saved_options
    from ..runs import resume_folder
    from ..training import is_rank_zero, train

    if args.resume is not None:
        out = resume_folder(args.resume, args.out)
        configs = configs_from_args(args, saved_options(out))
    else:
        out = Path(args.out or TRAIN_OUT)
        configs = configs_from_args(args, warn=False)  # precheck_train said what it had to say
    model_cfg, data_cfg, train_cfg = configs
    source = data_cfg.data or "the built-in corpus (Python documentation topics)"
    if is_rank_zero():
        print(f"wordformer: training on {source} with the {data_cfg.tokenizer} tokenizer -> {out}", file=sys.stderr)
    result = train(model_cfg, data_cfg, train_cfg, out, resume=args.resume is not None,
                   resume_schedule=args.resume_schedule, overwrite=args.overwrite)
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


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEMO_OUT, help=f"output folder, replaced on each demo (default: {DEMO_OUT})")
    p.add_argument("--config", default=None,
                   help="YAML file of options overriding the demo's; relative paths in it are read from its folder")
    add_config_options(p, default_preset=DEMO_PRESET)


def precheck_demo(args: argparse.Namespace) -> None:
    """The options and the --out folder, before torch and Lightning load."""
    from ..runs import check_demo_out

    configs_from_args(args, DEMO_OPTIONS)
    check_demo_out(Path(args.out))


def run_demo(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..runs import check_demo_out, mark_demo
    from ..serve.server import DEMO_CHECKPOINT
    from ..training import train

    model_cfg, data_cfg, train_cfg = configs_from_args(args, DEMO_OPTIONS, warn=False)  # precheck_demo warned
    out = Path(args.out)
    check_demo_out(out)
    print(f"wordformer demo: training a {model_cfg.num_layers}-layer word predictor ({model_cfg.positional} "
          f"positions, {train_cfg.optimizer}) on the Python documentation topics for up to "
          f"{train_cfg.max_time:.0f} s (CPU is fine) -> {out}", file=sys.stderr)
    result = train(model_cfg, data_cfg, train_cfg, out, overwrite=True)
    mark_demo(out)
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
          f"  wordformer train --data YOUR_TEXT.txt --out runs/mine --preset fast      (your own text; "
          "without --preset fast: the chapter's model)\n"
          f"  wordformer serve{'' if ckpt == DEMO_CHECKPOINT else f' --checkpoint {ckpt}'}"
          "      (the page at http://127.0.0.1:8000/ and an OpenAI-compatible API at /v1)")
    return 0


def add_presets(p: argparse.ArgumentParser) -> None:
    from ..presets import preset_names

    p.add_argument("name", nargs="?", choices=preset_names(), default=None, help="show only this preset")
    p.add_argument("--yaml", action="store_true", help="print the preset as a YAML config file (needs NAME)")


def run_presets(args: argparse.Namespace) -> int:
    from ..presets import DEFAULT_PRESET, PRESETS, preset_names, preset_yaml

    if args.yaml:
        if args.name is None:
            raise WordformerError("--yaml prints one preset: give its name, e.g. `wordformer presets fast --yaml`")
        print(preset_yaml(args.name), end="")
        return 0
    for name in [args.name] if args.name else preset_names():
        default = {DEFAULT_PRESET: " (the default)", DEMO_PRESET: " (wordformer demo's default)"}.get(name, "")
        print(f"{name}{default}: {PRESETS[name].summary}")
        print("  " + ", ".join(f"{k}={shown(v)}" for k, v in preset_values(name).items()))
    return 0


def shown(value: Any) -> str:
    """A config value as YAML spells it: null, true/false, 0.003."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)
