"""``wordformer task {reverse,anomaly} {train,test}``: the command-line face of the tutorial 6 tasks.

This is the only module of the package that prints. Handlers return an exit code; user mistakes
raise :class:`~wordformer.errors.WordformerError`, which the main CLI prints as one line (exit 2).
Heavy imports happen inside the handlers so ``wordformer --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import WordformerError

REVERSE_OUT = "runs/task-reverse"
ANOMALY_OUT = "runs/task-anomaly"


def _checkpoint(args: argparse.Namespace, name: str) -> Path:
    """--checkpoint if given, else the file `train` wrote into --out."""
    path = Path(args.checkpoint) if args.checkpoint else Path(args.out) / name
    if not path.is_file():
        hint = ("pass an existing --checkpoint PATH" if args.checkpoint
                else f"run `wordformer task {args.task} train --out {args.out}` first or pass --checkpoint PATH")
        raise WordformerError(f"checkpoint {path} not found: {hint}")
    return path


def _result_payload(result: Any) -> dict[str, Any]:
    """The JSON form of a ReverseResult or AnomalyResult (same fields)."""
    return {"checkpoint": str(result.checkpoint), "test_accuracy": result.test_accuracy, "test_loss": result.test_loss,
            "val_accuracy": result.val_accuracy, "seconds": result.seconds}


def _emit(args: argparse.Namespace, payload: dict[str, Any], line: str) -> int:
    print(json.dumps(payload) if args.json else line)
    return 0


def cmd_reverse_train(args: argparse.Namespace) -> int:
    from .reverse import ReverseConfig, train_reverse

    config = ReverseConfig(train_size=args.train_size, batch_size=args.batch_size)
    result = train_reverse(args.out, epochs=args.epochs, seed=args.seed, config=config, accelerator=args.accelerator,
                           overwrite=args.overwrite)
    payload = _result_payload(result)
    line = (f"reverse: test accuracy {result.test_accuracy:.4f}   loss {result.test_loss:.4f}   "
            f"({args.epochs} epochs, {result.seconds:.0f} s)   checkpoint {result.checkpoint}")
    return _emit(args, payload, line)


def cmd_reverse_test(args: argparse.Namespace) -> int:
    from .reverse import evaluate_reverse

    path = _checkpoint(args, "reverse.ckpt")
    metrics = evaluate_reverse(path, num_test=args.num_test, seed=args.seed)
    line = (f"reverse: accuracy {metrics['accuracy']:.4f}   loss {metrics['loss']:.4f}   "
            f"({int(metrics['num_sequences'])} sequences, {path})")
    return _emit(args, {"checkpoint": str(path), **metrics}, line)


def cmd_anomaly_train(args: argparse.Namespace) -> int:
    from .anomaly import train_anomaly

    result = train_anomaly(args.out, epochs=args.epochs, seed=args.seed, source=args.source, data_dir=args.data_dir,
                           download=args.download, accelerator=args.accelerator, overwrite=args.overwrite)
    payload = _result_payload(result)
    line = (f"anomaly ({args.source}): test accuracy {result.test_accuracy:.4f}   loss {result.test_loss:.4f}   "
            f"({args.epochs} epochs, {result.seconds:.0f} s)   checkpoint {result.checkpoint}")
    return _emit(args, payload, line)


def cmd_anomaly_test(args: argparse.Namespace) -> int:
    from .anomaly import evaluate_anomaly

    path = _checkpoint(args, "anomaly.ckpt")
    metrics = evaluate_anomaly(path, seed=args.seed, features=args.features, data_dir=args.data_dir, download=args.download)
    line = (f"anomaly: accuracy {metrics['accuracy']:.4f}   loss {metrics['loss']:.4f}   "
            f"({int(metrics['num_sets'])} sets, {path})")
    return _emit(args, {"checkpoint": str(path), **metrics}, line)


def _common(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--out", default=out_default, help=f"run folder (default: {out_default})")
    p.add_argument("--json", action="store_true", help="print JSON")


def _check_plot_path(plot: str) -> None:
    """Refuse, before any work, an image path that cannot be written: through a file, or onto a folder."""
    from ..errors import file_in_the_way

    blocker = file_in_the_way(Path(plot).parent)
    if blocker is not None:
        raise WordformerError(f"cannot write --plot {plot}: {blocker} is a file, not a folder; choose another --plot")
    if Path(plot).is_dir():
        raise WordformerError(f"cannot write --plot {plot}: it is a folder; choose a file name ending in .png or .svg")


def cmd_reverse_attention(args: argparse.Namespace) -> int:
    import torch

    from ..plots import check_image_path, plot_attention_maps, save_figure
    from .reverse import _check_int, load_reverse_module, reverse_attention_maps

    check_image_path(args.plot)
    _check_plot_path(args.plot)
    path = _checkpoint(args, "reverse.ckpt")
    module, data = load_reverse_module(path)
    cfg = module.model.config
    length = data.get("seq_len", 16)  # the tutorial's files carry no data info: its length was 16
    _check_int("seq_len", length)
    seq = torch.randint(cfg.input_dim, (1, length), generator=torch.Generator().manual_seed(args.seed))
    maps = [m[0] for m in reverse_attention_maps(path, seq)]  # L x (H, T, T)
    labels = [str(int(v)) for v in seq[0]]
    fig = plot_attention_maps(maps, labels, title="reverse task: attention of each output position (rows) "
                              "over the input (columns)", causal=False)
    written = save_figure(fig, args.plot)
    return _emit(args, {"plot": str(written)}, f"wrote {written}")


def add_task_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``task`` on the main CLI's subparsers; each leaf sets ``func`` to its handler."""
    task = subparsers.add_parser("task", help="the tutorial 6 tasks: sequence reversal and set anomaly detection")
    kinds = task.add_subparsers(dest="task", metavar="TASK", required=True)

    reverse = kinds.add_parser("reverse", help="reverse random sequences of 10 categories (length 16)")
    actions = reverse.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("train", help="train with the tutorial's settings; writes OUT/reverse.ckpt")
    _common(p, REVERSE_OUT)
    p.add_argument("--epochs", type=int, default=10, help="epochs (default: 10)")
    p.add_argument("--seed", type=int, default=42, help="seed of data and initialisation (default: 42)")
    p.add_argument("--train-size", type=int, default=50_000, help="training sequences per epoch (default: 50000)")
    p.add_argument("--batch-size", type=int, default=128, help="sequences per batch (default: 128)")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu (default: auto)")
    p.add_argument("--overwrite", action="store_true", help="replace a reverse.ckpt already in --out")
    p.set_defaults(func=cmd_reverse_train)
    p = actions.add_parser("test", help="accuracy on fresh random sequences; also reads the tutorial's ReverseTask.ckpt")
    _common(p, REVERSE_OUT)
    p.add_argument("--checkpoint", default=None, help="checkpoint to test (default: OUT/reverse.ckpt)")
    p.add_argument("--num-test", type=int, default=10_000, help="test sequences (default: 10000)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the test sequences (default: 1234)")
    p.set_defaults(func=cmd_reverse_test)
    p = actions.add_parser("attention", help="plot the attention maps for one random sequence (the anti-diagonal)")
    _common(p, REVERSE_OUT)
    p.add_argument("--checkpoint", default=None, help="checkpoint to plot (default: OUT/reverse.ckpt)")
    p.add_argument("--seed", type=int, default=0, help="seed of the plotted sequence (default: 0)")
    p.add_argument("--plot", required=True, help="image to write, .png or .svg (replaced if it exists; required)")
    p.set_defaults(func=cmd_reverse_attention)

    anomaly = kinds.add_parser("anomaly", help="find the odd image out in sets of 10")
    actions = anomaly.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("train", help="train on image features; writes OUT/anomaly.ckpt")
    _common(p, ANOMALY_OUT)
    p.add_argument("--epochs", type=int, default=40, help="epochs (default: 40)")
    p.add_argument("--seed", type=int, default=42, help="seed of sets and initialisation (default: 42)")
    p.add_argument("--source", choices=("digits", "cifar100"), default="digits",
                   help="digits: scikit-learn's 8x8 digits, offline; cifar100: the tutorial's ResNet-34 features, "
                        "needs wordformer[vision] (default: digits)")
    p.add_argument("--data-dir", default=None, help="CIFAR-100 folder (cifar100 source only)")
    p.add_argument("--download", action="store_true", help="download CIFAR-100 into --data-dir")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu (default: auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an anomaly.ckpt already in --out")
    p.set_defaults(func=cmd_anomaly_train)
    p = actions.add_parser("test", help="accuracy on one test set per test image; also reads SetAnomalyTask.ckpt")
    _common(p, ANOMALY_OUT)
    p.add_argument("--checkpoint", default=None, help="checkpoint to test (default: OUT/anomaly.ckpt)")
    p.add_argument("--seed", type=int, default=42, help="seed of the test sets (default: 42, the tutorial's)")
    p.add_argument("--features", default=None,
                   help="test features: a file with {'features','labels'} tensors, or the tutorial's test_set_features.tar")
    p.add_argument("--data-dir", default=None, help="CIFAR-100 folder, for CIFAR-trained checkpoints")
    p.add_argument("--download", action="store_true", help="download CIFAR-100 into --data-dir")
    p.set_defaults(func=cmd_anomaly_test)
    return task


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Stand-alone entry (``python -m wordformer.tasks.cli reverse test ...``), same exit codes as the main CLI."""
    parser = argparse.ArgumentParser(prog="wordformer")
    add_task_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["task", *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.func(args) or 0)
    except WordformerError as exc:
        print(f"wordformer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
