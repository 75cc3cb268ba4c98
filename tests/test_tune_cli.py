"""``wordformer tune`` end to end: parsing, errors (exit 2), real tiny training trials, report, retrain."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Iterator

import optuna
import pytest

from wordformer.errors import WordformerError
from wordformer.cli import build_parser
from wordformer.cli import main as wordformer_main


def main(argv: list[str]) -> int:
    """``wordformer tune ARGV``."""
    return wordformer_main(["tune", *argv])

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
    from wordformer.cli.tune import run_tune

    args = build_parser().parse_args(["tune", "report", "--study", "x"])
    assert args.action == "report" and args.study == "x" and args.handler is run_tune


def test_invalid_space_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: {x: {target: train.lr, type: float, low: 0.0, high: 1.0, log: true}}")
    assert main(["--space", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"wordformer: error: {bad}: entry 'x': log scale needs low > 0, got low=0.0"]
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


@pytest.mark.slow
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
    assert "hyperparameters (range, type, transform, default" in printed and "importance" in printed
    report = out / "tiny" / "report"
    params = list(csv.DictReader((report / "params.csv").open()))
    assert [r["name"] for r in params] == list(best.params) and all(r["tuned"] for r in params)
    assert (report / "params.txt").read_text().startswith(f"study tiny: best trial {best.number}")
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


HEADS_SPACE = """
params:
  log2_head_size: {target: model.head_size, type: int, low: 2, high: 3, transform: power_2}
  lr: {target: train.lr, type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wordformer: error: ") and "Traceback" not in err, err
    return lines[0]


def test_heads_that_do_not_divide_the_default_width_are_fine_when_head_size_is_tuned(tmp_path: Path) -> None:
    from wordformer.cli.tune import _base_configs
    from wordformer.tune.space import load_space

    space_file = tmp_path / "space.yaml"
    space_file.write_text(HEADS_SPACE)
    args = build_parser().parse_args(["tune", "--num-heads", "3", "--space", str(space_file)])
    space = load_space(space_file)
    model, _, _ = _base_configs(args, space)
    assert model.num_heads == 3
    for log2_head_size in (2, 3):  # every trial: d_model = 3 * head_size
        trial_model, _, _ = space.configs({"log2_head_size": log2_head_size, "lr": 3e-3}, model)
        assert (trial_model.num_heads, trial_model.d_model) == (3, 3 * 2 ** log2_head_size)
    config = tmp_path / "base.yaml"
    config.write_text("model:\n  num_heads: 6\n")  # from --config too
    args = build_parser().parse_args(["tune", "--config", str(config), "--space", str(space_file)])
    assert _base_configs(args, space)[0].num_heads == 6
    # without head_size in the space the width is the base's, and 3 heads must divide it
    no_head_size = space.without(["model.head_size"])
    args = build_parser().parse_args(["tune", "--num-heads", "3", "--space", str(space_file)])
    with pytest.raises(WordformerError, match=r"num_heads=3 must divide d_model=128"):
        _base_configs(args, no_head_size)


def test_corpus_shorter_than_one_block_is_refused_before_any_trial(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "short.txt"
    data.write_text("to be or not")
    space = tmp_path / "space.yaml"
    space.write_text(HEADS_SPACE + "  log2_block: {target: model.block_size, type: int, low: 4, high: 5, transform: power_2}\n")
    out = tmp_path / "out"
    argv = ["--data", str(data), "--tokenizer", "char", "--space", str(space), "--out", str(out), "--no-progress",
            "--max-steps", "2", "--trials", "3"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "every trial would fail: the corpus has" in line and "block_size=16 needs at least 17" in line
    assert not out.exists()


def test_paths_through_a_file_and_bad_study_names_exit_2_and_change_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tiny_text(tmp_path / "tiny.txt")
    before = data.read_bytes()
    space = tmp_path / "space.yaml"
    space.write_text(HEADS_SPACE)
    monkeypatch.chdir(tmp_path)
    argv = ["--data", str(data), "--tokenizer", "char", "--space", str(space), "--max-steps", "2", "--trials", "1",
            "--block-size", "8", "--no-progress"]
    cases = [
        ([*argv, "--out", str(data)], "tiny.txt is a file, not a folder; choose another --out"),
        ([*argv, "--out", "o", "--storage", f"sqlite:///{data}/x.db"], "tiny.txt is a file, not a folder"),
        ([*argv, "--out", "o", "--storage", f"journal:{data}/j.log"], "tiny.txt is a file, not a folder"),
        ([*argv, "--out", "o", "--storage", "journal:"], "storage journal: needs a file path"),
        ([*argv, "--out", "o", "--storage", f"journal:{tmp_path}"], "is a folder; give the journal a file name"),
        ([*argv, "--out", "o", "--storage", f"journal:{data}"], "tiny.txt is not an Optuna journal file"),
        (["report", "--storage", f"journal:{data}"], "tiny.txt is not an Optuna journal file"),
        ([*argv, "--out", "o", "--study", "../../evil"], "study name '../../evil' is also the folder OUT/../../evil"),
        (["report", "--out", "o", "--study", "a/b"], "must not be '.' or '..' or contain '/'"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        assert message in one_error_line(capsys.readouterr().err), args
    assert data.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml", "tiny.txt"]  # stopped before writing
    assert not (tmp_path.parent / "evil").exists()
