"""A run folder over its life: resumed, replaced, interrupted, re-scored — never silently wrong or lost."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import pytest

from conftest import TINY_TRAIN, assert_one_line_error, run_cli
from wordformer import load_checkpoint
from wordformer.training import WordPredictorModule


def logged_steps(run: Path) -> list[int]:
    with open(run / "logs" / "csv" / "metrics.csv", newline="") as fh:
        return sorted({int(float(r["step"])) for r in csv.DictReader(fh) if r.get("val_loss")})


def ctrl_c_at_step(monkeypatch, step: int) -> None:
    """Make the training step raise KeyboardInterrupt at ``step``, as Ctrl-C would."""
    real = WordPredictorModule.training_step

    def interrupted(self, batch, *args):
        if self.global_step == step:
            raise KeyboardInterrupt
        return real(self, batch, *args)

    monkeypatch.setattr(WordPredictorModule, "training_step", interrupted)


def train_run(capsys, data: Path, out: Path, *extra: str) -> None:
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", out, *TINY_TRAIN, *extra)
    assert code == 0, err


def test_a_changed_corpus_is_refused_by_resume_and_evaluate(small_text, tmp_path, capsys):
    """The tokenizer and the validation split come from the corpus: other text would give other ids."""
    out = tmp_path / "run"
    train_run(capsys, small_text, out)
    code, before, err = run_cli(capsys, "evaluate", "--checkpoint", out / "best.ckpt")
    assert code == 0, err
    original = small_text.read_text()
    small_text.write_text(original + "zebra quagga aardvark .\n")
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", out / "best.ckpt")
    assert_one_line_error(code, err, "is not the text", "--data")
    code, _, err = run_cli(capsys, "train", "--resume", out, "--max-steps", "20")
    assert_one_line_error(code, err, "is not the text", "last.ckpt", "--data PATH if it moved")
    assert load_checkpoint(out / "last.ckpt").info["step"] == 12  # untouched
    moved = small_text.with_name("moved.txt")
    small_text.rename(moved)
    code, _, err = run_cli(capsys, "train", "--resume", out, "--max-steps", "20")
    assert_one_line_error(code, err, "which is gone", "--data PATH")
    moved.rename(small_text)
    small_text.write_text(original)  # the same text again: both work, from any folder (the path is absolute)
    code, after, err = run_cli(capsys, "evaluate", "--checkpoint", out / "best.ckpt")
    assert code == 0 and after == before, err
    assert Path(load_checkpoint(out / "best.ckpt").data_config.data).is_absolute()


def test_a_checkpoint_without_the_corpus_hash_is_checked_by_its_tokenizer(small_text, tmp_path, capsys):
    """Checkpoints written before the hash was recorded: a changed vocabulary is still one line, no traceback."""
    import torch

    out = tmp_path / "run"
    train_run(capsys, small_text, out)
    for name in ("best.ckpt", "last.ckpt"):
        raw = torch.load(out / name, weights_only=True)
        raw["wordformer"]["info"].pop("corpus")
        torch.save(raw, out / name)
    small_text.write_text(small_text.read_text() + "zebra quagga aardvark .\n")  # three new words
    code, _, err = run_cli(capsys, "train", "--resume", out, "--max-steps", "20")
    assert_one_line_error(code, err, "is not the text")
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", out / "best.ckpt")
    assert_one_line_error(code, err, "is not the text")


@pytest.mark.parametrize("option, words", [(["--num-heads", "4"], ["num_heads 2 -> 4"]),
                                           (["--d-model", "32"], ["d_model 16 -> 32"])])
def test_resume_refuses_another_architecture(small_text, tmp_path, capsys, option, words):
    """Other sizes would not load; other head counts would load and silently reinterpret the weights."""
    out = tmp_path / "run"
    train_run(capsys, small_text, out)
    code, _, err = run_cli(capsys, "train", "--resume", out, "--max-steps", "20", *option)
    assert_one_line_error(code, err, "cannot change the model when resuming", *words)
    assert load_checkpoint(out / "last.ckpt").info["step"] == 12


def test_resume_refuses_an_out_folder_other_than_its_own(small_text, tmp_path, capsys):
    out = tmp_path / "run"
    train_run(capsys, small_text, out)
    code, _, err = run_cli(capsys, "train", "--resume", out, "--out", tmp_path / "elsewhere", "--max-steps", "20")
    assert_one_line_error(code, err, "drop --out", "copy the folder")
    assert not (tmp_path / "elsewhere").exists()
    code, _, err = run_cli(capsys, "train", "--resume", out, "--out", out, "--max-steps", "14")  # the same: fine
    assert code == 0, err


def test_resume_refuses_new_optimizer_settings_it_would_silently_ignore(small_text, tmp_path, capsys):
    out = tmp_path / "run"
    train_run(capsys, small_text, out)
    code, _, err = run_cli(capsys, "train", "--resume", out, "--max-steps", "20", "--lr", "0.5")
    assert_one_line_error(code, err, "cannot change the optimizer", "lr 0.001 -> 0.5")
    code, _, err = run_cli(capsys, "train", "--resume", out, "--max-steps", "20", "--grad-clip", "0.5")  # read anew
    assert code == 0, err


@pytest.mark.slow
def test_max_time_is_a_budget_per_session(small_text, tmp_path, capsys):
    """Lightning carries the time used over a resume: a run stopped by --max-time resumed into nothing."""
    out = tmp_path / "run"
    timed = ["--max-steps", "1000000", "--eval-interval", "100000", "--max-time", "1"]
    train_run(capsys, small_text, out, *timed)
    first = load_checkpoint(out / "last.ckpt").info["step"]
    code, _, err = run_cli(capsys, "train", "--resume", out, "--max-time", "1")
    assert code == 0, err
    assert load_checkpoint(out / "last.ckpt").info["step"] > first


def test_resume_keeps_the_logged_history_and_refuses_a_finished_run(small_text, tmp_path, capsys):
    out = tmp_path / "run"
    train_run(capsys, small_text, out)
    assert logged_steps(out) == [5, 11]
    code, _, err = run_cli(capsys, "train", "--resume", out, "--max-steps", "24")
    assert code == 0, err
    assert logged_steps(out) == [5, 11, 17, 23]  # Lightning alone would have deleted the first two rows
    code, _, err = run_cli(capsys, "train", "--resume", out, "--max-steps", "24")
    assert_one_line_error(code, err, "already at step 24", "--max-steps")
    assert logged_steps(out) == [5, 11, 17, 23]


def test_last_checkpoint_is_the_latest_step_even_when_validation_got_worse(small_text, tmp_path, capsys):
    """Lightning's save_last rewrites last.ckpt only when best.ckpt improves; a resume must go on from the end."""
    out = tmp_path / "run"
    # a learning rate this high makes validation worse after the first evaluation
    train_run(capsys, small_text, out, "--max-steps", "30", "--eval-interval", "5", "--lr", "0.5", "--min-lr", "0.5",
              "--warmup-steps", "0", "--grad-clip", "0")
    best, last = load_checkpoint(out / "best.ckpt"), load_checkpoint(out / "last.ckpt")
    assert best.info["step"] < 30, "validation never got worse: the test needs another setting"
    assert last.info["step"] == 30
    assert last.info["metrics"]["val_loss"] > best.info["metrics"]["val_loss"]


@pytest.mark.parametrize("how", ["copy", "move"])
def test_a_copied_or_moved_run_keeps_its_best_checkpoint_on_resume(small_text, tmp_path, capsys, how):
    """Lightning forgets the best score when the folder's path changed; best.ckpt must stay the best."""
    import shutil

    out = tmp_path / "run"
    worse = ["--eval-interval", "5", "--lr", "0.5", "--min-lr", "0.5", "--warmup-steps", "0", "--grad-clip", "0"]
    train_run(capsys, small_text, out, "--max-steps", "30", *worse)
    best = load_checkpoint(out / "best.ckpt").info
    assert best["step"] < 30
    moved = tmp_path / "elsewhere"
    (shutil.copytree if how == "copy" else shutil.move)(out, moved)
    code, _, err = run_cli(capsys, "train", "--resume", moved, "--max-steps", "40")
    assert code == 0, err
    kept = load_checkpoint(moved / "best.ckpt").info
    assert load_checkpoint(moved / "last.ckpt").info["step"] == 40
    with open(moved / "logs" / "csv" / "metrics.csv", newline="") as fh:
        logged = [float(r["val_loss"]) for r in csv.DictReader(fh) if r.get("val_loss")]
    assert kept["metrics"]["val_loss"] == pytest.approx(min(logged))  # best.ckpt is the best of the whole history
    if how == "copy":  # the original is untouched
        assert load_checkpoint(out / "best.ckpt").info == best


def test_the_checkpoint_callback_re_roots_its_state_in_a_moved_folder(tmp_path):
    """Lightning alone drops best_model_score when dirpath changed; the first evaluation would then win."""
    import torch

    from wordformer.callbacks import RunCheckpoint

    old, new = tmp_path / "old", tmp_path / "new"
    cb = RunCheckpoint(dirpath=new, filename="best", monitor="val_loss", mode="min", save_top_k=1)
    cb.load_state_dict({"dirpath": str(old), "best_model_score": torch.tensor(2.5), "current_score": torch.tensor(3.0),
                        "best_model_path": str(old / "best.ckpt"), "kth_best_model_path": str(old / "best.ckpt"),
                        "kth_value": torch.tensor(2.5), "last_model_path": "", "monitor": "val_loss",
                        "best_k_models": {str(old / "best.ckpt"): torch.tensor(2.5)}})
    assert float(cb.best_model_score) == 2.5 and cb.best_model_path == str(new / "best.ckpt")
    assert list(cb.best_k_models) == [str(new / "best.ckpt")] and cb.kth_best_model_path == str(new / "best.ckpt")
    assert float(cb.kth_value) == 2.5  # the score a new checkpoint must beat to replace best.ckpt


def test_ctrl_c_says_where_the_run_stands_and_how_to_go_on(small_text, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    ctrl_c_at_step(monkeypatch, 9)
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", out, *TINY_TRAIN)
    assert code == 130
    line = [ln for ln in err.splitlines() if ln.startswith("wordformer: interrupted")]
    assert len(line) == 1 and "Traceback" not in err, err
    assert "at step 9" in line[0] and "holds step 6" in line[0] and f"--resume {out}" in line[0]
    # Lightning leaves Ctrl-C ignored after its shutdown; the next Ctrl-C must work again
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    code, _, err = run_cli(capsys, "train", "--resume", out)
    assert code == 0, err
    assert load_checkpoint(out / "last.ckpt").info["step"] == 12


def test_ctrl_c_before_the_first_checkpoint_leaves_nothing_that_blocks_or_misleads(small_text, tmp_path, capsys,
                                                                                   monkeypatch):
    out = tmp_path / "run"
    train_run(capsys, small_text, out)  # an earlier run, to be replaced
    ctrl_c_at_step(monkeypatch, 3)
    for folder, extra in ((out, ["--overwrite"]), (tmp_path / "fresh", [])):
        code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", folder, *TINY_TRAIN, *extra)
        assert code == 130 and "nothing was saved" in err and "--resume" not in err, err
        # the replaced run's checkpoints are gone (--resume would have continued *it*), and no half run is left
        assert not (folder / "last.ckpt").exists() and not (folder / "logs").exists()
    assert not (tmp_path / "fresh").exists()
    monkeypatch.undo()
    train_run(capsys, small_text, tmp_path / "fresh")  # the same command again, no --overwrite needed


def test_a_folder_with_logs_is_a_run_and_overwrite_clears_the_old_curves(small_text, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "logs" / "csv").mkdir(parents=True)
    (out / "logs" / "csv" / "metrics.csv").write_text("precious\n")
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", out, *TINY_TRAIN)
    assert_one_line_error(code, err, "already holds a run", "metrics.csv", "--overwrite")
    assert (out / "logs" / "csv" / "metrics.csv").read_text() == "precious\n"
    train_run(capsys, small_text, out, "--overwrite")
    old_events = sorted((out / "logs" / "tensorboard").glob("events.*"))
    train_run(capsys, small_text, out, "--overwrite")
    assert logged_steps(out) == [5, 11]
    new_events = sorted((out / "logs" / "tensorboard").glob("events.*"))
    assert len(new_events) == 1 and not set(old_events) & set(new_events)


def test_demo_replaces_its_own_folder_but_never_a_training_run(small_text, tmp_path, capsys):
    run = tmp_path / "run"
    train_run(capsys, small_text, run)
    before = (run / "last.ckpt").read_bytes()
    demo = ["--data", small_text, *TINY_TRAIN]
    code, _, err = run_cli(capsys, "demo", "--out", run, *demo)
    assert_one_line_error(code, err, "did not make", "another --out")
    assert (run / "last.ckpt").read_bytes() == before
    mine = tmp_path / "demo"
    for _ in range(2):  # the second demo replaces the first
        code, _, err = run_cli(capsys, "demo", "--out", mine, *demo)
        assert code == 0, err
    # a demo continued with `train --resume` is the user's run now
    code, _, err = run_cli(capsys, "train", "--resume", mine, "--max-steps", "20")
    assert code == 0, err
    code, _, err = run_cli(capsys, "demo", "--out", mine, *demo)
    assert_one_line_error(code, err, "did not make")
    assert load_checkpoint(mine / "last.ckpt").info["step"] == 20
    # and a run on the built-in corpus is no demo either
    builtin = tmp_path / "builtin"
    code, _, err = run_cli(capsys, "train", "--out", builtin, *TINY_TRAIN, "--max-steps", "2")
    assert code == 0, err
    code, _, err = run_cli(capsys, "demo", "--out", builtin, *demo)
    assert_one_line_error(code, err, "did not make")


def test_a_batch_whose_output_layer_cannot_fit_is_refused_before_training(small_text, tmp_path, capsys, monkeypatch):
    """Instead of the kernel's OOM killer ending the process without a word."""
    from wordformer import hardware

    monkeypatch.setattr(hardware, "memory_available", lambda: 64 * 2**20)  # 64 MiB free
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", out, *TINY_TRAIN, "--batch-size", "100000",
                           "--accelerator", "cpu")
    assert_one_line_error(code, err, "batch_size=100000", "--batch-size", "GiB free")
    assert not out.exists()  # a refused first run leaves no empty folder behind
    train_run(capsys, small_text, out, "--accelerator", "cpu")  # the usual batch still fits in 64 MiB


def test_resume_of_nothing_and_a_logs_only_folder_give_advice_that_works(small_text, tmp_path, capsys):
    for target in ("", tmp_path / "none"):
        code, _, err = run_cli(capsys, "train", "--resume", target)
        assert_one_line_error(code, err, "nothing to resume", "no last.ckpt")
    assert not (tmp_path / "runs").exists()
    logs_only = tmp_path / "logs-only"
    (logs_only / "logs" / "tensorboard").mkdir(parents=True)
    (logs_only / "logs" / "tensorboard" / "events.out").write_text("x")
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", logs_only, *TINY_TRAIN)
    assert_one_line_error(code, err, "already holds a run", "--overwrite")
    assert "--resume" not in err  # there is nothing to resume there


def test_a_damaged_log_on_resume_is_one_line(small_text, tmp_path, capsys):
    out = tmp_path / "run"
    train_run(capsys, small_text, out)
    (out / "logs" / "csv" / "metrics.csv").write_bytes(b"\xff\xfe\x00 not text")
    code, _, err = run_cli(capsys, "train", "--resume", out, "--max-steps", "20")
    assert_one_line_error(code, err, "cannot keep the training history", "move that file away")


@pytest.mark.slow
def test_two_processes_report_one_validation_loss(small_text, tmp_path):
    """With several devices every rank scores its share of the validation batches; all must see their mean."""
    import json
    import subprocess
    import sys

    from conftest import one_thread_env

    script = tmp_path / "ddp.py"
    script.write_text(
        "import json, os, sys\n"
        "from wordformer import DataConfig, ModelConfig, TrainConfig, train\n"
        "r = train(ModelConfig(d_model=16, num_heads=2, num_layers=1, block_size=8), DataConfig(data=sys.argv[1]),\n"
        "          TrainConfig(max_steps=4, eval_interval=4, eval_batches=4, devices='2', accelerator='cpu',\n"
        "                      progress=False), sys.argv[2], logger=False)\n"
        "rank = os.environ.get('LOCAL_RANK', '0')\n"
        "open(f'rank{rank}.json', 'w').write(json.dumps({'rank': rank, **r.metrics}))\n")  # both share stdout
    proc = subprocess.run([sys.executable, str(script), str(small_text), str(tmp_path / "run")], capture_output=True,
                          text=True, env=one_thread_env(), timeout=300, cwd=tmp_path)
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert [r["rank"] for r in results] == ["0", "1"], proc.stdout[-2000:] + proc.stderr[-2000:]
    assert results[0]["val_loss"] == results[1]["val_loss"] and results[0]["val_acc"] == results[1]["val_acc"]


# ------------------------------------------------------------------------------------------ runs.py, directly


def test_the_guards_refuse_before_any_work_and_say_what_to_do(tmp_path):
    from wordformer import runs
    from wordformer.errors import WordformerError

    out = tmp_path / "run"
    runs.check_out_dir(out, resume=False, overwrite=False)  # a new folder is made and writable
    (out / runs.LAST).write_bytes(b"x")
    with pytest.raises(WordformerError, match=f"already holds a run \\(last.ckpt\\); continue it with --resume {out}"):
        runs.check_out_dir(out, resume=False, overwrite=False)
    runs.check_out_dir(out, resume=True, overwrite=False)
    runs.check_out_dir(out, resume=False, overwrite=True)
    with pytest.raises(WordformerError, match="holds a training run that `wordformer demo` did not make"):
        runs.check_demo_out(out)
    runs.mark_demo(out)
    runs.check_demo_out(out)  # the demo's own folder: it may replace it
    runs.claim_for_training(out)
    with pytest.raises(WordformerError, match="did not make"):
        runs.check_demo_out(out)
    with pytest.raises(WordformerError, match="drop --out"):
        runs.resume_folder(str(out), str(tmp_path / "elsewhere"))
    assert runs.resume_folder(str(out), None) == out
    with pytest.raises(WordformerError, match="nothing to resume in ' '"):
        runs.resume_folder(" ", None)


def test_only_the_temporary_files_of_this_runs_checkpoints_are_removed(tmp_path):
    from wordformer import runs

    theirs = [tmp_path / n for n in (".best.ckpt.abc.tmp", ".last.ckpt.x1y2.tmp")]
    kept = [tmp_path / n for n in (".notes.txt.abc.tmp", "best.ckpt", ".best.ckpt.abc.part", "last.ckpt.tmp")]
    for path in theirs + kept:
        path.write_bytes(b"")
    assert sorted(runs.remove_stale_temp_checkpoints(tmp_path)) == sorted(theirs)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in theirs)


def test_resume_guards_name_every_changed_setting():
    from wordformer import runs
    from wordformer.config import DataConfig, ModelConfig, TrainConfig
    from wordformer.errors import WordformerError

    saved = (ModelConfig(d_model=16, num_heads=2), TrainConfig(lr=1e-3))
    with pytest.raises(WordformerError, match=r"d_model 16 -> 32, num_heads 2 -> 4"):
        runs.check_resumable(ModelConfig(d_model=32, num_heads=4), DataConfig(), TrainConfig(lr=1e-3), saved, 5,
                             Path("last.ckpt"))
    with pytest.raises(WordformerError, match=r"lr 0.001 -> 0.01"):
        runs.check_resumable(saved[0], DataConfig(), TrainConfig(lr=1e-2), saved, 5, Path("last.ckpt"))
    with pytest.raises(WordformerError, match="already at step 2000; .* --max-steps above 2000"):
        runs.check_resumable(saved[0], DataConfig(), saved[1], saved, 2000, Path("last.ckpt"))
    with pytest.raises(WordformerError, match="which is gone"):
        runs.check_resumable(saved[0], DataConfig(data="/no/such/text.txt"), saved[1], saved, 5, Path("last.ckpt"))


def test_progress_in_a_log_file_is_a_short_line_every_so_often(small_text, tmp_path, capsys):
    """stderr here is not a terminal: no bar redrawn line by line, no 'Validation DataLoader' lines."""
    options = [o for o in TINY_TRAIN if o != "--no-progress"]
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", tmp_path / "run", *options,
                           "--max-steps", "40", "--log-every", "2")
    assert code == 0, err
    lines = err.strip().splitlines()
    steps = [ln for ln in lines if ln.startswith("step ")]
    assert "DataLoader" not in err and "\r" not in err and "it/s" not in err
    assert any("train_loss" in ln for ln in steps) and any("val_loss" in ln for ln in steps)
    assert len(lines) <= 20, err  # every 10% of 40 steps and each of the validations, not one per batch
    assert steps[-1].startswith("step 40/40")
