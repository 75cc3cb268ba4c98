"""OpenMP wait policy: what ``OMP_WAIT_POLICY=PASSIVE`` (which ``import wordformer`` sets unless the variable is
set) costs or saves, against libgomp's default (spin a while, then sleep) and a short spin
(``GOMP_SPINCOUNT=10000``), on the machine as it is and with one added competing process (a busy loop,
started before and killed after the measurement): the situation of a shared machine, made reproducible.

The policy is read once, when the OpenMP runtime starts, so each measurement is a fresh child process; the
policies alternate (order rotating each repeat). Each child, with 2 torch threads, trains wordformer's model
in the plain loop of bench_train (10 untimed + ``--steps`` timed steps at nanoGPT's CPU sizes) and generates
256 tokens with the KV cache as in bench_generate (best of 3), and reports tokens/s of both.

    python -m benchmarks.bench_omp [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NAME = "omp"
MODULE = "benchmarks.bench_omp"
# environment of each policy; OMP_WAIT_POLICY="" counts as unset for libgomp (and keeps benchmarks._env away)
POLICIES = {"default": {"OMP_WAIT_POLICY": ""}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
            "spin10k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"}}
BUSY_LOOP = "while True: pass"


def child(threads: int, steps: int) -> None:
    import torch

    from . import common
    from .bench_generate import model_sizes, prompt_ids, wordformer_generate

    torch.set_num_threads(threads)
    common.quiet_libraries()
    sizes = {k: common.SIZES[k] for k in ("num_layers", "num_heads", "d_model", "block_size")}
    corpus = common.char_corpus(sizes["block_size"])
    vocab = corpus.tokenizer.vocab_size
    batches = common.batch_list(corpus, sizes["block_size"], common.SIZES["batch_size"], 10 + steps)
    train = common.train_plain(common.wordformer_model(vocab, **sizes), common.wordformer_logits, batches, warmup=10,
                               steps=steps)
    model = common.wordformer_model(vocab, **model_sizes()).eval()
    prompt = prompt_ids(corpus)
    wordformer_generate(model, prompt, 16, use_cache=True)
    gen = []
    for _ in range(3):
        t0 = time.perf_counter()
        wordformer_generate(model, prompt, 256, use_cache=True)
        gen.append(256 / (time.perf_counter() - t0))
    print(json.dumps({"train_tokens_per_s": train["tokens_per_s"], "generate_tokens_per_s": max(gen),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}), flush=True)


def run_child(policy: str, threads: int, steps: int, *, competitor: bool) -> dict[str, Any]:
    env = {**os.environ, **POLICIES[policy], "PYTHONWARNINGS": "ignore"}
    if "GOMP_SPINCOUNT" not in POLICIES[policy]:
        env.pop("GOMP_SPINCOUNT", None)
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if competitor else None
    try:
        proc = subprocess.run([sys.executable, "-m", MODULE, "--child", "--threads", str(threads), "--steps", str(steps)],
                              cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench_omp child ({policy}) failed:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1])
    return {"tokens_per_s": out["train_tokens_per_s"], "generate_tokens_per_s": out["generate_tokens_per_s"]}


def main(argv: list[str] | None = None) -> int:
    from . import common
    from .report import finish
    from .derive import pair, quiet_rounds, ratio_fn

    p = common.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="timed training steps per child (default 60, quick 20)")
    p.add_argument("--child", action="store_true", help=__import__("argparse").SUPPRESS)
    args = p.parse_args(argv)
    steps = args.steps or (20 if args.quick else 60)
    if args.child:
        child(args.threads, steps)
        return 0
    started = common.start()
    repeats = args.repeats or (1 if args.quick else 3)
    results = {}
    for condition, competitor in (("as is", False), ("one busy competitor", True)):
        cases = {pol: (lambda pol=pol, c=competitor: run_child(pol, args.threads, steps, competitor=c)) for pol in POLICIES}
        runs = common.alternate(cases, repeats, label=f"{condition}: ")
        quiet = quiet_rounds(runs, POLICIES)
        gen_runs = {pol: [{**r, "tokens_per_s": r["generate_tokens_per_s"]} for r in rs] for pol, rs in runs.items()}
        results[condition] = {
            "summary": {pol: {"train_tokens_per_s": common.summarize([r["tokens_per_s"] for r in rs]),
                              "generate_tokens_per_s": common.summarize([r["generate_tokens_per_s"] for r in rs])}
                        for pol, rs in runs.items()},
            "ratios": {f"{what}_{pol}_over_default": pair(rr, pol, "default", ratio_fn, quiet)
                       for what, rr in (("train", runs), ("generate", gen_runs)) for pol in POLICIES if pol != "default"},
            "runs": runs}
    finish(NAME, MODULE, args, started, {
        "config": {"threads": args.threads, "timed_steps": steps, "repeats": repeats, "policies": POLICIES,
                   "method": "one child process per measurement, policies alternating",
                   "competitor": f"python -c '{BUSY_LOOP}' running during the child",
                   "openmp": "libgomp (bundled with the torch CPU wheel)"},
        "conditions": results, "goals": [],
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
