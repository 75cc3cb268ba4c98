"""Peak memory (RSS) of the training and generation workloads, wordformer and the peer, each in its own process.

Every case runs in a fresh child process (alternating cases, several repeats); its peak resident set size is
``ru_maxrss`` from ``os.wait4``. The child is started by a small stdlib-only launcher, because Linux carries
the forking process's RSS into a child's ``ru_maxrss`` across ``exec`` (children forked by this benchmark
directly all reported its own ~435 MiB). As a cross-check the child also reports its ``VmHWM`` as its last
act, and its RSS right after its imports, so the peak splits into "libraries" and "the work itself". Each child
imports what its case needs (the Trainer case imports ``wordformer.training`` and so Lightning; the other
wordformer cases only the model and generation modules; the peer's cases torch and transformers' GPT-2). The training batches are written once by the parent and loaded by every child.

Cases: training at the sizes of bench_train (wordformer through ``wordformer.training.train`` with its
default loggers and progress bar, wordformer's model in the plain loop, the peer in the plain loop) and
generation as in bench_generate (256 tokens with and without wordformer's cache, the peer's ``generate``).

    python -m benchmarks.bench_memory [--quick]
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES = ("train_wordformer_trainer", "train_wordformer_plain", "train_peer_plain",
         "generate_wordformer_cache", "generate_wordformer_no_cache", "generate_peer")
NAME = "memory"
MODULE = "benchmarks.bench_memory"


# ------------------------------------------------------------------------------------ the child


def child(case: str, inputs: Path, steps: int, threads: int) -> None:
    """Run one case and print one JSON line (RSS in KiB)."""
    import torch

    from . import common

    torch.set_num_threads(threads)
    # import what the case needs before the "after imports" reading: the peer's modelling code is loaded
    # lazily by transformers, and wordformer imports Lightning only for training
    if case == "train_wordformer_trainer":
        import wordformer.training  # noqa: F401
    elif "wordformer" in case:
        import wordformer.generation  # noqa: F401
        import wordformer.model  # noqa: F401
    else:
        from transformers import GPT2Config, GPT2LMHeadModel  # noqa: F401
    common.quiet_libraries(lightning=case == "train_wordformer_trainer")
    data = torch.load(inputs, weights_only=True)
    after_imports = common.rss_kb()
    vocab, sizes = int(data["vocab_size"]), dict(common.SIZES)
    sizes.pop("batch_size")
    batches = list(zip(data["x"], data["y"]))
    t0 = time.perf_counter()
    if case == "train_wordformer_trainer":
        import contextlib

        from wordformer.config import DataConfig, ModelConfig, TrainConfig
        from wordformer.training import train

        model = ModelConfig(positional="learned", dropout=0.0, **sizes)
        cfg = TrainConfig(max_steps=steps, batch_size=common.SIZES["batch_size"], seed=common.SEED, accelerator="cpu",
                          devices="1")
        with tempfile.TemporaryDirectory(prefix="wf-mem-") as out, open(os.devnull, "w") as sink, \
                contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            train(model, DataConfig(data=str(common.DATA), tokenizer="char"), cfg, out, overwrite=True)
    elif case == "train_wordformer_plain":
        common.train_plain(common.wordformer_model(vocab, **sizes), common.wordformer_logits, batches, warmup=1,
                           steps=steps - 1)
    elif case == "train_peer_plain":
        common.train_plain(common.peer_model(vocab, **sizes), common.peer_logits, batches, warmup=1, steps=steps - 1)
    else:
        from .bench_generate import model_sizes  # imports nothing heavy

        prompt, new = [int(i) for i in data["prompt"]], int(data["new_tokens"])
        if case == "generate_peer":
            from .bench_generate import peer_generate

            out = peer_generate(common.peer_model(vocab, **model_sizes()).eval(), prompt, new)
        else:
            from .bench_generate import wordformer_generate

            out = wordformer_generate(common.wordformer_model(vocab, **model_sizes()).eval(), prompt, new,
                                      use_cache=case == "generate_wordformer_cache")
        assert len(out) == new
    print(json.dumps({"case": case, "rss_after_imports_kb": after_imports, "hwm_kb": common.rss_kb("VmHWM"),
                      "work_s": time.perf_counter() - t0}), flush=True)


# ------------------------------------------------------------------------------------ the parent


# A stdlib-only launcher between the benchmark (hundreds of MiB) and each measured child: Linux carries the
# forking process's RSS into a child's ru_maxrss across exec, so a child forked by the benchmark itself would
# report at least the benchmark's RSS. Forked by this small launcher, it reports its own peak.
LAUNCHER = """
import json, os, subprocess, sys
with open(sys.argv[1], "w") as out, open(sys.argv[2], "w") as err:
    proc = subprocess.Popen(sys.argv[3:], stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "ru_maxrss_kb": usage.ru_maxrss}))
"""


def run_child(case: str, inputs: Path, steps: int, threads: int) -> dict[str, Any]:
    """Run the child through the launcher; return its report, its ru_maxrss (wait4) and its own VmHWM."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="wf-mem-child-") as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        t0 = time.perf_counter()
        launched = subprocess.run([sys.executable, "-c", LAUNCHER, str(out), str(err), sys.executable, "-m", MODULE,
                                   "--child", case, "--inputs", str(inputs), "--steps", str(steps), "--threads",
                                   str(threads)], cwd=root, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        lines = [ln for ln in out.read_text().splitlines() if ln.startswith("{")] if out.exists() else []
        status = json.loads(launched.stdout.strip().splitlines()[-1]) if launched.stdout.strip() else {"code": -1}
        if launched.returncode != 0 or status["code"] != 0 or not lines:
            detail = err.read_text()[-3000:] if err.exists() else launched.stderr[-3000:]
            raise RuntimeError(f"memory child {case} failed ({status.get('code')}):\n{detail}")
    report = json.loads(lines[-1])
    peak = status["ru_maxrss_kb"]  # KiB on Linux
    return {"peak_rss_mib": peak / 1024, "vmhwm_mib": report["hwm_kb"] / 1024,
            "rss_after_imports_mib": report["rss_after_imports_kb"] / 1024,
            "work_peak_mib": (peak - report["rss_after_imports_kb"]) / 1024, "child_wall_s": wall,
            "work_s": report["work_s"]}


def main(argv: list[str] | None = None) -> int:
    from . import common
    from .report import finish

    p = common.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="training steps per training case (default 100, quick 10)")
    p.add_argument("--child", choices=CASES, help=argparse_hidden())
    p.add_argument("--inputs", help=argparse_hidden())
    args = p.parse_args(argv)
    if args.child:
        child(args.child, Path(args.inputs), args.steps, args.threads)
        return 0

    import torch

    from .bench_generate import BLOCK, PROMPT_TOKENS, prompt_ids

    started = common.start()
    threads = common.set_threads(args.threads)
    common.quiet_libraries()
    repeats = args.repeats or (1 if args.quick else 3)
    steps = args.steps or (10 if args.quick else 100)
    new_tokens = 256
    corpus = common.char_corpus(common.SIZES["block_size"])
    batches = common.batch_list(corpus, common.SIZES["block_size"], common.SIZES["batch_size"], steps)
    with tempfile.TemporaryDirectory(prefix="wf-mem-") as tmp:
        inputs = Path(tmp) / "inputs.pt"
        torch.save({"x": torch.stack([b[0] for b in batches]), "y": torch.stack([b[1] for b in batches]),
                    "vocab_size": corpus.tokenizer.vocab_size, "prompt": torch.tensor(prompt_ids(corpus)),
                    "new_tokens": new_tokens}, inputs)
        cases = {case: (lambda c=case: run_child(c, inputs, steps, threads)) for case in CASES}
        runs = common.alternate(cases, repeats)
    summary = {case: {key: common.summarize([r[key] for r in rs]) for key in ("peak_rss_mib", "vmhwm_mib",
                                                                              "rss_after_imports_mib", "work_peak_mib")}
               for case, rs in runs.items()}
    med = {case: s["peak_rss_mib"]["median"] for case, s in summary.items()}
    goals = [
        common.goal("memory: training peak RSS, wordformer (Trainer) / peer", med["train_wordformer_trainer"] / med["train_peer_plain"],
                    1.0, higher_is_better=False,
                    note=f"{med['train_wordformer_trainer']:.0f} vs {med['train_peer_plain']:.0f} MiB; "
                         f"plain loop {med['train_wordformer_plain']:.0f} MiB"),
        common.goal("memory: generation peak RSS, wordformer (cache) / peer", med["generate_wordformer_cache"] / med["generate_peer"],
                    1.0, higher_is_better=False,
                    note=f"{med['generate_wordformer_cache']:.0f} vs {med['generate_peer']:.0f} MiB"),
    ]
    finish(NAME, MODULE, args, started, {
        "config": {"training": {**common.SIZES, "steps": steps, "positional": "learned",
                                "trainer": "wordformer.training.train, default loggers and progress bar"},
                   "generation": {"block_size": BLOCK, "prompt_tokens": PROMPT_TOKENS, "new_tokens": new_tokens},
                   "repeats": repeats, "method": "one child process per measurement, started by a stdlib-only launcher; os.wait4 ru_maxrss"},
        "memory_mib": summary,
        "runs": runs,
        "goals": goals,
    })
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
