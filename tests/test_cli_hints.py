"""Every hint names an option that the command printing it accepts.

The walk: for each command, inputs that make it suggest an option (errors, warnings, the interrupted line),
and for every ``--flag`` in what it prints, a check that the command's own parser has that flag. A hint that
quotes another command (```wordformer train --out DIR```, ``continue with: wordformer train --resume DIR``)
is checked against that command's parser instead. A static pass checks that no flag named anywhere in the
source is misspelt (it exists on some command).
"""

from __future__ import annotations

import argparse
import ast
import logging
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest

from conftest import SMALL_TEXT, TINY_TRAIN, run_cli
from wordformer.cli import build_parser

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?![\w-])")  # "--no-" + name builds a flag: not one
SPEAKER = re.compile(r"^wordformer(?: [a-z]+)?: (?:error: |interrupted: )?")  # the line's prefix, not a call
CALL = re.compile(r"wordformer ([^`;\n)]*)")  # a command the text tells the user to run
QUICK = ["--max-steps", "1", "--eval-interval", "1", "--eval-batches", "1"]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def descend(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of ``wordformer WORDS...`` (as deep as the words name subcommands) and the words left."""
    parser, rest = build_parser(), list(words)
    while rest and rest[0] in subparsers(parser):
        parser = subparsers(parser)[rest.pop(0)]
    return parser, rest


def accepted(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings if s.startswith("--")}


def named_flags(text: str, command: list[str]) -> list[tuple[str, str]]:
    """(flag, the command it must belong to) for every flag in ``text``, printed by ``wordformer COMMAND``."""
    found = []
    for line in text.splitlines():
        line = SPEAKER.sub("", line.strip())
        for call in CALL.finditer(line):
            parser, rest = descend(call.group(1).split())
            found += [(f, parser.prog) for f in FLAG.findall(" ".join(rest))]
        found += [(f, " ".join(["wordformer", *command])) for f in FLAG.findall(CALL.sub("", line))]
    return found


def check_hints(text: str, command: list[str]) -> list[str]:
    """Assert every flag in ``text`` exists where it is meant; returns the flags (so a case can check it hinted)."""
    pairs = named_flags(text, command)
    for flag, prog in pairs:
        parser, _ = descend(prog.split()[1:])
        assert flag in accepted(parser), f"`{prog}` prints {flag}, which it does not accept:\n{text}"
    return [f for f, _ in pairs]


def test_the_walker_attributes_quoted_commands_to_themselves():
    text = ("wordformer: error: checkpoint x does not exist; train one with `wordformer train --out DIR`\n"
            "wordformer: interrupted: at step 9, saved in o/last.ckpt — continue with: wordformer train --resume o\n"
            "wordformer: error: nothing: see `wordformer download --list` or pass --sha256")
    assert named_flags(text, ["generate"]) == [("--out", "wordformer train"), ("--resume", "wordformer train"),
                                               ("--list", "wordformer download"), ("--sha256", "wordformer generate")]
    with pytest.raises(AssertionError, match="does not accept"):
        check_hints("wordformer: error: x.txt is not UTF-8; pass --encoding-errors replace", ["generate"])


# ------------------------------------------------------------------------------------------ the cases


def _latin(tmp: Path) -> Path:
    path = tmp / "latin.txt"
    path.write_bytes(("caf\xe9 au lait et cr\xe8me\n" * 60).encode("latin-1"))
    return path


def _utf16(tmp: Path) -> Path:
    path = tmp / "wide.txt"
    path.write_bytes(SMALL_TEXT.encode("utf-16"))
    return path


def _pairs_as_text(tmp: Path) -> Path:
    path = tmp / "qa.tsv"
    path.write_text("".join(f"what is {i}\tthe number {i}\n" for i in range(80)))
    return path


def _small(tmp: Path) -> Path:
    path = tmp / "small.txt"
    path.write_text(SMALL_TEXT)
    return path


def _run(tmp: Path, run: Path) -> Path:
    copy = tmp / "copy"
    shutil.copytree(run, copy)
    return copy


def _moved(tmp: Path, _run_dir: Path) -> Path:
    """A fresh run whose corpus is then moved away."""
    from wordformer.cli import main

    data = _small(tmp)
    out = tmp / "moved-run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY_TRAIN, *QUICK]) == 0
    data.rename(tmp / "gone.txt")
    return out


Case = Callable[[Path, Path], list[str]]  # (tmp_path, trained_run) -> argv

CASES: dict[str, Case] = {
    # train
    "train: not UTF-8": lambda tmp, run: ["train", "--data", _latin(tmp), "--out", tmp / "o", *TINY_TRAIN],
    "train: UTF-16": lambda tmp, run: ["train", "--data", _utf16(tmp), "--out", tmp / "o", *TINY_TRAIN],
    "train: an earlier run in --out": lambda tmp, run: ["train", "--data", _small(tmp), "--out", run],
    "train: too short for a block": lambda tmp, run: ["train", "--data", _small(tmp), "--out", tmp / "o",
                                                      "--block-size", "5000"],
    "train: folder without .txt": lambda tmp, run: ["train", "--data", tmp, "--out", tmp / "o"],
    "train: pairs without data": lambda tmp, run: ["train", "--pairs", "--out", tmp / "o"],
    "train: option of another tokenizer": lambda tmp, run: ["train", "--data", _small(tmp), "--out", tmp / "o",
                                                            "--tokenizer", "char", "--min-freq", "2", "--block-size",
                                                            "5000"],
    "train: resume with another model": lambda tmp, run: ["train", "--resume", _run(tmp, run), "--d-model", "32"],
    "train: resume at its end": lambda tmp, run: ["train", "--resume", _run(tmp, run)],
    "train: resume into another --out": lambda tmp, run: ["train", "--resume", run, "--out", tmp / "o"],
    "train: resume-schedule without resume": lambda tmp, run: ["train", "--out", tmp / "o", "--resume-schedule",
                                                               "decay"],
    "train: a .tsv as plain text": lambda tmp, run: ["train", "--data", _pairs_as_text(tmp), "--out", tmp / "o",
                                                     *TINY_TRAIN, *QUICK],
    "train: d_model 2 under a norm": lambda tmp, run: ["train", "--data", _small(tmp), "--out", tmp / "o",
                                                       *TINY_TRAIN, *QUICK, "--d-model", "2", "--num-heads", "1"],
    "train: warm-up past the run": lambda tmp, run: ["train", "--data", _small(tmp), "--out", tmp / "o",
                                                     *TINY_TRAIN, *QUICK],  # TINY_TRAIN warms up 2 steps
    "train: bad option value": lambda tmp, run: ["train", "--data", _small(tmp), "--out", tmp / "o",
                                                 "--num-heads", "3", "--d-model", "16"],
    # demo
    "demo: a run of train in --out": lambda tmp, run: ["demo", "--out", run],
    # evaluate
    "evaluate: not UTF-8": lambda tmp, run: ["evaluate", "--checkpoint", run / "best.ckpt", "--data", _latin(tmp)],
    "evaluate: UTF-16": lambda tmp, run: ["evaluate", "--checkpoint", run / "best.ckpt", "--data", _utf16(tmp)],
    "evaluate: moved corpus": lambda tmp, run: ["evaluate", "--checkpoint", _moved(tmp, run)],
    "evaluate: encoding without data": lambda tmp, run: ["evaluate", "--checkpoint", run, "--encoding", "latin-1"],
    "evaluate: missing checkpoint": lambda tmp, run: ["evaluate", "--checkpoint", tmp / "none.ckpt"],
    "evaluate: bad batch size": lambda tmp, run: ["evaluate", "--checkpoint", run, "--batch-size", "0"],
    # generate, predict, explain
    "generate: no prompt": lambda tmp, run: ["generate", "--checkpoint", run],
    "generate: empty prompt": lambda tmp, run: ["generate", "--checkpoint", run, "--prompt", ""],
    "generate: bad top-k": lambda tmp, run: ["generate", "--checkpoint", run, "--prompt", "the", "--top-k", "0"],
    "generate: bad top-p": lambda tmp, run: ["generate", "--checkpoint", run, "--prompt", "the", "--top-p", "2"],
    "predict: bad k": lambda tmp, run: ["predict", "--checkpoint", run, "--prompt", "the", "--k", "0"],
    "explain: bad decimals": lambda tmp, run: ["explain", "--checkpoint", run, "--prompt", "the", "--decimals", "99"],
    # plot
    "plot: attention of a missing layer": lambda tmp, run: ["plot", "attention", "--checkpoint", run, "--prompt",
                                                            "the cat", "--layer", "7", "--out", tmp / "a.png"],
    "plot: attention of a missing head": lambda tmp, run: ["plot", "attention", "--checkpoint", run, "--prompt",
                                                           "the cat", "--head", "5", "--out", tmp / "a.png"],
    "plot: positional from two sources": lambda tmp, run: ["plot", "positional", "--checkpoint", run, "--d-model",
                                                           "8", "--out", tmp / "p.png"],
    "plot: lr with the floor above the peak": lambda tmp, run: ["plot", "lr", "--lr", "0.001", "--min-lr", "0.01",
                                                                "--out", tmp / "l.png"],
    "plot: --out through a file": lambda tmp, run: ["plot", "lr", "--out", _small(tmp) / "l.png"],
    "plot: curves of a folder without logs": lambda tmp, run: ["plot", "curves", "--run", tmp, "--out",
                                                               tmp / "c.png"],
    # files
    "export: over a file": lambda tmp, run: ["export", "--checkpoint", run, "--to", run / "best.ckpt"],
    "export: existing target": lambda tmp, run: ["export", "--checkpoint", run, "--to",
                                                 (tmp / "m.safetensors").write_bytes(b"x") and tmp / "m.safetensors"],
    "download: nothing named": lambda tmp, run: ["download"],
    "download: a name it does not know": lambda tmp, run: ["download", "gpt-17", "--offline", "--cache-dir", tmp],
    # tune
    "tune: retrain without steps": lambda tmp, run: ["tune", "--retrain-best", "--out", tmp / "t"],
    "tune: missing data": lambda tmp, run: ["tune", "--data", tmp / "none.txt", "--out", tmp / "t"],
    "tune: report of no study": lambda tmp, run: ["tune", "report", "--out", tmp / "t"],
    # task
    "task: test without a checkpoint": lambda tmp, run: ["task", "reverse", "test", "--out", tmp / "r"],
    "task: attention without a checkpoint": lambda tmp, run: ["task", "reverse", "attention", "--out", tmp / "r",
                                                              "--plot", tmp / "r.png"],
    # serve
    "serve: nothing to serve": lambda tmp, run: ["serve"],
}
SLOW = {"train: a .tsv as plain text", "train: d_model 2 under a norm", "train: warm-up past the run",
        "evaluate: moved corpus"}
MUST_HINT = {  # cases whose hint is the point: the flags they must name
    "train: not UTF-8": {"--encoding", "--encoding-errors"},
    "train: UTF-16": {"--encoding"},
    "train: a .tsv as plain text": {"--pairs"},
    "train: d_model 2 under a norm": {"--norm"},
    "train: warm-up past the run": {"--warmup-steps", "--max-steps"},
    "train: bad option value": {"--num-heads", "--d-model"},
    "evaluate: not UTF-8": {"--encoding", "--encoding-errors"},
    "evaluate: moved corpus": {"--data"},
    "generate: bad top-k": {"--top-k"},
    "generate: bad top-p": {"--top-p"},
    "predict: bad k": {"--k"},
    "plot: attention of a missing layer": {"--layer"},
    "plot: lr with the floor above the peak": {"--min-lr", "--lr"},
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_every_hint_names_an_option_of_the_command_that_prints_it(case, trained_run, tmp_path, capsys, caplog,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/demo here: serve cannot fall back to the demo's run
    extra = ["--warmup-steps", "5"] if case == "train: warm-up past the run" else []
    argv = [str(a) for a in CASES[case](tmp_path, trained_run)] + extra
    capsys.readouterr()  # what setting the case up printed is not the case's output
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="wordformer")  # the warnings are hints too
    try:
        code, out, err = run_cli(capsys, *argv)
    except SystemExit as exc:  # argparse's own refusals (a required option missing) name argparse's options
        code, out, err = exc.code, *capsys.readouterr()
    text = "\n".join([out, err, *(f"wordformer: {r.getMessage()}" for r in caplog.records if r.levelname == "WARNING")])
    named = check_hints(text, argv[:3])
    assert named, f"{case}: no option named in\n{text}"
    assert MUST_HINT.get(case, set()) <= set(named), f"{case}: {named}\n{text}"
    assert "Traceback" not in text


def test_no_flag_named_in_the_source_is_misspelt():
    """Every ``--flag`` in a string of src/ is an option of some command (per-command checks are above)."""
    def every_flag(parser: argparse.ArgumentParser) -> set[str]:
        return accepted(parser).union(*(every_flag(p) for p in subparsers(parser).values()))

    known = every_flag(build_parser())
    unknown = []
    for path in sorted(Path(__file__).resolve().parents[1].joinpath("src", "wordformer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                unknown += [f"{path.name}:{node.lineno} {flag}" for flag in FLAG.findall(node.value)
                            if flag not in known]
    assert unknown == []
