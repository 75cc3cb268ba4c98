"""``wordformer task {reverse,anomaly} {train,test,attention}``: the tutorial 6 tasks on the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from ..errors import WordformerError, check_int
from .options import add_checkpoint, add_json

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


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def _reverse_train(args: argparse.Namespace) -> int:
    from ..tasks.reverse import ReverseConfig, train_reverse

    config = ReverseConfig(train_size=args.train_size, batch_size=args.batch_size)
    result = train_reverse(args.out, epochs=args.epochs, seed=args.seed, config=config, accelerator=args.accelerator,
                           overwrite=args.overwrite)
    line = (f"reverse: test accuracy {result.test_accuracy:.4f}   loss {result.test_loss:.4f}   "
            f"({_epochs(args.epochs)}, {result.seconds:.0f} s)   checkpoint {result.checkpoint}")
    return _emit(args, _result_payload(result), line)


def _reverse_test(args: argparse.Namespace) -> int:
    from ..tasks.reverse import evaluate_reverse

    path = _checkpoint(args, "reverse.ckpt")
    metrics = evaluate_reverse(path, num_test=args.num_test, seed=args.seed)
    line = (f"reverse: accuracy {metrics['accuracy']:.4f}   loss {metrics['loss']:.4f}   "
            f"({int(metrics['num_sequences'])} sequences, {path})")
    return _emit(args, {"checkpoint": str(path), **metrics}, line)


def _reverse_attention(args: argparse.Namespace) -> int:
    import torch

    from ..plots import check_image_path, plot_attention_maps, save_figure
    from ..tasks.reverse import load_reverse_module, reverse_attention_maps

    check_image_path(args.plot, option="--plot")
    path = _checkpoint(args, "reverse.ckpt")
    module, data = load_reverse_module(path)
    cfg = module.model.config
    length = check_int("seq_len", data.get("seq_len", 16))  # the tutorial's files carry no data info: it was 16
    seq = torch.randint(cfg.input_dim, (1, length), generator=torch.Generator().manual_seed(args.seed))
    maps = [m[0] for m in reverse_attention_maps(path, seq)]  # L x (H, T, T)
    labels = [str(int(v)) for v in seq[0]]
    fig = plot_attention_maps(maps, labels, title="reverse task: attention of each output position (rows) "
                              "over the input (columns)", causal=False)
    written = save_figure(fig, args.plot)
    return _emit(args, {"plot": str(written)}, f"wrote {written}")


def _anomaly_train(args: argparse.Namespace) -> int:
    from ..tasks.anomaly import train_anomaly

    result = train_anomaly(args.out, epochs=args.epochs, seed=args.seed, source=args.source, data_dir=args.data_dir,
                           download=args.download, accelerator=args.accelerator, overwrite=args.overwrite)
    line = (f"anomaly ({args.source}): test accuracy {result.test_accuracy:.4f}   loss {result.test_loss:.4f}   "
            f"({_epochs(args.epochs)}, {result.seconds:.0f} s)   checkpoint {result.checkpoint}")
    return _emit(args, _result_payload(result), line)


def _anomaly_test(args: argparse.Namespace) -> int:
    from ..tasks.anomaly import evaluate_anomaly

    path = _checkpoint(args, "anomaly.ckpt")
    metrics = evaluate_anomaly(path, seed=args.seed, features=args.features, data_dir=args.data_dir,
                               download=args.download)
    line = (f"anomaly: accuracy {metrics['accuracy']:.4f}   loss {metrics['loss']:.4f}   "
            f"({int(metrics['num_sets'])} sets, {path})")
    return _emit(args, {"checkpoint": str(path), **metrics}, line)


HANDLERS: dict[tuple[str, str], Callable[[argparse.Namespace], int]] = {
    ("reverse", "train"): _reverse_train, ("reverse", "test"): _reverse_test,
    ("reverse", "attention"): _reverse_attention,
    ("anomaly", "train"): _anomaly_train, ("anomaly", "test"): _anomaly_test,
}


def run_task(args: argparse.Namespace) -> int:
    return HANDLERS[(args.task, args.action)](args)


def _common(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--out", default=out_default, help=f"run folder (default: {out_default})")
    add_json(p)


def _trainer_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu (default: auto)")
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} already in --out")


def add_task(task: argparse.ArgumentParser) -> None:
    kinds = task.add_subparsers(dest="task", metavar="TASK", required=True)

    reverse = kinds.add_parser("reverse", help="reverse random sequences of 10 categories (length 16)")
    actions = reverse.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("train", help="train with the tutorial's settings; writes OUT/reverse.ckpt")
    _common(p, REVERSE_OUT)
    p.add_argument("--epochs", type=int, default=10, help="epochs (default: 10)")
    p.add_argument("--seed", type=int, default=42, help="seed of data and initialisation (default: 42)")
    p.add_argument("--train-size", type=int, default=50_000, help="training sequences per epoch (default: 50000)")
    p.add_argument("--batch-size", type=int, default=128, help="sequences per batch (default: 128)")
    _trainer_options(p, "a reverse.ckpt")
    p = actions.add_parser("test", help="accuracy on fresh random sequences; also reads the tutorial's ReverseTask.ckpt")
    _common(p, REVERSE_OUT)
    add_checkpoint(p, required=False, help="checkpoint to test (default: OUT/reverse.ckpt)")
    p.add_argument("--num-test", type=int, default=10_000, help="test sequences (default: 10000)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the test sequences (default: 1234)")
    p = actions.add_parser("attention", help="plot the attention maps for one random sequence (the anti-diagonal)")
    _common(p, REVERSE_OUT)
    add_checkpoint(p, required=False, help="checkpoint to plot (default: OUT/reverse.ckpt)")
    p.add_argument("--seed", type=int, default=0, help="seed of the plotted sequence (default: 0)")
    p.add_argument("--plot", required=True, help="image to write, .png or .svg (replaced if it exists; required)")

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
    _trainer_options(p, "an anomaly.ckpt")
    p = actions.add_parser("test", help="accuracy on one test set per test image; also reads SetAnomalyTask.ckpt")
    _common(p, ANOMALY_OUT)
    add_checkpoint(p, required=False, help="checkpoint to test (default: OUT/anomaly.ckpt)")
    p.add_argument("--seed", type=int, default=42, help="seed of the test sets (default: 42, the tutorial's)")
    p.add_argument("--features", default=None,
                   help="test features: a file with {'features','labels'} tensors, or the tutorial's "
                        "test_set_features.tar")
    p.add_argument("--data-dir", default=None, help="CIFAR-100 folder, for CIFAR-trained checkpoints")
    p.add_argument("--download", action="store_true", help="download CIFAR-100 into --data-dir")
