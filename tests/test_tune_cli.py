"""``wordformer tune`` end to end: parsing, errors (exit 2), real tiny training trials, report, retrain."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Iterator

import optuna
import pytest

from wordformer.tune.cli import build_parser, main

SPACE = """
params:
  log2_num_heads: {target: model.num_heads, type: int, low: 0, high: 1, transform: power_2}
  log2_head_size: {target: model.head_size, type: int, low: 2, high: 3, transform: power_2}   # d_model 4..16
  lr: {target: train.lr, type: float, low: 1.0e-3, high: 1.0e-2, log: true, default: 3.0e-3}
  positional: {target: model.positional, type: categorical, choices: [sinusoidal, learned]}
  max_steps: {target: train.max_steps, type: int, low: 100, high: 200, step: 100}   # fixed by --max-steps
"""


def tiny_text(path: Path) -> Path:
    rng = random.Random(0)
    words = "the cat sat on a mat and the dog ran to the big red house while birds sang".split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(200)), encoding="utf-8")
    return path


def test_tune_parses_options_directly_and_report_as_action() -> None:
    parser = build_parser()
    args = parser.parse_args(["tune", "--trials", "3", "--sampler", "gp", "--max-steps", "20", "--seed", "4"])
    assert (args.action, args.trials, args.sampler, args.max_steps, args.tune_seed) == ("run", 3, "gp", 20, 4)
    assert args.keep_checkpoints and args.pruner == "median" and args.metric == "val_loss"
    args = parser.parse_args(["tune", "report", "--storage", "postgresql://u@h/db", "--study", "s", "--out", "o"])
    assert (args.action, args.storage, args.study, args.out) == ("report", "postgresql://u@h/db", "s", "o")
    args = parser.parse_args(["tune", "--prune-checkpoints", "--storage", "journal:j.log", "--n-jobs", "2"])
    assert not args.keep_checkpoints and args.n_jobs == 2 and args.action == "run"
    with pytest.raises(SystemExit):
        parser.parse_args(["tune", "--sampler", "anneal"])


def test_main_cli_registers_tune() -> None:
    from wordformer.cli import build_parser as main_parser

    args = main_parser().parse_args(["tune", "report", "--study", "x"])
    assert args.action == "report" and args.study == "x" and callable(args.func)


def test_invalid_space_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: {x: {target: train.lr, type: float, low: 0.0, high: 1.0, log: true}}")
    assert main(["--space", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"wordformer tune: error: {bad}: entry 'x': log scale needs low > 0, got low=0.0"]
    assert not (tmp_path / "o" / "study.db").exists()


def test_user_mistakes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path / "nothing")]) == 2
    assert "no study database at" in capsys.readouterr().err
    assert main(["--sampler", "grid", "--out", str(tmp_path)]) == 2  # the default space has float lr
    assert "grid sampler: float parameter 'lr' has no step" in capsys.readouterr().err


@pytest.fixture()
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine they only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_torch_thread")
def test_tune_report_and_retrain_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tiny_text(tmp_path / "tiny.txt")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "run"
    common = ["--out", str(out), "--study", "tiny", "--no-progress"]
    argv = [*common, "--data", str(data), "--tokenizer", "char", "--space", str(space), "--max-steps", "12",
            "--num-layers", "1", "--block-size", "16", "--batch-size", "8", "--eval-batches", "2",
            "--cache-dir", str(tmp_path / "cache"), "--sampler", "random", "--seed", "0", "--prune-checkpoints"]
    assert main([*argv, "--trials", "2", "--enqueue-defaults"]) == 0, capsys.readouterr().err
    assert main([*argv, "--trials", "1"]) == 0  # the same command again continues the study
    printed = capsys.readouterr().out
    assert "study tiny: 3 complete" in printed and "dashboard: optuna-dashboard sqlite:///" in printed

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.trials[0].params["lr"] == 3e-3  # --enqueue-defaults
    for t in study.trials:
        cfg = t.user_attrs["config"]
        assert cfg["train"]["max_steps"] == 12 and cfg["model"]["num_layers"] == 1  # command line wins
        assert cfg["model"]["d_model"] % cfg["model"]["num_heads"] == 0
        assert "max_steps" not in t.params and t.user_attrs["steps"] == 12
        assert t.intermediate_values  # each validation was reported (for pruners)
    best = study.best_trial
    kept = sorted(p.relative_to(out) for p in out.rglob("*.ckpt"))
    assert kept == [Path("tiny") / f"trial_{best.number:04d}" / name for name in ("best.ckpt", "last.ckpt")]

    assert main(["report", *common]) == 0
    printed = capsys.readouterr().out
    assert "rank" in printed and "checkpoint" in printed
    report = out / "tiny" / "report"
    rows = list(csv.DictReader((report / "trials.csv").open()))
    assert len(rows) == 3 and rows[0]["rank"] == "1" and int(rows[0]["trial"]) == best.number
    assert {p.name for p in report.glob("*.png")} == {
        "history.png", "importances.png", "parallel_coordinate.png", "slice.png", "intermediate_values.png"}

    assert main(["--retrain-best", "--max-steps", "20", *common]) == 0
    printed = capsys.readouterr().out
    checkpoint = out / "tiny" / "best" / "best.ckpt"
    assert f"checkpoint: {checkpoint}" in printed and checkpoint.is_file()
    from wordformer.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)  # what `wordformer generate` loads
    assert loaded.model_config.d_model == best.user_attrs["config"]["model"]["d_model"]
    assert isinstance(loaded.generate("the ", max_new_tokens=5, seed=0), str)
    assert main(["--retrain-best", "--max-steps", "20", *common]) == 2  # will not clobber without --overwrite
    assert "already holds a run" in capsys.readouterr().err
