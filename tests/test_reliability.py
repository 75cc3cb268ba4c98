"""Reliability: untrusted checkpoints never run code, safetensors export, crash-safe saving and resuming.

Faults are injected for real where it is cheap (SIGKILL of a training process and of a process in the
middle of an atomic save) and by monkeypatching where it is not (a full disk, a NaN loss). Every user
mistake must end in one ``wordformer: error:`` line with exit status 2 and leave earlier files intact.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import SMALL_TEXT, TINY_TRAIN, assert_one_line_error, run_cli, one_thread_env
from wordformer import files as files_module
from wordformer import load_checkpoint
from wordformer.checkpoint import LoadedModel, wordformer_entry
from wordformer.files import atomic_torch_save, atomic_write_bytes
from wordformer.cli import main
from wordformer.config import DataConfig, ModelConfig, TrainConfig
from wordformer.errors import WordformerError
from wordformer.model import WordPredictor
from wordformer.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer

# ------------------------------------------------------------------------------------------ helpers


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(folder: Path) -> list[Path]:
    """Leftovers of an interrupted atomic write (``.NAME.xxxx.tmp``)."""
    return sorted(folder.glob(".*.tmp"))


def tiny_loaded(kind: str = "word", *, tie: bool = True, positional: str = "sinusoidal", seed: int = 0) -> LoadedModel:
    """A model and tokenizer built without training: enough for export and loading tests."""
    texts = [SMALL_TEXT, "Ünïcödé 🙂 text\n"]
    if kind == "word":
        tok = WordTokenizer.train(texts)
    elif kind == "char":
        tok = CharTokenizer.train(texts)
    else:
        tok = BPETokenizer.train(texts, vocab_size=300)
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=8, d_model=16, num_heads=2, num_layers=1,
                      tie_weights=tie, positional=positional)
    model = WordPredictor(cfg).eval()
    return LoadedModel(model, tok, cfg, DataConfig(tokenizer=kind), TrainConfig(), info={"step": 3})


class OpenFile:
    """Unpickling this calls ``open(path, "w")``: a checkpoint that creates a file when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class Shell:
    """Unpickling this runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def evil_checkpoint(path: Path, payload: object, like: Path) -> Path:
    """A real checkpoint (``like``) with a payload hidden inside its wordformer entry."""
    raw = torch.load(like, map_location="cpu", weights_only=True)
    raw["wordformer"]["info"]["note"] = payload
    torch.save(raw, path)
    return path


# ------------------------------------------------------------------------------------------ 1. untrusted checkpoints


def test_the_malicious_payload_is_live(tmp_path, trained_run):
    """Control: the crafted file really creates its marker when loaded the unsafe way."""
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.ckpt", OpenFile(marker), trained_run / "last.ckpt")
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("payload_kind", ["open", "os.system"])
def test_malicious_checkpoint_is_refused_by_every_command(tmp_path, trained_run, capsys, payload_kind):
    marker = tmp_path / "pwned"
    payload = OpenFile(marker) if payload_kind == "open" else Shell(f"touch {marker}")
    evil = evil_checkpoint(tmp_path / "evil.ckpt", payload, trained_run / "last.ckpt")
    resume_dir = tmp_path / "run"
    resume_dir.mkdir()
    evil_checkpoint(resume_dir / "last.ckpt", payload, trained_run / "last.ckpt")
    commands = [
        ["generate", "--checkpoint", evil, "--prompt", "the"],
        ["predict", "--checkpoint", evil, "--prompt", "the"],
        ["evaluate", "--checkpoint", evil],
        ["export", "--checkpoint", evil, "--to", tmp_path / "out.safetensors"],
        ["train", "--resume", resume_dir, "--no-progress"],
    ]
    for argv in commands:
        code, _, err = run_cli(capsys, *argv)
        line = assert_one_line_error(code, err, "refusing to load")
        assert "could run code" in line
        assert not marker.exists(), argv
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.slow
def test_malicious_checkpoint_is_refused_through_the_console(tmp_path, trained_run):
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.ckpt", Shell(f"touch {marker}"), trained_run / "last.ckpt")
    proc = subprocess.run([sys.executable, "-m", "wordformer.cli", "generate", "--checkpoint", str(evil),
                           "--prompt", "the"], capture_output=True, text=True, timeout=300, env=one_thread_env())
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [ln for ln in proc.stderr.strip().splitlines()
                                                if ln.startswith("wordformer: error: refusing to load")]
    assert "Traceback" not in proc.stderr and not marker.exists()


def test_library_resume_never_unpickles_code(tmp_path, small_text, monkeypatch):
    """``train(resume=True)`` must read last.ckpt with weights_only=True whatever the environment says.

    Lightning's resume passes ``weights_only=None`` to ``torch.load``, which obeys
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``; the library must ask for ``weights_only=True`` itself.
    """
    from wordformer import train

    out = tmp_path / "run"
    model = ModelConfig(d_model=16, num_heads=2, num_layers=1, block_size=8)
    data = DataConfig(data=str(small_text))
    cfg = TrainConfig(max_steps=4, batch_size=4, eval_interval=2, eval_batches=1, warmup_steps=1, progress=False)
    train(model, data, cfg, out, logger=False)
    marker = tmp_path / "pwned"
    evil_checkpoint(out / "last.ckpt", OpenFile(marker), out / "last.ckpt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(WordformerError, match="refusing to load"):
        train(model, data, replace(cfg, max_steps=6), out, resume=True, logger=False)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ safetensors export


def logits_of(loaded: LoadedModel, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(0, loaded.model_config.vocab_size, (3, loaded.model_config.block_size),
                        generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return loaded.model(ids)


def test_export_loads_back_with_identical_logits(trained_run, tmp_path, capsys):
    ckpt = trained_run / "best.ckpt"
    to = tmp_path / "model.safetensors"
    code, out, _ = run_cli(capsys, "export", "--checkpoint", ckpt, "--to", to)
    assert code == 0 and str(to) in out
    original, exported = load_checkpoint(ckpt), load_checkpoint(to)
    assert torch.equal(logits_of(original), logits_of(exported))
    assert exported.model.output_layer.weight is exported.model.token_embedding.weight  # re-tied
    assert exported.tokenizer.to_dict() == original.tokenizer.to_dict()
    assert exported.model_config == original.model_config and exported.data_config == original.data_config
    assert exported.info["step"] == original.info["step"]
    data = to.read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    assert "output_layer.weight" not in header  # the tied matrix is stored once
    assert json.loads(header["__metadata__"]["wordformer"])["format_version"] == 1
    args = ["--prompt", "the cat", "--temperature", "0", "--max-new-tokens", "6"]
    assert run_cli(capsys, "generate", "--checkpoint", ckpt, *args)[1] == run_cli(
        capsys, "generate", "--checkpoint", to, *args)[1]


@pytest.mark.parametrize("kind, tie, positional", [("char", False, "learned"), ("bpe", True, "learned"),
                                                   ("word", False, "sinusoidal")])
def test_export_round_trips_every_tokenizer_and_untied_weights(tmp_path, kind, tie, positional):
    from wordformer.checkpoint import load_safetensors, save_safetensors

    loaded = tiny_loaded(kind, tie=tie, positional=positional)
    path = save_safetensors(loaded, tmp_path / "m.safetensors")
    back = load_safetensors(path)
    assert torch.equal(logits_of(loaded), logits_of(back))
    assert back.tokenizer.to_dict() == loaded.tokenizer.to_dict()
    tied = back.model.output_layer.weight is back.model.token_embedding.weight
    assert tied == tie
    text = "naïve 🙂 cat"
    assert back.tokenizer.encode(text) == loaded.tokenizer.encode(text)


def test_export_refuses_to_overwrite_and_bad_targets(trained_run, tmp_path, capsys):
    ckpt = trained_run / "best.ckpt"
    to = tmp_path / "model.safetensors"
    to.write_bytes(b"precious")
    code, _, err = run_cli(capsys, "export", "--checkpoint", ckpt, "--to", to)
    assert_one_line_error(code, err, "already exists", "--overwrite")
    assert to.read_bytes() == b"precious"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for target, words in [(tmp_path / "model.bin", ["must end in .safetensors"]),
                          (tmp_path / "dir.safetensors", ["folder"]),
                          (blocker / "m.safetensors", [f"{blocker} is a file, not a folder", "choose another --to"]),
                          (blocker / "sub" / "m.safetensors", [f"{blocker} is a file, not a folder"]),
                          ]:
        if target.name == "dir.safetensors":
            target.mkdir()
        code, _, err = run_cli(capsys, "export", "--checkpoint", ckpt, "--to", target)
        line = assert_one_line_error(code, err, *words)
        assert "disk space" not in line and "File exists" not in line and "Not a directory" not in line
    # the blocked target is named before the checkpoint is even read
    code, _, err = run_cli(capsys, "export", "--checkpoint", tmp_path / "missing.ckpt", "--to", blocker / "m.safetensors")
    assert_one_line_error(code, err, "is a file, not a folder")
    assert blocker.read_text() == "x"
    code, _, err = run_cli(capsys, "export", "--checkpoint", tmp_path / "missing.ckpt",
                           "--to", tmp_path / "n.safetensors")
    assert_one_line_error(code, err, "does not exist")
    code, _, _ = run_cli(capsys, "export", "--checkpoint", ckpt, "--to", to, "--overwrite")
    assert code == 0 and torch.equal(logits_of(load_checkpoint(to)), logits_of(load_checkpoint(ckpt)))
    assert temp_files(tmp_path) == []


def test_export_on_a_full_disk_keeps_the_old_file(trained_run, tmp_path, capsys, monkeypatch):
    to = tmp_path / "model.safetensors"
    assert run_cli(capsys, "export", "--checkpoint", trained_run / "best.ckpt", "--to", to)[0] == 0
    before = digest(to)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = run_cli(capsys, "export", "--checkpoint", trained_run / "last.ckpt", "--to", to, "--overwrite")
    assert_one_line_error(code, err, "No space left on device", "free disk space")
    assert digest(to) == before and temp_files(tmp_path) == []


@pytest.mark.parametrize("code_, words", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied"),
                                          (errno.EDQUOT, "quota")])
def test_export_write_errors_give_the_os_reason_and_fitting_advice(trained_run, tmp_path, capsys, monkeypatch,
                                                                   code_, words):
    """Freeing disk space cures only a full disk or quota; any other OS error must not send the user there."""
    def fail(fd: int) -> None:
        raise OSError(code_, os.strerror(code_))

    monkeypatch.setattr(os, "fsync", fail)
    to = tmp_path / "model.safetensors"
    code, _, err = run_cli(capsys, "export", "--checkpoint", trained_run / "best.ckpt", "--to", to)
    line = assert_one_line_error(code, err, f"could not write {to}", words, "choose another --to")
    assert ("free disk space" in line) == (code_ == errno.EDQUOT)
    assert not to.exists() and temp_files(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_export_into_proc_names_the_os_reason_not_disk_space(trained_run, capsys):
    code, _, err = run_cli(capsys, "export", "--checkpoint", trained_run / "best.ckpt", "--to", "/proc/x.safetensors")
    line = assert_one_line_error(code, err, "/proc/x.safetensors", "choose another --to")
    assert "disk space" not in line


def test_bad_safetensors_files_get_one_line(tmp_path, capsys):
    from safetensors.torch import save_file

    from wordformer.checkpoint import safetensors_bytes

    loaded = tiny_loaded("word")
    good = safetensors_bytes(loaded)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    entry = wordformer_entry(loaded.model_config, loaded.data_config, loaded.train_config, loaded.tokenizer)
    future = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(2)}, str(future), metadata={"wordformer": json.dumps({**entry, "format_version": 99})})
    bad_json = tmp_path / "badjson.safetensors"
    save_file({"w": torch.zeros(2)}, str(bad_json), metadata={"wordformer": "{not json"})
    wrong = tmp_path / "wrong.safetensors"
    save_file({"w": torch.zeros(2)}, str(wrong), metadata={"wordformer": json.dumps(entry)})
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    cases = [(truncated, "not a readable safetensors file"), (plain, "not a wordformer export"),
             (future, "newer than this wordformer reads"), (bad_json, "not valid JSON"),
             (wrong, "weights do not match"), (tmp_path / "none.safetensors", "does not exist")]
    for path, words in cases:
        code, _, err = run_cli(capsys, "generate", "--checkpoint", path, "--prompt", "the")
        assert_one_line_error(code, err, words)


# ------------------------------------------------------------------------------------------ 2. crash-safe saving


@pytest.mark.parametrize("fault", ["write", "fsync", "replace", "interrupt"])
def test_a_failed_save_keeps_the_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch, fault):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.arange(4.0)}, path)
    before = digest(path)
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class Proxy:
        """The os module seen by checkpoint.py, with one call failing."""

        def __getattr__(self, name):
            return getattr(os, name)

        def fdopen(self, fd, mode):
            fh = os.fdopen(fd, mode)
            if fault == "write":
                real = fh.write

                def half(data):  # half the bytes reach the disk, then it is full
                    real(data[: len(data) // 2])
                    raise enospc

                fh.write = half
            return fh

        def fsync(self, fd):
            if fault == "fsync":
                raise enospc
            return os.fsync(fd)

        def replace(self, src, dst):
            if fault == "replace":
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            if fault == "interrupt":
                raise KeyboardInterrupt  # Ctrl-C between writing and renaming
            return os.replace(src, dst)

    monkeypatch.setattr(files_module, "os", Proxy())
    expected = KeyboardInterrupt if fault == "interrupt" else WordformerError
    with pytest.raises(expected) as info:
        atomic_torch_save({"step": 2, "w": torch.zeros(1000)}, path)
    if expected is WordformerError:
        assert "could not write checkpoint" in str(info.value) and "\n" not in str(info.value)
    assert digest(path) == before
    assert temp_files(tmp_path) == []
    assert torch.load(path, weights_only=True)["step"] == 1


@pytest.mark.slow
def test_sigkill_during_a_save_leaves_the_previous_file(tmp_path):
    """A process killed between fsync and rename: the old file is untouched, the new bytes sit in a temp file."""
    path = tmp_path / "last.ckpt"
    atomic_write_bytes(b"old checkpoint", path)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: hang inside the save once the data is on disk
        try:
            os.close(read_fd)
            real_fsync = os.fsync

            def fsync_then_hang(fd: int) -> None:
                real_fsync(fd)
                os.write(write_fd, b"x")
                time.sleep(60)

            os.fsync = fsync_then_hang
            atomic_write_bytes(b"new checkpoint " * 1000, path)
        finally:
            os._exit(1)
    os.close(write_fd)
    assert os.read(read_fd, 1) == b"x"  # the child is inside the save
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(read_fd)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert path.read_bytes() == b"old checkpoint"
    leftovers = temp_files(tmp_path)  # SIGKILL runs no cleanup: the temp file stays, the target is intact
    assert len(leftovers) == 1 and leftovers[0].read_bytes() == b"new checkpoint " * 1000


def test_saved_files_get_the_permissions_open_would_give(tmp_path):
    """mkstemp creates 0600 files; a checkpoint or export renamed into place must not stay private by accident."""
    from wordformer.checkpoint import save_safetensors

    mask = os.umask(0o022)
    try:
        atomic_torch_save({"w": torch.zeros(1)}, tmp_path / "new.ckpt")
        save_safetensors(tiny_loaded("char"), tmp_path / "new.safetensors")
        existing = tmp_path / "shared.ckpt"
        existing.write_bytes(b"old")
        existing.chmod(0o640)
        atomic_torch_save({"w": torch.zeros(1)}, existing)
    finally:
        os.umask(mask)
    assert (tmp_path / "new.ckpt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "new.safetensors").stat().st_mode & 0o777 == 0o644
    assert existing.stat().st_mode & 0o777 == 0o640  # replacing a file keeps its permissions


RUN = ["--d-model", "16", "--num-heads", "2", "--num-layers", "1", "--block-size", "8", "--batch-size", "4",
       "--max-steps", "60", "--eval-interval", "10", "--eval-batches", "2", "--warmup-steps", "2",
       "--dropout", "0.1", "--log-every", "1", "--no-progress"]


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two uninterrupted 60-step runs of the same seed, and the data they read."""
    root = tmp_path_factory.mktemp("reference")
    data = root / "small.txt"
    data.write_text(SMALL_TEXT, encoding="utf-8")
    runs = []
    for name in ("a", "b"):
        out = root / name
        assert main(["train", "--data", str(data), "--out", str(out), "--cache-dir", str(root / "cache"), *RUN]) == 0
        runs.append(out)
    return runs[0], runs[1], data


def train_losses(run: Path) -> dict[int, str]:
    """step -> train_loss exactly as written in the CSV log (compared as text: bitwise)."""
    with open(run / "logs" / "csv" / "metrics.csv") as fh:
        return {int(r["step"]): r["train_loss"] for r in csv.DictReader(fh) if r.get("train_loss")}


@pytest.mark.slow
def test_same_seed_gives_bitwise_identical_loss_curves_and_weights(reference_runs):
    a, b, _ = reference_runs
    losses = train_losses(a)
    assert len(losses) == 60
    assert losses == train_losses(b)
    wa, wb = load_checkpoint(a / "last.ckpt").model.state_dict(), load_checkpoint(b / "last.ckpt").model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["wordformer"]["info"]["step"])
    except Exception:  # not written yet, or being replaced
        return -1


def kill_after_checkpoint(argv: list[str], out: Path, step: int) -> Path:
    """Run ``wordformer ARGV`` in a child process and SIGKILL it once ``out/last.ckpt`` holds ``step`` or later."""
    proc = subprocess.Popen([sys.executable, "-m", "wordformer.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=one_thread_env())
    last, seen = out / "last.ckpt", None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        stamp = last.stat().st_mtime_ns if last.exists() else None
        if stamp is not None and stamp != seen:
            seen = stamp
            if checkpoint_step(last) >= step:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"not killed (rc {proc.returncode}): {proc.stderr.read()[-2000:]}"
    return last


def assert_resumed_like_the_reference(out: Path, reference: Path) -> None:
    """The resumed run in ``out`` ended at step 60 with the losses and weights of the uninterrupted ``reference``."""
    resumed, full = load_checkpoint(out / "last.ckpt"), load_checkpoint(reference / "last.ckpt")
    assert resumed.info["step"] == full.info["step"] == 60
    for metric in ("train_loss", "val_loss"):
        assert resumed.info["metrics"][metric] == pytest.approx(full.info["metrics"][metric], abs=1e-6), metric
    wa, wb = resumed.model.state_dict(), full.model.state_dict()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6), key


@pytest.mark.slow
def test_resume_after_sigkill_matches_the_uninterrupted_run(reference_runs, tmp_path, capsys):
    """SIGKILL ``wordformer train`` after its step-10 checkpoint, resume, and land on the same weights.

    Dropout is on, so this also checks that the RNG state is restored exactly where training resumes.
    """
    reference, _, data = reference_runs
    out = tmp_path / "killed"
    last = kill_after_checkpoint(["train", "--data", str(data), "--out", str(out), *RUN], out, 10)
    assert 10 <= checkpoint_step(last) < 60
    # a kill in the middle of a save leaves its temp file (see test_sigkill_during_a_save_leaves_the_previous_file);
    # the resumed run clears those, and only those
    stale, other = out / ".last.ckpt.k1ll3d.tmp", out / ".notes.tmp"
    stale.write_bytes(b"half a checkpoint")
    other.write_bytes(b"the user's")
    code, _, err = run_cli(capsys, "train", "--resume", out, "--no-progress")
    assert code == 0, err
    assert not stale.exists() and other.read_bytes() == b"the user's"
    assert_resumed_like_the_reference(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("signalled_at, saved_at", [(23, 24), (29, 30)])
def test_ctrl_c_saves_the_step_reached_and_the_resume_matches_the_uninterrupted_run(
        reference_runs, tmp_path, capsys, monkeypatch, signalled_at, saved_at):
    """A real SIGINT in the middle of a training step: the step finishes, last.ckpt is saved at the step reached
    (at 24; at 30, a validation step, by the validation's own save) and the resumed run lands on the weights
    and losses of the run that was never interrupted (dropout on: the RNG continues exactly too)."""
    from wordformer.training import WordPredictorModule

    reference, _, data = reference_runs
    real = WordPredictorModule.training_step

    def ctrl_c(self, batch, *args):
        if self.global_step == signalled_at:
            os.kill(os.getpid(), signal.SIGINT)  # delivered between two bytecodes of this step, as Ctrl-C is
        return real(self, batch, *args)

    monkeypatch.setattr(WordPredictorModule, "training_step", ctrl_c)
    out = tmp_path / "interrupted"
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", out, *RUN)
    assert code == 130, err
    assert f"at step {saved_at}, saved in {out / 'last.ckpt'}" in err and f"--resume {out}" in err, err
    assert checkpoint_step(out / "last.ckpt") == saved_at
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the next Ctrl-C works as usual
    monkeypatch.undo()
    code, _, err = run_cli(capsys, "train", "--resume", out, "--no-progress")
    assert code == 0, err
    assert_resumed_like_the_reference(out, reference)
    ours, theirs = train_losses(out), train_losses(reference)
    assert sorted(ours) == sorted(theirs) == list(range(60))  # one history, no step lost or repeated
    assert all(float(ours[s]) == pytest.approx(float(theirs[s]), abs=1e-6) for s in ours)


RECIPES = {  # issue 15: Muon (its momentum warm-up in the scheduler state) and the WSD schedule, with RoPE and friends
    "muon": ["--optimizer", "muon", "--muon-momentum-warmup", "30", "--positional", "rope", "--qk-norm",
             "--norm-type", "rmsnorm", "--activation", "swiglu"],
    "wsd": ["--schedule", "wsd", "--cooldown-fraction", "0.5", "--activation", "relu2", "--no-tie-weights",
            "--zero-init-output", "--logit-softcap", "10"],
    "muon+wsd": ["--preset", "fast", "--schedule", "wsd"],
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_muon_and_wsd_runs_resume_after_sigkill_to_bitwise_equal_weights(tmp_path, capsys, recipe):
    data = tmp_path / "small.txt"
    data.write_text(SMALL_TEXT, encoding="utf-8")
    argv = ["--data", str(data), "--cache-dir", str(tmp_path / "cache"), *RUN, *RECIPES[recipe]]
    reference, out = tmp_path / "reference", tmp_path / "killed"
    assert main(["train", "--out", str(reference), *argv]) == 0
    last = kill_after_checkpoint(["train", "--out", str(out), *argv], out, 20)  # after the warm-ups began
    assert 20 <= checkpoint_step(last) < 60
    code, _, err = run_cli(capsys, "train", "--resume", out, "--no-progress")
    assert code == 0, err
    resumed, full = load_checkpoint(out / "last.ckpt"), load_checkpoint(reference / "last.ckpt")
    assert resumed.info["step"] == full.info["step"] == 60
    assert resumed.train_config == full.train_config
    wa, wb = resumed.model.state_dict(), full.model.state_dict()
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert train_losses(out) == train_losses(reference)  # every logged step, as text: bitwise
    optimizer_a = torch.load(out / "last.ckpt", weights_only=True)["optimizer_states"][0]
    optimizer_b = torch.load(reference / "last.ckpt", weights_only=True)["optimizer_states"][0]
    assert optimizer_a["param_groups"] == optimizer_b["param_groups"]  # lr and Muon's momentum at step 60
    for key, state in optimizer_b["state"].items():
        for name, value in state.items():
            assert torch.equal(optimizer_a["state"][key][name], value), (key, name)


# ------------------------------------------------------------------------------------------ NaN, unwritable, full disk


@pytest.mark.parametrize("poison, log_every, words", [
    ("nan", "1", ["NaN or infinite", "step 8"]),  # caught by the training-loss check
    ("inf", "50", ["validation loss is nan", "step 12"]),  # caught at the next validation
])
def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(small_text, tmp_path, capsys,
                                                                              monkeypatch, poison, log_every, words):
    from wordformer.training import WordPredictorModule

    real = WordPredictorModule._loss

    def poisoned(self, batch):
        loss, logits, y = real(self, batch)
        if self.training and self.global_step >= 8:
            loss = loss * float(poison)
        return loss, logits, y

    monkeypatch.setattr(WordPredictorModule, "_loss", poisoned)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", out, *TINY_TRAIN, "--log-every", log_every)
    assert_one_line_error(code, err, *words)
    for name in ("last.ckpt", "best.ckpt"):
        kept = load_checkpoint(out / name)
        assert kept.info["step"] == 6
        assert all(torch.isfinite(t).all() for t in kept.model.state_dict().values())


def test_an_unwritable_output_folder_gets_one_line(small_text, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out, why in ((blocker, "is a file, not a folder"), (blocker / "run", f"{blocker} is a file, not a folder"),
                     (Path("/proc/wordformer-run"), "cannot make folder")):
        code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", out, *TINY_TRAIN)
        assert_one_line_error(code, err, why, str(out), "choose another --out")
    assert blocker.read_text() == "not a folder"


def test_a_disk_that_fills_during_training_keeps_the_good_checkpoint(small_text, tmp_path, capsys, monkeypatch):
    """The step-12 save hits ENOSPC half-way: one line, the step-6 files untouched, no temp file left."""
    real_write = files_module.atomic_write
    snapshots: dict[Path, str] = {}
    calls = [0]

    def filling(path, write):
        calls[0] += 1
        if calls[0] <= 2:  # best.ckpt and last.ckpt at step 6
            return real_write(path, write)
        path = Path(path)
        snapshots[path] = digest(path) if path.exists() else ""

        class Full:
            def __getattr__(self, name):
                return getattr(os, name)

            def fdopen(self, fd, mode):
                fh = os.fdopen(fd, mode)
                real = fh.write

                def half(chunk):
                    real(chunk[: len(chunk) // 2])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                fh.write = half
                return fh

        monkeypatch.setattr(files_module, "os", Full())
        try:
            return real_write(path, write)
        finally:
            monkeypatch.setattr(files_module, "os", os)

    monkeypatch.setattr(files_module, "atomic_write", filling)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", out, *TINY_TRAIN)
    assert_one_line_error(code, err, "could not write checkpoint", "No space left on device")
    assert snapshots, "the fault was never injected"
    for path, before in snapshots.items():
        assert before and digest(path) == before, path
    assert load_checkpoint(out / "last.ckpt").info["step"] == 6
    assert temp_files(out) == []
