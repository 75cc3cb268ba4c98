"""A study records what its trials share (corpus, tokenizer, pairs, fixed options) and refuses runs that differ.

Training is replaced by a stand-in that returns a value from the configs (the corpus is read for real), so
each ``wordformer tune`` here takes well under a second; tests/test_tune_cli.py trains for real.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import optuna
import pytest

from wordformer.cli import main as wordformer_main
from wordformer.tune.fixed import FIXED_ATTR, differences, fixed_options
from wordformer.tune.objective import ObjectiveSettings, TrainingObjective
from wordformer.tune.space import parse_space
from wordformer.tune.study import StudySettings, run_study
from wordformer.config import DataConfig, ModelConfig, TrainConfig
from wordformer.training import TrainResult

from stand_ins import train_result

SPACE = """
params:
  log2_head_size: {target: model.head_size, type: int, low: 2, high: 3, transform: power_2}
  lr: {target: train.lr, type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any, Any, Path]]:
    """Replace training by a stand-in; the list collects (model, data, train, out_dir) of every run."""
    import wordformer.training

    calls: list[tuple[Any, Any, Any, Path]] = []

    def stand_in(model: Any, data: Any, train: Any, out_dir: Path, **kw: Any) -> TrainResult:
        calls.append((model, data, train, Path(out_dir)))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "best.ckpt").write_bytes(b"x")
        value = abs(math.log10(train.lr) + 2.5) + 0.01 * model.d_model
        return train_result(Path(out_dir), value, {"val_loss": value}, steps=2, num_parameters=10)

    monkeypatch.setattr(wordformer.training, "train", stand_in)
    return calls


def tune(*argv: Any) -> int:
    return wordformer_main(["tune", *map(str, argv)])


def write_text(path: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = "the cat sat on a mat and the dog ran to the big red house while birds sang".split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(10)) for _ in range(60)), encoding="utf-8")
    return path


def error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wordformer: error: ") and "Traceback" not in err, err
    return lines[0]


def trials_in(out: Path, study: str = "s") -> int:
    return len(optuna.load_study(study_name=study, storage=f"sqlite:///{out / 'study.db'}").trials)


@pytest.fixture
def study_args(tmp_path: Path) -> list[str]:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return ["--out", str(tmp_path / "out"), "--study", "s", "--space", str(space), "--no-progress", "--trials", "1",
            "--max-steps", "2", "--block-size", "8", "--num-layers", "1", "--sampler", "random"]


@pytest.mark.slow
def test_a_run_with_other_data_tokenizer_pairs_or_options_is_refused_before_any_trial(
        tmp_path: Path, study_args: list[str], trained: list, capsys: pytest.CaptureFixture) -> None:
    text = write_text(tmp_path / "a.txt")
    other = write_text(tmp_path / "b.txt", seed=1)
    pairs = tmp_path / "qa.tsv"
    pairs.write_text("".join(f"who is {w}\t{w} is a cat\n" for w in "tom bob ann sue max".split()), encoding="utf-8")
    base = [*study_args, "--data", text, "--tokenizer", "word"]
    assert tune(*base) == 0, capsys.readouterr().err
    out = tmp_path / "out"
    capsys.readouterr()
    refused = {
        "another --data": ([*study_args, "--data", other, "--tokenizer", "word"], f"--data {other}"),
        "another --tokenizer": ([*study_args, "--data", text, "--tokenizer", "char"],
                                "was run with --tokenizer word, not --tokenizer char"),
        "--pairs": ([*study_args, "--data", pairs, "--pairs"], "--no-pairs"),
        "another fixed option": ([*base, "--batch-size", "4"], "--batch-size 12, not --batch-size 4"),
        "a tuned option fixed now": ([*base, "--lr", "0.003"], "--lr tuned by the space, not --lr 0.003"),
        "a fixed option dropped": ([*study_args[:-4], "--sampler", "random", "--data", text, "--tokenizer", "word"],
                                   "--num-layers 1, not --num-layers 4"),
    }
    for name, (argv, words) in refused.items():
        assert tune(*argv) == 2, name
        line = error_line(capsys.readouterr().err)
        assert words in line, (name, line)
        assert "study 's'" in line and "another --out or --study" in line, line
    assert trials_in(out) == 1 and len(trained) == 1  # nothing ran
    assert tune(*base) == 0  # the same command continues the study
    assert trials_in(out) == 2
    assert tune(*base[:-2], "--seed", "5") == 0  # a worker's own seed is no other study (word is the default)
    assert trials_in(out) == 3

    text.write_text(text.read_text() + "\nthe cat ran home", encoding="utf-8")  # the same path, other text
    capsys.readouterr()
    assert tune(*base) == 2
    assert f"was run with {text.resolve()} as it was then, not as it is now (the text changed: its sha256 differs)" \
        in error_line(capsys.readouterr().err)
    assert trials_in(out) == 3


def test_the_same_text_at_another_path_is_the_same_corpus(tmp_path: Path, study_args: list[str], trained: list) -> None:
    text = write_text(tmp_path / "a.txt")
    assert tune(*study_args, "--data", text) == 0
    moved = text.rename(tmp_path / "moved.txt")
    assert tune(*study_args, "--data", moved) == 0
    assert trials_in(tmp_path / "out") == 2


def test_where_a_trial_runs_is_no_other_study(tmp_path: Path, study_args: list[str], trained: list,
                                              capsys: pytest.CaptureFixture) -> None:
    """Tokenizing processes and the Lightning strategy change how a trial runs, not what it trains."""
    text = write_text(tmp_path / "a.txt")
    assert tune(*study_args, "--data", text, "--workers", "1") == 0
    assert tune(*study_args, "--data", text, "--workers", "2", "--strategy", "ddp") == 0, capsys.readouterr().err
    assert trials_in(tmp_path / "out") == 2


@pytest.mark.slow
def test_report_shows_and_writes_the_fixed_options(tmp_path: Path, study_args: list[str], trained: list,
                                                   capsys: pytest.CaptureFixture) -> None:
    text = write_text(tmp_path / "a.txt")
    assert tune(*study_args, "--data", text, "--tokenizer", "char", "--trials", "2") == 0
    capsys.readouterr()
    assert tune("report", "--out", tmp_path / "out", "--study", "s") == 0
    printed = capsys.readouterr().out
    record = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}").user_attrs[FIXED_ATTR]
    assert f"data:      {text.resolve()}  (corpus sha256 {record['corpus'][:12]})" in printed
    assert "tokenizer: char" in printed and "pairs:     no" in printed
    fixed = next(line for line in printed.splitlines() if line.startswith("fixed:"))
    for option in ("--max-steps 2", "--block-size 8", "--num-layers 1"):
        assert option in fixed
    assert "--lr" not in fixed and "--d-model" not in fixed  # tuned, so not fixed
    report = tmp_path / "out" / "s" / "report"
    written = (report / "trials.txt").read_text()
    assert "tokenizer: char" in written and fixed in written and "rank" in written
    assert json.loads((report / "fixed_options.json").read_text()) == record
    assert record["tokenizer"] == "char" and record["pairs"] is False and record["data"] == str(text.resolve())


def test_retrain_best_uses_the_studys_own_data_and_options(tmp_path: Path, study_args: list[str], trained: list,
                                                          capsys: pytest.CaptureFixture) -> None:
    text = write_text(tmp_path / "a.txt")
    other = write_text(tmp_path / "b.txt", seed=1)
    assert tune(*study_args, "--data", text, "--tokenizer", "char") == 0
    common = ["--out", tmp_path / "out", "--study", "s", "--no-progress"]
    capsys.readouterr()
    for option, words in ((["--data", other], f"(--data {text.resolve()}), not --data {other}"),
                          (["--tokenizer", "word"], "(--tokenizer char), not --tokenizer word"),
                          (["--pairs"], "(--no-pairs), not --pairs")):
        assert tune("--retrain-best", "--max-steps", "4", *common, *option) == 2
        line = error_line(capsys.readouterr().err)
        assert words in line and "--retrain-best trains trial 0 on the data and options it ran with" in line, line
    assert len(trained) == 1
    assert tune("--retrain-best", "--max-steps", "4", *common, "--tokenizer", "char", "--eval-interval", "2") == 0
    model, data, train, out_dir = trained[-1]
    assert (data.data, data.tokenizer, data.pairs) == (str(text.resolve()), "char", False)
    assert (model.num_layers, model.block_size, train.max_steps, train.eval_interval) == (1, 8, 4, 2)
    assert out_dir == tmp_path / "out" / "s" / "best"

    text.write_text(text.read_text() + "\nthe end", encoding="utf-8")
    capsys.readouterr()
    assert tune("--retrain-best", "--max-steps", "4", "--overwrite", *common) == 2
    assert "changed since trial 0 trained on it" in error_line(capsys.readouterr().err)
    assert len(trained) == 2


class Notes(logging.Handler):
    """Warnings of wordformer.tune.study, caught on that logger itself: whatever an earlier test in the same
    process did to the root logger or its handlers (the full suite once lost this note that way)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def study_notes(monkeypatch: pytest.MonkeyPatch) -> Any:
    logger = logging.getLogger("wordformer.tune.study")
    notes = Notes()
    monkeypatch.setattr(logger, "disabled", False)
    monkeypatch.setattr(logger, "level", logging.WARNING)
    logger.addHandler(notes)
    yield notes
    logger.removeHandler(notes)


@pytest.mark.slow
def test_a_study_made_before_records_is_checked_by_its_trials_then_recorded(
        tmp_path: Path, trained: list, study_notes: Notes) -> None:
    space = parse_space({"params": {"lr": {"target": "train.lr", "type": "float", "low": 1e-3, "high": 1e-2, "log": True}}})
    text = write_text(tmp_path / "a.txt")
    data = DataConfig(data=str(text.resolve()), tokenizer="word")
    model, train = ModelConfig(d_model=8, num_heads=2, num_layers=1, block_size=8), TrainConfig(max_steps=2)
    objective = TrainingObjective(ObjectiveSettings(space=space, out_dir=tmp_path, model=model, data=data, train=train))

    def settings(**kw: Any) -> StudySettings:
        return StudySettings(out_dir=tmp_path, n_trials=1, sampler="random", heartbeat_interval=None, **kw)

    study = run_study(settings(), space, objective)  # as wordformer tune ran before it recorded anything
    assert FIXED_ATTR not in study.user_attrs
    char = fixed_options(space, model, DataConfig(data=data.data, tokenizer="char"), train, corpus_key="k")
    with pytest.raises(Exception, match=r"was run with --tokenizer word, not --tokenizer char"):
        run_study(settings(fixed=char), space, objective)
    assert len(study.trials) == 1

    same = fixed_options(space, model, data, train, corpus_key="k1")
    study = run_study(settings(fixed=same), space, objective)
    notes = [m for m in study_notes.messages if "made before wordformer recorded" in m]
    assert len(notes) == 1 and "1 trial(s) match this run's data, tokenizer and pairs" in notes[0]
    assert study.user_attrs[FIXED_ATTR] == same and len(study.trials) == 2
    study_notes.messages.clear()
    run_study(settings(fixed=same), space, objective)
    assert not [m for m in study_notes.messages if "made before" in m]  # said once


def test_report_of_a_study_made_before_records_says_so_and_shows_what_the_trials_used(
        tmp_path: Path, trained: list) -> None:
    from wordformer.tune.report import write_report

    space = parse_space({"params": {"lr": {"target": "train.lr", "type": "float", "low": 1e-3, "high": 1e-2, "log": True}}})
    model, train = ModelConfig(d_model=8, num_heads=2, num_layers=1, block_size=8), TrainConfig(max_steps=2)
    for tokenizer in ("word", "char"):  # an old study that mixed tokenizers
        objective = TrainingObjective(ObjectiveSettings(
            space=space, out_dir=tmp_path, model=model, data=DataConfig(tokenizer=tokenizer), train=train))
        run_study(StudySettings(out_dir=tmp_path, n_trials=1, heartbeat_interval=None), space, objective)
    study = optuna.load_study(study_name="wordformer", storage=f"sqlite:///{tmp_path / 'study.db'}")
    report = write_report(study, tmp_path / "report", plots=False)
    assert report.fixed[0].startswith("fixed:     not recorded (study made before wordformer recorded them)")
    assert "tokenizer: char and word  (MIXED: values not comparable)" in report.fixed
    assert "data:      the built-in corpus" in report.fixed
    assert not (tmp_path / "report" / "fixed_options.json").exists()


def test_differences_name_each_option_as_typed() -> None:
    space = parse_space({"params": {"lr": {"target": "train.lr", "type": "float", "low": 1e-3, "high": 1e-2}}})
    base = fixed_options(space, ModelConfig(), DataConfig(), TrainConfig(), corpus_key="a")
    assert differences(base, base) == []
    seeded = fixed_options(space, ModelConfig(), DataConfig(), TrainConfig(seed=9, progress=False), corpus_key="a")
    assert differences(base, seeded) == []  # seeds and progress bars do not change what a trial measures
    pairs = fixed_options(space, ModelConfig(), DataConfig(pairs=True, data="qa.tsv"), TrainConfig(), corpus_key="b")
    assert differences(base, pairs) == [("--data (the built-in corpus)", "--data qa.tsv"), ("--no-pairs", "--pairs")]
    # a field newer than the record: the record's run used its default
    older = {**base, "options": {k: v for k, v in base["options"].items() if k != "train.grad_accum"}}
    assert differences(older, base) == []
    accum = fixed_options(space, ModelConfig(), DataConfig(), TrainConfig(grad_accum=2), corpus_key="a")
    assert differences(older, accum) == [("--grad-accum 1", "--grad-accum 2")]


@pytest.mark.slow
def test_report_of_the_built_in_space_keeps_within_120_columns(tmp_path: Path, trained: list,
                                                                capsys: pytest.CaptureFixture) -> None:
    text = write_text(tmp_path / "a.txt")
    out = tmp_path / "out"
    assert tune("--out", out, "--study", "s", "--no-progress", "--trials", "12", "--sampler", "random",
                "--data", text, "--max-steps", "2", "--eval-interval", "1", "--eval-batches", "2", "--grad-accum", "2",
                "--min-lr", "0.0002", "--beta2", "0.98", "--grad-clip", "0.5", "--log-every", "1", "--seed", "3") == 0
    capsys.readouterr()
    assert tune("report", "--out", out, "--study", "s") == 0
    printed = capsys.readouterr().out.splitlines()
    files = ("text:", "csv:", "png:", "html:", "data:")  # a path is never cut
    assert [line for line in printed if not line.startswith(files) and len(line) > 120
            and not line.lstrip().startswith(f"(checkpoint {out}")] == []
    table = printed.index(next(line for line in printed if line.startswith("rank")))
    assert sum(1 for line in printed[table:] if line[:1].isdigit()) == 12  # one row per trial, wrapped
    fixed = [line for line in printed[:table] if line.startswith(("fixed:", " " * 11))]
    assert len(fixed) >= 1 and all(o in " ".join(fixed) for o in ("--min-lr 0.0002", "--beta2 0.98", "--grad-clip 0.5"))
    report = out / "s" / "report"
    # 14 tuned parameters (--max-steps fixes the 15th): 7 + the objective in each of two figures
    assert {p.name for p in report.glob("parallel_coordinate*.png")} == {"parallel_coordinate.png",
                                                                        "parallel_coordinate_2.png"}
