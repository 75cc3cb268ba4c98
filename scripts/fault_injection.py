#!/usr/bin/env python
"""Inject faults into wordformer and report what survived, as the Markdown tables of RELIABILITY.md.

    python scripts/fault_injection.py                     # everything, 50 MB corpus included (~2-4 min CPU)
    python scripts/fault_injection.py --quick             # 5 MB instead of 50 MB, two kills instead of four
    python scripts/fault_injection.py --report out.md     # also write the report to a file
    python scripts/fault_injection.py --tune              # also run the tuning kill tests (tests/test_tune_*)

Why a script as well as the tests: the tests assert, this records. It runs the same bad-input cases as
``tests/test_bad_inputs.py`` (imported from there, so the two cannot drift apart) through
``wordformer.cli.main`` and prints, per case, the exit status and the one line the user sees; then it
kills training processes (SIGKILL at random steps and in the middle of a checkpoint save), fills the
disk, poisons the loss with NaN, trains on one 50 MB line, and feeds malicious checkpoints to every
command. Exit status 0 when every row behaved as specified, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the case tables live in the tests
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest, and busy machines do not spin

import torch  # noqa: E402

torch.set_num_threads(1)

from conftest import SMALL_TEXT, TINY_TRAIN  # noqa: E402
from wordformer.cli import main  # noqa: E402

TRAIN_ARGS = ["--d-model", "16", "--num-heads", "2", "--num-layers", "1", "--block-size", "8", "--batch-size", "4",
              "--eval-batches", "2", "--warmup-steps", "2", "--dropout", "0.1", "--log-every", "1", "--no-progress"]
ONE_STEP = ["--max-steps", "1", "--eval-interval", "1", "--eval-batches", "1"]
WORK: Optional[Path] = None  # the scratch folder, left out of the messages in the report


# ------------------------------------------------------------------------------------------ running the CLI


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    crash: Optional[str] = None  # "ExcType: message" when main() raised instead of returning

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.startswith("wordformer: error:")]

    def one_line_error(self) -> bool:
        return self.crash is None and self.code == 2 and len(self.error_lines) == 1 and "Traceback" not in self.err

    def summary(self, width: int = 110) -> str:
        if self.crash:
            text = f"TRACEBACK {self.crash}"
        elif self.error_lines:
            text = self.error_lines[0].removeprefix("wordformer: error: ")
        else:
            usage = [ln for ln in self.err.splitlines() if "error:" in ln]
            text = usage[0] if usage else (self.out.strip().splitlines() or [""])[-1]
        if WORK is not None:  # scratch paths say nothing: keep the file name only
            text = re.sub(re.escape(str(WORK)) + r"/(?:tmp\w+/)?", "", text)
        text = text.replace("|", "\\|").replace("`", "'")
        return text if len(text) <= width else text[: width - 1] + "…"


def run(argv: Sequence[object]) -> Outcome:
    """``wordformer ARGV`` in this process, capturing what the user would see."""
    out, err = io.StringIO(), io.StringIO()
    crash = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        except BaseException as exc:  # a bug: the user would see a traceback
            code, crash = 1, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    return Outcome(code, out.getvalue(), err.getvalue(), crash)


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.ckpt"))}


def checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["wordformer"]["info"]["step"])
    except Exception:
        return -1


# ------------------------------------------------------------------------------------------ the bad-input matrix


@dataclass
class Row:
    category: str
    case: str
    expected: str  # "exit 2" or "works"
    outcome: Outcome
    ok: bool

    def markdown(self, number: int) -> str:
        got = "traceback" if self.outcome.crash else f"exit {self.outcome.code}"
        verdict = "ok" if self.ok else "**FAIL**"
        cells = [str(number), self.category, self.case, self.expected, got, self.outcome.summary(), verdict]
        return "| " + " | ".join(cells) + " |"


class Matrix:
    """Runs cases against a scratch folder and a previous run that must never change."""

    def __init__(self, work: Path) -> None:
        self.work, self.rows = work, []
        self.data = work / "small.txt"
        self.data.write_text(SMALL_TEXT, encoding="utf-8")
        self.run_dir = work / "good-run"
        outcome = run(["train", "--data", self.data, "--out", self.run_dir, *TINY_TRAIN])
        assert outcome.code == 0, outcome.err
        self.good = self.run_dir / "best.ckpt"

    def scratch(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.work))

    def prior(self) -> Path:
        """A copy of the good run, handed to a failing command as --out (with --overwrite)."""
        out = self.scratch() / "prior"
        out.mkdir()
        for name in ("best.ckpt", "last.ckpt"):
            shutil.copy2(self.run_dir / name, out / name)
        return out

    def check(self, category: str, case: str, argv: Sequence[object], *, works: bool = False,
              words: Sequence[str] = (), prior: Optional[Path] = None) -> Row:
        before = fingerprint(prior) if prior else None
        outcome = run(argv)
        if works:
            ok = outcome.code == 0 and outcome.crash is None and not outcome.error_lines
        else:
            line = outcome.error_lines[0] if outcome.error_lines else ""
            ok = outcome.one_line_error() and all(w in line for w in words)
        if prior is not None and fingerprint(prior) != before:
            ok = False
            outcome.err += "\nwordformer: error: (fault injection) a checkpoint in --out was changed"
        row = Row(category, case, "works" if works else "exit 2", outcome, ok)
        self.rows.append(row)
        print(("  ok    " if ok else "  FAIL  ") + f"{category}: {case}", file=sys.__stderr__, flush=True)
        return row

    # -- the case tables of tests/test_bad_inputs.py

    def data_cases(self, big_line_mb: int) -> None:
        from test_bad_inputs import DATA_CASES

        for name, (make, words) in DATA_CASES.items():
            prior = self.prior()
            self.check("data", name, ["train", *make(self.scratch()), "--out", prior, "--overwrite", *TINY_TRAIN],
                       words=words, prior=prior)
        folder = self.scratch() / "mixed"
        folder.mkdir()
        (folder / "windows.txt").write_bytes(SMALL_TEXT.replace("\n", "\r\n").encode())
        (folder / "latin.txt").write_bytes("caf\xe9 au lait\r\n".encode("latin-1") * 20)
        self.check("data", "CRLF + latin-1 with --encoding-errors replace", ["train", "--data", folder, "--out",
                   self.scratch() / "o", "--tokenizer", "char", "--encoding-errors", "replace", *TINY_TRAIN, *ONE_STEP],
                   works=True)
        line = self.scratch() / "one-line.txt"
        pattern = "the quick brown fox jumps over the lazy dog; "
        line.write_text((pattern * (big_line_mb * 1_000_000 // len(pattern) + 1))[: big_line_mb * 1_000_000])
        started = time.perf_counter()
        row = self.check("data", f"one line of {big_line_mb} MB, char tokenizer", ["train", "--data", line, "--out",
                         self.scratch() / "o", "--tokenizer", "char", *TINY_TRAIN, *ONE_STEP], works=True)
        row.case += f" ({time.perf_counter() - started:.1f} s)"
        line.unlink()
        short = self.scratch() / "short.txt"
        short.write_text("the cat")
        self.check("data", "evaluate on text shorter than a block", ["evaluate", "--checkpoint", self.good, "--data",
                   short], words=["fewer than block_size"])

    def config_cases(self) -> None:
        from test_bad_inputs import OPTION_CASES, UNCHECKED_CASES, YAML_CASES

        for name, (content, words) in YAML_CASES.items():
            config = self.scratch() / "cfg.yaml"
            config.write_text(content)
            prior = self.prior()
            self.check("config", f"YAML: {name}", ["train", "--config", config, "--data", self.data, "--out", prior,
                       "--overwrite"], words=words, prior=prior)
        self.check("config", "YAML file missing", ["train", "--config", self.work / "none.yaml", "--out",
                   self.scratch() / "o"], words=["does not exist"])
        for options, words in OPTION_CASES + UNCHECKED_CASES:
            name = " ".join(options).replace("{tmp}/", "")
            options = [o.replace("{tmp}", str(self.scratch())) for o in options]
            prior = self.prior()
            self.check("config", name, ["train", "--data", self.data, "--out", prior, "--overwrite",
                       *TINY_TRAIN, *ONE_STEP, *options], words=words, prior=prior)
        for bad in (["--d-model", "abc"], ["--tokenizer", "words"]):
            outcome = run(["train", "--out", self.scratch() / "o", *bad])
            ok = outcome.code == 2 and outcome.crash is None and "Traceback" not in outcome.err
            self.rows.append(Row("config", " ".join(bad) + " (argparse's own message)", "exit 2", outcome, ok))

    def checkpoint_cases(self) -> None:
        from test_bad_inputs import CHECKPOINT_CASES

        for name, (make, words) in CHECKPOINT_CASES.items():
            path = make(self.run_dir / "last.ckpt", self.scratch())
            self.check("checkpoint", name, ["generate", "--checkpoint", path, "--prompt", "the"], words=words)
        for name in ("truncated", "future format version"):
            make, words = CHECKPOINT_CASES[name]
            run_dir = self.scratch() / "run"
            run_dir.mkdir()
            make(self.run_dir / "last.ckpt", self.scratch()).rename(run_dir / "last.ckpt")
            self.check("checkpoint", f"train --resume with a {name} last.ckpt", ["train", "--resume", run_dir,
                       "--no-progress"], words=words, prior=run_dir)

    def prompt_cases(self) -> None:
        from test_bad_inputs import GENERATION_CASES, hand_built

        models = {kind: hand_built(self.scratch() / f"{kind}.ckpt", kind, [SMALL_TEXT, "naïve café\n"])
                  for kind in ("char", "bpe")}
        for prompt, words in [("", ["empty"]), ("   ", ["empty"]), ("zebra okapi", ["unknown"])]:
            self.check("prompt", f"word model, prompt {prompt!r}", ["generate", "--checkpoint", self.good, "--prompt",
                       prompt], words=words)
        self.check("prompt", "char model, only emoji", ["generate", "--checkpoint", models["char"], "--prompt",
                   "🙂🙂"], words=["unknown"])
        for label, path, prompt in [("word", self.good, "the café 🙂 cat"),
                                    ("char", models["char"], "the 🙂 ñ 漢字"),
                                    ("bpe", models["bpe"], "🙂 naïve 漢字")]:
            self.check("prompt", f"{label} model, non-ASCII and emoji", ["generate", "--checkpoint", path, "--prompt",
                       prompt, "--max-new-tokens", "4", "--seed", "0"], works=True)
        self.check("prompt", "longer than the context (keeps the last block_size tokens)", ["generate",
                   "--checkpoint", self.good, "--prompt", "the cat sat on the mat . " * 10, "--max-new-tokens", "4"],
                   works=True)
        for options, words in GENERATION_CASES:
            self.check("generation", " ".join(options), ["generate", "--checkpoint", self.good, "--prompt", "the",
                       *options], words=words)
        self.check("generation", "--temperature 0 (greedy)", ["generate", "--checkpoint", self.good, "--prompt", "the",
                   "--temperature", "0"], works=True)
        self.check("generation", "--max-new-tokens 0", ["generate", "--checkpoint", self.good, "--prompt", "the",
                   "--max-new-tokens", "0"], works=True)
        self.check("generation", "predict --k 0", ["predict", "--checkpoint", self.good, "--prompt", "the", "--k", "0"],
                   words=["k=0"])
        self.check("generation", "evaluate --batch-size 0", ["evaluate", "--checkpoint", self.good,
                                                             "--batch-size", "0"],
                   words=["batch_size"])

    def output_cases(self) -> None:
        blocker = self.scratch() / "a-file"
        blocker.write_text("x")
        for out, name in ((blocker / "run", "FILE/run"), (Path("/proc/wordformer-run"), "/proc/wordformer-run")):
            self.check("output", f"--out {name} (cannot be created)", ["train", "--data", self.data, "--out", out,
                       *TINY_TRAIN], words=["cannot make folder", "choose another --out"])
        self.check("output", "--out holding a run, no --resume/--overwrite", ["train", "--data", self.data, "--out",
                   self.run_dir, *TINY_TRAIN], words=["already holds a run"], prior=self.run_dir)
        target = self.scratch() / "model.safetensors"
        target.write_bytes(b"keep")
        self.check("output", "export --to an existing file", ["export", "--checkpoint", self.good, "--to", target],
                   words=["already exists"])
        self.check("output", "export --to NAME.bin", ["export", "--checkpoint", self.good, "--to",
                   self.scratch() / "m.bin"], words=[".safetensors"])


# ------------------------------------------------------------------------------------------ faults


@dataclass
class Fault:
    fault: str
    injected: str
    survived: str
    ok: bool

    def markdown(self) -> str:
        return f"| {self.fault} | {self.injected} | {self.survived} | {'ok' if self.ok else '**FAIL**'} |"


def train_subprocess(argv: Sequence[object], *, wrapper: Optional[str] = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", wrapper, *map(str, argv)] if wrapper else [sys.executable, "-m", "wordformer.cli",
                                                                            *map(str, argv)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def same_weights(a: Path, b: Path) -> tuple[bool, float]:
    from wordformer import load_checkpoint

    wa, wb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    return diff == 0.0, diff


def final_loss(path: Path) -> float:
    from wordformer import load_checkpoint

    return float(load_checkpoint(path).info["metrics"]["train_loss"])


def kill_during_training(work: Path, data: Path, reference: Path, kill_at: int, steps: int) -> Fault:
    """SIGKILL ``wordformer train`` once last.ckpt reaches ``kill_at``, then resume and compare."""
    out = work / f"killed-{kill_at}"
    proc = train_subprocess(["train", "--data", data, "--out", out, "--max-steps", steps, "--eval-interval", "10",
                             *TRAIN_ARGS])
    last, seen, step = out / "last.ckpt", None, -1
    while proc.poll() is None:
        stamp = last.stat().st_mtime_ns if last.exists() else None
        if stamp != seen and stamp is not None:
            seen, step = stamp, checkpoint_step(last)
            if step >= kill_at:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.005)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    resumed = run(["train", "--resume", out, "--no-progress"])
    equal, diff = same_weights(out / "last.ckpt", reference / "last.ckpt") if resumed.code == 0 else (False, -1.0)
    loss_gap = abs(final_loss(out / "last.ckpt") - final_loss(reference / "last.ckpt")) if resumed.code == 0 else -1
    return Fault("SIGKILL during training", f"killed after the step-{step} checkpoint (of {steps}), then "
                 f"`train --resume`", f"resumed to step {steps}: final train loss differs by {loss_gap:.1e}, weights "
                 f"{'bitwise equal' if equal else f'differ by {diff:.1e}'} to the uninterrupted run",
                 killed and resumed.code == 0 and loss_gap <= 1e-6)


HANG_IN_SAVE = textwrap.dedent("""
    import os, sys, time
    import wordformer.checkpoint as ck
    real_replace, saves = os.replace, [0]
    class OS:
        def __getattr__(self, name):
            return getattr(os, name)
        def replace(self, src, dst):
            if str(dst).endswith("last.ckpt"):
                saves[0] += 1
                if saves[0] == 2:  # the second last.ckpt: data written and fsynced, rename pending
                    print("IN-SAVE", src, flush=True)
                    time.sleep(600)
            return real_replace(src, dst)
    ck.os = OS()
    from wordformer.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def kill_during_save(work: Path, data: Path, reference: Path, steps: int) -> Fault:
    """SIGKILL a real training run between writing its step-20 checkpoint and renaming it into place."""
    out = work / "killed-in-save"
    proc = train_subprocess(["train", "--data", data, "--out", out, "--max-steps", steps, "--eval-interval", "10",
                             *TRAIN_ARGS], wrapper=HANG_IN_SAVE)
    in_save = any(line.startswith("IN-SAVE") for line in iter(proc.stdout.readline, ""))  # stops at IN-SAVE or EOF
    before_kill = checkpoint_step(out / "last.ckpt")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = sorted(out.glob(".last.ckpt.*.tmp"))
    step_after_kill = checkpoint_step(out / "last.ckpt")
    resumed = run(["train", "--resume", out, "--no-progress"])
    left_after_resume = sorted(out.glob(".*.ckpt.*.tmp"))
    equal, diff = same_weights(out / "last.ckpt", reference / "last.ckpt") if resumed.code == 0 else (False, -1.0)
    ok = (in_save and before_kill == step_after_kill == 10 and resumed.code == 0 and equal and len(leftovers) == 1
          and not left_after_resume)
    return Fault("SIGKILL during a checkpoint save", "training killed after the step-20 last.ckpt was written and "
                 "fsynced but before its rename", f"last.ckpt still the complete step-{step_after_kill} file; "
                 f"{len(leftovers)} orphaned temp file (SIGKILL runs no cleanup), {len(left_after_resume)} after "
                 f"the resume (it removes them); resume gave weights "
                 f"{'bitwise equal' if equal else f'differing by {diff:.1e}'} to the uninterrupted run", ok)


def kill_during_atomic_write(work: Path) -> Fault:
    """A forked process killed inside atomic_write_bytes after fsync: the target keeps its old bytes."""
    from wordformer.files import atomic_write_bytes

    path = work / "atomic.bin"
    atomic_write_bytes(b"old", path)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            real = os.fsync

            def hang(fd: int) -> None:
                real(fd)
                os.write(write_fd, b"x")
                time.sleep(600)

            os.fsync = hang
            atomic_write_bytes(b"new" * 1000, path)
        finally:
            os._exit(1)
    os.read(read_fd, 1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    ok = path.read_bytes() == b"old"
    return Fault("SIGKILL inside atomic_write_bytes", "process killed after fsync of the temp file, before rename",
                 "target file unchanged" if ok else "target file CHANGED", ok)


def full_disk(work: Path, data: Path) -> Fault:
    """ENOSPC half-way through the step-12 checkpoint write."""
    import wordformer.files as ck

    real_write, calls = ck.atomic_write, [0]

    def filling(path, write):
        calls[0] += 1
        if calls[0] <= 2:
            return real_write(path, write)

        class Full:
            def __getattr__(self, name):
                return getattr(os, name)

            def fdopen(self, fd, mode):
                fh = os.fdopen(fd, mode)
                write = fh.write

                def half(chunk):
                    write(chunk[: len(chunk) // 2])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                fh.write = half
                return fh

        ck.os = Full()
        try:
            return real_write(path, write)
        finally:
            ck.os = os

    out = work / "full-disk"
    ck.atomic_write = filling
    try:
        outcome = run(["train", "--data", data, "--out", out, *TINY_TRAIN])
    finally:
        ck.atomic_write = real_write
    step = checkpoint_step(out / "last.ckpt")
    tmp = list(out.glob(".*.tmp"))
    ok = outcome.one_line_error() and step == 6 and not tmp
    return Fault("Disk full (ENOSPC) during a checkpoint save", "the step-12 save fails half-way through writing",
                 f"exit {outcome.code}, one line: `{outcome.summary(90)}`; last.ckpt still step {step}; "
                 f"{len(tmp)} temp files left", ok)


def nan_loss(work: Path, data: Path) -> Fault:
    from wordformer.training import WordPredictorModule

    real = WordPredictorModule._loss

    def poisoned(self, batch):
        loss, logits, y = real(self, batch)
        return (loss * float("nan") if self.training and self.global_step >= 8 else loss), logits, y

    out = work / "nan"
    WordPredictorModule._loss = poisoned
    try:
        outcome = run(["train", "--data", data, "--out", out, *TINY_TRAIN, "--log-every", "1"])
    finally:
        WordPredictorModule._loss = real
    step = checkpoint_step(out / "last.ckpt")
    return Fault("NaN loss", "loss multiplied by NaN from step 8 on", f"exit {outcome.code}: `{outcome.summary(90)}`; "
                 f"last.ckpt kept at step {step}", outcome.one_line_error() and step == 6)


def big_line_subprocess(work: Path, megabytes: int) -> Fault:
    """Train (one step) on a single line of ``megabytes`` MB with the char tokenizer, in a child to measure memory."""
    path = work / f"line-{megabytes}mb.txt"
    pattern = "the quick brown fox jumps over the lazy dog; "
    with open(path, "w") as fh:
        for _ in range(megabytes):
            fh.write((pattern * (1_000_000 // len(pattern) + 1))[:1_000_000])
    started = time.perf_counter()
    proc = train_subprocess(["train", "--data", path, "--out", work / f"line-{megabytes}", "--tokenizer", "char",
                             "--cache-dir", work / "line-cache", *TINY_TRAIN, *ONE_STEP])
    _, err = proc.communicate()
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    path.unlink()
    ok = proc.returncode == 0
    return Fault(f"One {megabytes} MB line (char tokenizer)", "`wordformer train --tokenizer char` on a file with no "
                 "line break", f"exit {proc.returncode} in {seconds:.1f} s, peak memory of the child "
                 f"≈ {peak_mb:.0f} MB" + ("" if ok else f": {err.strip().splitlines()[-1:]}"), ok)


def malicious(work: Path, good: Path, data: Path) -> list[Fault]:
    """Checkpoints whose unpickling would run code, against every command that reads one."""
    from test_reliability import OpenFile, Shell, evil_checkpoint

    faults = []
    payloads = {
        "open(path, 'w')": lambda marker: OpenFile(marker),
        "os.system('touch ...')": lambda marker: Shell(f"touch {marker}"),
    }
    for label, payload in payloads.items():
        marker = work / f"pwned-{len(faults)}"
        evil = evil_checkpoint(work / f"evil-{len(faults)}.ckpt", payload(marker), good)
        resume_dir = work / f"evil-run-{len(faults)}"
        resume_dir.mkdir()
        shutil.copy(evil, resume_dir / "last.ckpt")
        results = []
        for argv in (["generate", "--checkpoint", evil, "--prompt", "the"], ["predict", "--checkpoint", evil,
                     "--prompt", "the"], ["evaluate", "--checkpoint", evil], ["export", "--checkpoint", evil, "--to",
                     work / "evil.safetensors"], ["train", "--resume", resume_dir, "--no-progress"]):
            outcome = run(argv)
            results.append(outcome.one_line_error() and "refusing to load" in outcome.err and not marker.exists())
        proc = subprocess.run([sys.executable, "-m", "wordformer.cli", "generate", "--checkpoint", str(evil),
                               "--prompt", "the"], capture_output=True, text=True)
        results.append(proc.returncode == 2 and "refusing to load" in proc.stderr and not marker.exists())
        faults.append(Fault(f"Malicious checkpoint: {label}", "given to generate, predict, evaluate, export, "
                            "train --resume, and `python -m wordformer.cli generate`",
                            f"{sum(results)}/{len(results)} refused in one line; payload never ran "
                            f"({'no' if not marker.exists() else 'A'} marker file)", all(results)))
    # the library path, with torch told to trust pickles
    from wordformer import DataConfig, ModelConfig, TrainConfig, train
    from wordformer.errors import WordformerError

    out = work / "library-resume"
    cfgs = (ModelConfig(d_model=16, num_heads=2, num_layers=1, block_size=8), DataConfig(data=str(data)),
            TrainConfig(max_steps=4, batch_size=4, eval_interval=2, eval_batches=1, warmup_steps=1, progress=False))
    train(*cfgs, out, logger=False)
    marker = work / "pwned-library"
    evil_checkpoint(out / "last.ckpt", OpenFile(marker), out / "last.ckpt")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        train(*cfgs, out, resume=True, logger=False)
        refused = False
    except WordformerError:
        refused = True
    except Exception:
        refused = False
    finally:
        del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
    faults.append(Fault("Malicious checkpoint: library `train(resume=True)`", "with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1",
                        ("refused" if refused else "NOT refused") + ("; payload never ran" if not marker.exists()
                                                                      else "; **the payload ran**"),
                        refused and not marker.exists()))
    return faults


def tune_tests() -> Fault:
    tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_tune_*.py"))
    heartbeat = [t for t in tests if "heartbeat" in (ROOT / t).read_text()]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *heartbeat], cwd=ROOT,
                          capture_output=True, text=True)
    last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    return Fault("SIGKILL of tuning workers", f"`pytest {' '.join(heartbeat)}` (worker killed mid-trial; storage "
                 "resumed)", last, proc.returncode == 0)


# ------------------------------------------------------------------------------------------ report


def report(rows: list[Row], faults: list[Fault], seconds: float, argv: Sequence[str]) -> str:
    shown = [a for i, a in enumerate(argv) if a != "--report" and (i == 0 or argv[i - 1] != "--report")]
    command = " ".join(["python scripts/fault_injection.py", *shown])
    lines = [f"Generated by `{command}` in {seconds:.0f} s "
             f"(torch {torch.__version__}, Python {sys.version.split()[0]}).", ""]
    failed = [r for r in rows if not r.ok]
    by_expect = {e: sum(r.expected == e for r in rows) for e in ("exit 2", "works")}
    lines += [f"**Bad inputs: {len(rows)} tried** ({by_expect['exit 2']} must be refused, {by_expect['works']} must "
              f"work); {len(rows) - len(failed)} behaved as specified, {len(failed)} did not.", "",
              "| # | area | input | expected | got | what the user sees | verdict |", "|---|---|---|---|---|---|---|"]
    lines += [r.markdown(i) for i, r in enumerate(rows, 1)]
    lines += ["", f"**Faults: {len(faults)} injected**; {sum(f.ok for f in faults)} survived as specified.", "",
              "| fault | injected | what survived | verdict |", "|---|---|---|---|"]
    lines += [f.markdown() for f in faults]
    return "\n".join(lines) + "\n"


def main_script(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 MB line instead of 50 MB; two kills instead of four")
    parser.add_argument("--tune", action="store_true", help="also run the tuning kill tests (tests/test_tune_*.py)")
    parser.add_argument("--report", default=None, help="write the Markdown report here as well")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    global WORK
    work = WORK = Path(args.keep or tempfile.mkdtemp(prefix="wordformer-faults-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["WORDFORMER_CACHE"] = str(work / "cache")
    matrix = Matrix(work)
    print("bad inputs:", file=sys.stderr)
    matrix.data_cases(big_line_mb=5)
    matrix.config_cases()
    matrix.checkpoint_cases()
    matrix.prompt_cases()
    matrix.output_cases()

    print("faults:", file=sys.stderr)
    steps = 60
    reference = work / "reference"
    assert run(["train", "--data", matrix.data, "--out", reference, "--max-steps", steps, "--eval-interval", "10",
                *TRAIN_ARGS]).code == 0
    rng = random.Random(0)
    kill_points = [10] + sorted(rng.sample([20, 30, 40, 50], 1 if args.quick else 3))
    faults = [kill_during_training(work, matrix.data, reference, k, steps) for k in kill_points]
    faults += [kill_during_save(work, matrix.data, reference, steps), kill_during_atomic_write(work),
               full_disk(work, matrix.data), nan_loss(work, matrix.data)]
    faults += malicious(work, matrix.run_dir / "last.ckpt", matrix.data)
    faults.append(big_line_subprocess(work, 5 if args.quick else 50))
    if args.tune:
        faults.append(tune_tests())
    for fault in faults:
        print(("  ok    " if fault.ok else "  FAIL  ") + fault.fault, file=sys.stderr)

    text = report(matrix.rows, faults, time.perf_counter() - started, list(argv if argv is not None else sys.argv[1:]))
    print(text)
    if args.report:
        Path(args.report).write_text(text)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.ok for r in matrix.rows) and all(f.ok for f in faults) else 1


if __name__ == "__main__":
    sys.exit(main_script())
