"""The ``wordformer`` command: one table of commands, one error handler, one place that sets up logging.

Each command group is a module of this package (``train.py``: train and demo; ``infer.py``: generate,
predict, evaluate, explain; ...) with an ``add_<command>(parser)`` that declares its options and a
``run_<command>(args)`` that parses nothing more, calls the library and prints. User mistakes arrive here as
:class:`~wordformer.errors.WordformerError` and become one line on stderr with exit status 2; anything
else is a bug and keeps its traceback. Building the parser imports no torch, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

from ..errors import WordformerError


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, the module of this package that holds it, and the one-line help."""

    name: str
    module: str
    help: str
    description: Optional[str] = None
    trains: bool = False  # imports Lightning, whose console lines are quieted before it starts


COMMANDS: tuple[Command, ...] = (
    Command("train", "train", "train a word predictor; writes OUT/best.ckpt, OUT/last.ckpt and logs", trains=True),
    Command("demo", "train", "train on the built-in corpus for about two minutes, then generate and predict",
            trains=True),
    Command("presets", "train", "list the presets (--preset NAME of train, demo, tune) and what each sets",
            "Presets are named bundles of options; options given beside --preset (on the command line or in "
            "--config) override it. `wordformer presets NAME --yaml` prints one as a config file."),
    Command("generate", "infer", "continue a prompt with a trained model",
            "Print the prompt as the model read it (a word model's lowercasing and <unk> shown; ' <eos> ' after a "
            "pairs model's question), then the continuation, joined as the tokenizer joins tokens: the line that "
            "Python's generate(..., echo=True) returns. Unknown prompt words are named in a warning."),
    Command("predict", "infer", "the k most likely next tokens after a prompt",
            "Print the k most likely next tokens as the page shows them (a space as ␣, a line break as ↵, a "
            "piece of a character as its bytes); --json gives each token's text and that label. Unknown prompt "
            "words are named in a warning."),
    Command("evaluate", "infer", "loss, perplexity and accuracy on held-out data"),
    Command("explain", "infer", "the seven steps of masked self-attention for one token, with the model's own numbers",
            "Print query, keys, scaled dot products, softmax weights, values, weighted values and their sum for one "
            "token of the prompt, then the residual connection and the next-token probabilities. Defaults: the last "
            "token, layer 0, head 0."),
    Command("plot", "plot", "draw attention, positional encoding, lr schedule, embeddings or curves"),
    Command("tune", "tune", "tune hyperparameters with Optuna (`wordformer tune report` for the table and plots)",
            "Run or continue an Optuna study whose trials are real training runs, or (action `report`) print and "
            "plot a study. Options of train set the base config; each one given here is fixed for all trials and "
            "leaves the search space (so --max-steps is the per-trial step budget). The storage opens in "
            "`optuna-dashboard URL`.", trains=True),
    Command("export", "files", "convert a checkpoint to safetensors (loading runs no code) or to a HuggingFace folder "
                               "(transformers loads model and tokenizer)"),
    Command("download", "files", "fetch a pretrained file into the local cache and print its path",
            "Fetch a registry file or URL into the cache (reused when already there) and print its path."),
    Command("task", "task", "the tutorial 6 tasks: sequence reversal and set anomaly detection", trains=True),
    Command("serve", "serve", "serve trained models: a page that shows how they work, and an OpenAI-compatible API",
            "Load the checkpoints once and serve, until Ctrl-C, the page at / and the OpenAI-compatible API at /v1 "
            "(completions, chat completions for --pairs models, the model list). Without --checkpoint it serves the "
            "demo's run (runs/demo/best.ckpt)."),
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wordformer")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wordformer",
        description="Build, train, understand and tune decoder-only transformer word predictors.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and warnings")
    parser.add_argument("--version", action="version", version=f"wordformer {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        module = importlib.import_module(f".{command.module}", __name__)
        p = sub.add_parser(command.name, help=command.help, description=command.description or command.help)
        getattr(module, f"add_{command.name}")(p)
        # precheck_<name> (optional): refusals that need no torch, made before the slow imports
        p.set_defaults(handler=getattr(module, f"run_{command.name}"),
                       precheck=getattr(module, f"precheck_{command.name}", None))
    return parser


class _QuietLightning(logging.Filter):
    """Drop Lightning's informational lines (GPU available, tips) unless --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(("lightning", "pytorch_lightning"))


def _setup_logging(verbose: bool) -> None:
    # A root handler exists before Lightning is imported, so Lightning propagates to it instead of adding
    # its own handler; the filter then works without importing Lightning here (which costs seconds).
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="wordformer: %(message)s")
    if verbose:
        return
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietLightning())


def _quiet_libraries(verbose: bool, trains: bool) -> None:
    """Lightning's console lines and the libraries' warnings stay out of the output unless --verbose."""
    if verbose:
        return
    if trains:  # Lightning adds its own console handler when imported: quiet it too
        import lightning  # noqa: F401

        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            for handler in logging.getLogger(name).handlers:
                handler.addFilter(_QuietLightning())
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def with_flags(message: str, args: argparse.Namespace) -> str:
    """Name each value the way the user gave it: the library says ``top_k=0`` (its parameter), the command line
    was ``--top-k 0``. Only options of the command that ran and that hold a value (config options given on the
    command line, every other option) are renamed; a value from a --config file keeps its field name."""
    for dest in vars(args):
        message = re.sub(rf"(?<![\w-]){re.escape(dest)}=", "--" + dest.replace("_", "-") + " ", message)
    return message


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns the exit status (0, 1 for a result that is not a success, 2 for bad input)."""
    args = build_parser().parse_args(argv)
    trains = next(c.trains for c in COMMANDS if c.name == args.command)
    try:
        _setup_logging(args.verbose)
        if args.precheck is not None:
            args.precheck(args)  # before the slow imports: a refused --out costs no seconds
        _quiet_libraries(args.verbose, trains)  # imports Lightning for training commands: seconds
        return int(args.handler(args) or 0)
    except WordformerError as exc:
        print(f"wordformer: error: {with_flags(str(exc), args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"wordformer: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `wordformer generate ... | head -1`: the reader left, which is not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain again
        return 1
