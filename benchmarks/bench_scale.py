"""Scale: tokenizing corpora of 10 MB, 100 MB and 1 GB (time, MB/s and peak memory per tokenizer, the BPE anchor),
training speed on each corpus, and two-process DDP on CPU against one process.

Corpora are built in a scratch folder (never in the repository): files of about 1 MB, alternately tinyshakespeare
(repeated) and slices of Python's own standard-library sources (``sysconfig``'s stdlib path: identifiers, numbers,
a far larger vocabulary). Every measurement runs in a fresh child process:

* tokenize: ``prepare_corpus`` into an empty cache with ``--workers`` processes; wall time, phase times, the
  child's own peak RSS (VmHWM) and, sampled every 0.2 s, the summed RSS and PSS of the child and its workers
  (forked workers share the parent's pages, which RSS counts in each process and PSS shares out);
* anchor (BPE): the ``tokenizers`` library's own ``encode_batch_fast`` over the same text, in the same pieces
  the library needs for speed, ids included, text already in memory: only the encoding is timed;
* train: tokens/s of wordformer's model (bench sizes, plain loop, 2 threads) drawing random windows from the
  memory-mapped corpus each step: the part that could depend on corpus size;
* ddp: ``wordformer train`` as two nodes on 127.0.0.1 (gloo, one thread each, batch 12 each) against one
  process (two threads, batch 24) and one process (one thread, batch 12), on the 10 MB char corpus, plus the
  time of one gradient all-reduce in the two-process run.

Results merge into ``results/scale.json`` case by case, so the run can be done in chunks:

    python -m benchmarks.bench_scale [--quick] [--sizes 10,100,1000] [--kinds word,char,bpe]
                                     [--parts tokenize,anchor,train,ddp] [--workdir DIR] [--keep]

With ``--keep`` the corpora and caches stay in the work folder, and a later chunk without ``tokenize`` in
``--parts`` measures the anchor or training on the kept cache instead of tokenizing again.
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from .common import (DATA, QUICK_RESULTS, RESULTS, SEED, SIZES, base_parser, command_line, goal, load1, loadavg,
                     log, machine_info, start, write_json)

NAME = "scale"
MODULE = "benchmarks.bench_scale"
KINDS = ("word", "char", "bpe")
OPTIONS = {"word": ["--max-vocab", "16384"], "char": [], "bpe": ["--bpe-vocab-size", "2000"]}
PART_BYTES = 1 << 20


# ------------------------------------------------------------------------------------ corpora


def stdlib_text() -> str:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    return "".join(p.read_bytes().decode("utf-8", "replace").replace("\x00", "") for p in files)


def build_corpus(folder: Path, megabytes: int, shakespeare_path: Path = DATA) -> Path:
    """``megabytes`` MB in ~1 MB files, alternately tinyshakespeare and the next slice of the stdlib sources."""
    target = folder / f"corpus-{megabytes}mb"
    done = target / ".complete"
    if done.is_file():
        return target
    need = megabytes * 1e6 * 5  # the corpus, and the largest cache (char: 2 bytes per character, plus validation)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise SystemExit(f"bench_scale: {megabytes} MB needs about {need / 1e9:.1f} GB in {folder}, {free / 1e9:.1f} "
                         "GB free; pass --workdir on a larger disk")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    if not shakespeare_path.is_file():
        raise SystemExit(f"bench_scale: {shakespeare_path} is missing; pass --shakespeare PATH")
    shakespeare = shakespeare_path.read_text()
    stdlib, pos = stdlib_text(), 0
    written, k = 0, 0
    while written < megabytes * 1e6:
        if k % 2 == 0:
            text = (shakespeare * (1 + PART_BYTES // len(shakespeare)))[:PART_BYTES]
        else:
            if pos + PART_BYTES > len(stdlib):
                pos = 0
            text, pos = stdlib[pos:pos + PART_BYTES], pos + PART_BYTES
        raw = text.encode("utf-8")
        (target / f"part-{k:05d}.txt").write_bytes(raw)
        written, k = written + len(raw), k + 1
    done.write_text(f"{written} bytes in {k} files\n")
    return target


# ------------------------------------------------------------------------------------ children


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def child_tokenize(args: Any) -> dict[str, Any]:
    import resource

    from wordformer.config import DataConfig
    from wordformer.data import prepare_corpus

    after_imports = _vm("VmRSS")
    cfg = DataConfig(data=args.data, tokenizer=args.kind, cache_dir=args.cache, workers=args.workers,
                     **({"max_vocab": 16384} if args.kind == "word" else {}))
    t0 = time.perf_counter()
    corpus = prepare_corpus(cfg, block_size=64)
    seconds = time.perf_counter() - t0
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "bytes": corpus.stats["bytes"], "documents": corpus.stats["documents"],
            "phases": corpus.stats["seconds"], "tokens": int(len(corpus.train_ids) + len(corpus.val_ids)),
            "vocab_size": corpus.tokenizer.vocab_size, "from_cache": corpus.from_cache,
            "rss_after_imports_kib": after_imports, "peak_rss_main_kib": _vm("VmHWM"),
            "peak_rss_largest_worker_kib": workers_peak, "entry": str(corpus.cache_path)}


def child_anchor(args: Any) -> dict[str, Any]:
    """The tokenizers library's own batch encoding of the corpus, text already read, pieces as it needs them."""
    from tokenizers import Tokenizer as HFTokenizer

    from wordformer.streaming import text_files
    from wordformer.tokenizers import split_for_bpe

    tok = HFTokenizer.from_str(json.loads((Path(args.entry) / "tokenizer.json").read_text())["tokenizer_json"])
    encode_s = ids_s = 0.0
    tokens = 0
    for path in text_files(args.data):
        pieces = split_for_bpe(path.read_text())
        t0 = time.perf_counter()
        encs = tok.encode_batch_fast(pieces)
        t1 = time.perf_counter()
        tokens += sum(len(e.ids) for e in encs)
        ids_s += time.perf_counter() - t1
        encode_s += t1 - t0
    return {"encode_seconds": encode_s, "ids_seconds": ids_s, "seconds": encode_s + ids_s, "tokens": tokens}


def child_train(args: Any) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from wordformer.batches import TextBatches
    from wordformer.config import DataConfig

    from . import common

    torch.set_num_threads(args.threads)
    from wordformer.data import prepare_corpus

    cfg = DataConfig(data=args.data, tokenizer=args.kind, cache_dir=args.cache,
                     **({"max_vocab": 16384} if args.kind == "word" else {}))
    corpus = prepare_corpus(cfg, block_size=SIZES["block_size"])
    sizes = {k: v for k, v in SIZES.items() if k != "batch_size"}
    model = common.wordformer_model(corpus.tokenizer.vocab_size, **sizes)
    opt, _ = common.make_optimizer(model, args.steps + args.warmup, fused=True)
    source = TextBatches(corpus.train_ids, SIZES["block_size"], SIZES["batch_size"], SEED)
    marks = []
    for n in range(args.warmup + args.steps):
        x, y = source.batch(n)  # drawn from the memory-mapped ids each step
        loss = F.cross_entropy(model(x).reshape(-1, corpus.tokenizer.vocab_size).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        marks.append(time.perf_counter())
    seconds = marks[-1] - marks[args.warmup - 1]
    return {"tokens_per_s": args.steps * SIZES["batch_size"] * SIZES["block_size"] / seconds, "seconds": seconds,
            "steps": args.steps, "vocab_size": corpus.tokenizer.vocab_size, "loss": float(loss)}


def child_ddp(args: Any) -> dict[str, Any]:
    """One process of the DDP comparison: wordformer's train() with a step timer (and the all-reduce time)."""
    import lightning as L
    import torch

    from wordformer.config import DataConfig, ModelConfig, TrainConfig
    from wordformer.training import train

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {}

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_batch_end(self, *a: Any) -> None:
            self.marks.append(time.perf_counter())

        def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            if trainer.world_size > 1:  # one gradient's all-reduce, alone
                import torch.distributed as dist

                flat = torch.zeros(sum(p.numel() for p in module.parameters()))
                for _ in range(5):
                    dist.all_reduce(flat)
                t0 = time.perf_counter()
                for _ in range(30):
                    dist.all_reduce(flat)
                out["allreduce_ms"] = (time.perf_counter() - t0) / 30 * 1000
                out["allreduce_floats"] = flat.numel()

    timer = Timer()
    sizes = {k: v for k, v in SIZES.items() if k != "batch_size"}
    warm = args.warmup
    cfg = TrainConfig(max_steps=warm + args.steps, batch_size=args.batch, eval_interval=10_000, eval_batches=1,
                      progress=False, accelerator="cpu", devices="1", num_nodes=args.nodes,
                      strategy="ddp" if args.nodes > 1 else "auto", seed=SEED)
    with tempfile.TemporaryDirectory() as tmp:
        train(ModelConfig(positional="learned", **sizes), DataConfig(data=args.data, tokenizer="char",
                                                                     cache_dir=args.cache),
              cfg, Path(tmp) / "run", callbacks=[timer], logger=False)
    seconds = timer.marks[warm + args.steps - 1] - timer.marks[warm - 1]
    tokens = args.steps * args.batch * args.nodes * SIZES["block_size"]
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "step_ms": seconds / args.steps * 1000, **out}


CHILDREN = {"tokenize": child_tokenize, "anchor": child_anchor, "train": child_train, "ddp": child_ddp}


# ------------------------------------------------------------------------------------ the parent


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(parents.get(p, []))
    return found


def _memory_kib(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


def run_child(part: str, extra: list[str], *, env: Optional[dict] = None, timeout: float = 1800) -> dict[str, Any]:
    cmd = [sys.executable, "-m", MODULE, "--child", part, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[1])
    peak = {"rss": 0, "pss": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            rss, pss = _memory_kib(_tree(proc.pid))
            peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{part} child failed ({proc.returncode}): {err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(wall_seconds=wall, peak_tree_rss_kib=peak["rss"], peak_tree_pss_kib=peak["pss"])
    return result


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(data: Path, cache: Path, *, steps: int, warmup: int) -> dict[str, Any]:
    """Two nodes on 127.0.0.1 (one thread, batch 12 each), one process (two threads, batch 24), one (one, 12)."""
    base = ["--data", str(data), "--cache", str(cache), "--steps", str(steps), "--warmup", str(warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs: dict[str, Any] = {}
    for rep in range(3):
        before = load1()
        runs.setdefault("one_process_2_threads_batch_24", []).append(
            {**run_child("ddp", base + ["--nodes", "1", "--batch", "24", "--threads", "2"]), "load1": before})
        runs.setdefault("one_process_1_thread_batch_12", []).append(
            {**run_child("ddp", base + ["--nodes", "1", "--batch", "12", "--threads", "1"], env=env), "load1": before})
        port = _free_port()
        procs = []
        for node in (0, 1):
            node_env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node),
                        "WORLD_SIZE": "2"}
            cmd = [sys.executable, "-m", MODULE, "--child", "ddp", *base, "--nodes", "2", "--batch", "12",
                   "--threads", "1"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=node_env,
                                          cwd=Path(__file__).resolve().parents[1]))
        outs = [p.communicate(timeout=1800) for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError("ddp children failed: " + " | ".join(o[1][-1500:] for o in outs))
        ranks = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
        runs.setdefault("two_nodes_1_thread_batch_12_each", []).append({**ranks[0], "rank1": ranks[1], "load1": before})
        log(f"ddp repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]['tokens_per_s']:,.0f}" for k, v in runs.items()))
    return runs


def merge(path: Path, key: str, value: Any, payload: dict[str, Any]) -> None:
    old = json.loads(path.read_text()) if path.is_file() else {}
    cases = old.get("cases", {})
    cases[key] = value
    write_json(path, {**old, **payload, "cases": cases})


def main(argv: Optional[list[str]] = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=None, help="corpus sizes in MB (default 10,100,1000; quick 2,10)")
    p.add_argument("--kinds", default=",".join(KINDS), help="tokenizers to measure")
    p.add_argument("--parts", default="tokenize,anchor,train,ddp", help="what to measure")
    p.add_argument("--workers", type=int, default=2, help="tokenizing processes (--workers of wordformer)")
    p.add_argument("--workdir", default=None, help="scratch folder for corpora and caches (default: the temp folder)")
    p.add_argument("--keep", action="store_true", help="keep corpora and caches afterwards (they are large)")
    p.add_argument("--shakespeare", default=str(DATA), help="tinyshakespeare.txt (default: ../shared/data)")
    # child plumbing
    p.add_argument("--child", default=None, help=argparse_hidden())
    p.add_argument("--data", default=None, help=argparse_hidden())
    p.add_argument("--cache", default=None, help=argparse_hidden())
    p.add_argument("--kind", default=None, help=argparse_hidden())
    p.add_argument("--entry", default=None, help=argparse_hidden())
    p.add_argument("--steps", type=int, default=40, help=argparse_hidden())
    p.add_argument("--warmup", type=int, default=5, help=argparse_hidden())
    p.add_argument("--nodes", type=int, default=1, help=argparse_hidden())
    p.add_argument("--batch", type=int, default=12, help=argparse_hidden())
    args = p.parse_args(argv)
    if args.child:
        import warnings

        warnings.filterwarnings("ignore")
        import logging

        logging.disable(logging.WARNING)
        result = CHILDREN[args.child](args)
        print(json.dumps(result))
        return 0
    started = start()
    sizes = [int(s) for s in (args.sizes or ("2,10" if args.quick else "10,100,1000")).split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    parts = [x for x in args.parts.split(",") if x]
    work = Path(args.workdir or tempfile.gettempdir()) / "wordformer-bench-scale"
    work.mkdir(parents=True, exist_ok=True)
    path = (QUICK_RESULTS if args.quick else RESULTS) / f"{NAME}.json"
    payload = {"name": NAME, "command_last": command_line(MODULE), "machine": machine_info(), "quick": bool(args.quick),
               "workers": args.workers, "threads": args.threads}
    train_steps = 10 if args.quick else 40
    try:
        for size in sizes:
            if not {"tokenize", "anchor", "train"} & set(parts):
                break
            log(f"building the {size} MB corpus in {work} (df: {shutil.disk_usage(work).free / 1e9:.0f} GB free)")
            corpus = build_corpus(work, size, Path(args.shakespeare))
            for kind in kinds:
                cache = work / f"cache-{size}-{kind}"
                entry = None
                kept = sorted(cache.glob("corpus-*/meta.json")) if "tokenize" not in parts else []
                if kept:  # a cache kept by an earlier chunk (--keep): anchor and train reuse it
                    entry = str(kept[0].parent)
                elif "tokenize" in parts or "anchor" in parts or "train" in parts:
                    shutil.rmtree(cache, ignore_errors=True)
                    before = load1()
                    res = run_child("tokenize", ["--data", str(corpus), "--cache", str(cache), "--kind", kind,
                                                 "--workers", str(args.workers)])
                    res.update(load1=before, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               mb_per_s=res["bytes"] / 1e6 / res["seconds"])
                    entry = res.pop("entry")
                    log(f"tokenize {size} MB {kind}: {res['seconds']:.1f} s, {res['mb_per_s']:.1f} MB/s, peak RSS main "
                        f"{res['peak_rss_main_kib'] / 1024:.0f} MiB, tree PSS {res['peak_tree_pss_kib'] / 1024:.0f} MiB")
                    if "tokenize" in parts:
                        merge(path, f"tokenize/{size}/{kind}", res, payload)
                if "anchor" in parts and kind == "bpe" and entry:
                    res_a = run_child("anchor", ["--data", str(corpus), "--entry", entry])
                    ours = json.loads(path.read_text())["cases"].get(f"tokenize/{size}/bpe", {})
                    res_a.update(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                 ours_tokenizing_seconds=ours.get("phases", {}).get("tokenizing"))
                    log(f"anchor {size} MB: library {res_a['seconds']:.1f} s; ours (tokenizing phase) "
                        f"{res_a['ours_tokenizing_seconds']}")
                    merge(path, f"anchor/{size}/bpe", res_a, payload)
                if "train" in parts:
                    before = load1()
                    res_t = run_child("train", ["--data", str(corpus), "--cache", str(cache), "--kind", kind,
                                                "--steps", str(train_steps), "--warmup", "5",
                                                "--threads", str(args.threads)])
                    res_t.update(load1=before, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
                    log(f"train {size} MB {kind}: {res_t['tokens_per_s']:,.0f} tokens/s (vocab {res_t['vocab_size']})")
                    merge(path, f"train/{size}/{kind}", res_t, payload)
                if not args.keep:
                    shutil.rmtree(cache, ignore_errors=True)
            if not args.keep and size >= 100:
                shutil.rmtree(corpus, ignore_errors=True)
        if "ddp" in parts:
            corpus = build_corpus(work, 10, Path(args.shakespeare))
            cache = work / "cache-ddp"
            runs = run_ddp(corpus, cache, steps=10 if args.quick else 60, warmup=5)
            merge(path, "ddp", {"runs": runs, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, payload)
    finally:
        if not args.keep:
            for leftover in work.glob("cache-*"):
                shutil.rmtree(leftover, ignore_errors=True)
    result = json.loads(path.read_text())
    result["goals"] = goals(result["cases"])
    result["commands"] = sorted(set(result.get("commands", [])) | {command_line(MODULE)})
    result["date"], result["load"] = started["date"], {"start": started["load"], "end": loadavg()}
    result["duration_s"] = round(time.perf_counter() - started["t0"], 1)
    write_json(path, result)
    log(f"wrote {path}")
    if not args.quick and not args.no_report:
        from .report import render

        render()
        log("updated BENCHMARKS.md")
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def goals(cases: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal on the largest corpus measured for it (a 1 GB BPE run may be missing where 100 MB ran)."""
    out = []
    for kind in KINDS:
        big = max((int(k.split("/")[1]) for k in cases if k.startswith("tokenize/") and k.endswith("/" + kind)),
                  default=None)
        c = cases.get(f"tokenize/{big}/{kind}") if big else None
        peak = None if c is None else max(c["peak_rss_main_kib"], c["peak_tree_pss_kib"]) / 1024 / 1024
        out.append(goal(f"scale: peak memory preparing the {big} MB corpus, {kind} (GiB; main RSS or tree PSS)", peak,
                        1.0, higher_is_better=False))
    for kind, target in (("char", 50.0), ("word", 20.0)):
        big = max((int(k.split("/")[1]) for k in cases if k.startswith("tokenize/") and k.endswith("/" + kind)),
                  default=None)
        c = cases.get(f"tokenize/{big}/{kind}") if big else None
        out.append(goal(f"scale: {kind} tokenizing speed, {big} MB corpus, 2 cores (MB/s)",
                        None if c is None else c["mb_per_s"], target))
    big = max((int(k.split("/")[1]) for k in cases if k.startswith("anchor/")), default=None)
    a = cases.get(f"anchor/{big}/bpe") if big else None
    ratio = (a["ours_tokenizing_seconds"] / a["seconds"]) if a and a.get("ours_tokenizing_seconds") else None
    out.append(goal(f"scale: BPE tokenizing time / tokenizers' own batch encoding, {big} MB", ratio, 1.5,
                    higher_is_better=False))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
