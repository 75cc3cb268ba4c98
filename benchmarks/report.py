"""Render BENCHMARKS.md from the result files in benchmarks/results/ (``python -m benchmarks.report``).

Every benchmark calls :func:`render` after writing its JSON, so BENCHMARKS.md always shows the latest
full (non-quick) result of each benchmark, with its own command, date, machine and load.
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Optional

from .common import QUICK_RESULTS, RESULTS, ROOT, command_line, loadavg, log, machine_info, write_json

OUT = ROOT / "BENCHMARKS.md"
ORDER = ("train", "generate", "memory", "quality", "scaling", "gpu", "omp", "serve", "scale", "recipe")
TITLES = {"train": "1. Training throughput (CPU)", "generate": "2. Generation (CPU)", "memory": "3. Peak memory (RSS)",
          "quality": "4. Quality: validation loss after 2000 steps", "scaling": "5. Scaling and fraction of matmul peak",
          "gpu": "6. GPU: GPT-2 small, bf16, compiled",
          "omp": "7. Supplementary: OpenMP wait policy (what `import wordformer` sets)",
          "serve": "8. Serving: `wordformer serve` against `transformers serve`",
          "scale": "9. Scale: corpora of gigabytes, several processes",
          "recipe": "12. Time to quality: Muon, RoPE, RMSNorm, QK-norm, ReLU², SwiGLU, WSD (issue 15)"}


def load_results() -> dict[str, dict[str, Any]]:
    found = {}
    for name in ORDER:
        path = RESULTS / f"{name}.json"
        if path.is_file():
            try:
                found[name] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
    return found


# ------------------------------------------------------------------------------------ formatting


def num(v: Optional[float], digits: int = 0) -> str:
    if v is None:
        return "—"
    if digits == 0 and abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.{digits}f}"
    return f"{v:.{max(digits, 2) if abs(v) < 10 else max(digits, 1)}f}"


def spread(s: Optional[dict[str, Any]], digits: int = 0, scale: float = 1.0) -> str:
    """``median (min–max)`` of a summary."""
    if not s or s.get("median") is None:
        return "—"
    m, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    return f"{num(m, digits)} ({num(lo, digits)}–{num(hi, digits)})"


def iqr(s: Optional[dict[str, Any]], digits: int = 0, scale: float = 1.0) -> str:
    if not s or s.get("median") is None:
        return "—"
    return f"{num(s['q1'] * scale, digits)}–{num(s['q3'] * scale, digits)}"


def pct(s: Optional[dict[str, Any]]) -> str:
    if not s or s.get("median") is None:
        return "—"
    return f"{s['median'] * 100:+.1f}% ({s['min'] * 100:+.1f}% to {s['max'] * 100:+.1f}%)"


def quiet_cell(s: Optional[dict[str, Any]], digits: int = 0, *, as_pct: bool = False) -> str:
    """``median (min–max), n`` over the quiet rounds of a summary that has them."""
    q = (s or {}).get("quiet")
    if not q or not q.get("n"):
        return "no quiet round"
    if as_pct:
        return f"{q['median'] * 100:+.1f}% ({q['min'] * 100:+.1f}% to {q['max'] * 100:+.1f}%), n={q['n']}"
    return f"{spread(q, digits)}, n={q['n']}"


def all_cell(s: Optional[dict[str, Any]], digits: int = 0, *, as_pct: bool = False) -> str:
    """``median [IQR]`` over all rounds."""
    if not s or s.get("median") is None:
        return "—"
    if as_pct:
        return f"{s['median'] * 100:+.1f}% [{s['q1'] * 100:+.1f}% to {s['q3'] * 100:+.1f}%]"
    return f"{num(s['median'], digits)} [{iqr(s, digits)}]"


QUIET_NOTE = ("*Quiet rounds*: rounds in which every case ran at ≥ 70% of its own 90th-percentile throughput, i.e. no "
              "case of the round was visibly slowed by another process (see `benchmarks/derive.py`); the filter judges "
              "each case against itself, so it favours neither side. Goals use the quiet rounds when there are at "
              "least 5, else all rounds.")


def met(flag: Optional[bool]) -> str:
    return "not measured" if flag is None else ("**met**" if flag else "**not met**")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def machine_line(r: dict[str, Any]) -> str:
    m = r["machine"]
    cpu = m.get("cpu_model") or m.get("processor") or m.get("machine")
    return (f"{cpu} (`platform.processor()` = {m.get('processor')!r}), {m.get('cpu_count')} CPUs, torch {m.get('torch')}, "
            f"Lightning {m.get('lightning')}, transformers {m.get('transformers')}, {r.get('threads')} torch threads, "
            f"OMP_WAIT_POLICY={m.get('omp_wait_policy')}")


def run_loads(r: dict[str, Any]) -> list[float]:
    """load1 before every measurement of a result, plus its start and end."""
    loads = [r["load"]["start"][0], r["load"]["end"][0]]
    runs = r.get("runs")
    if isinstance(runs, dict):
        loads += [m["load1"] for rs in runs.values() for m in rs if "load1" in m]
    for row in r.get("rows", []):
        loads += [m["load1"] for rs in row["runs"].values() for m in rs if "load1" in m]
    for res in r.get("results", []):
        loads += [res["load_before"][0], res["load_after"][0]]
    for res in (r.get("conditions") or {}).values():
        loads += [m["load1"] for rs in res["runs"].values() for m in rs if "load1" in m]
    for case in (r.get("cases") or {}).values():  # bench_scale: one result per case, runs of its own for ddp
        loads += [case["load1"]] if "load1" in case else []
        loads += [m["load1"] for rs in (case.get("runs") or {}).values() for m in rs if "load1" in m]
    for size in (r.get("sizes") or {}).values():  # bench_serve: per size, one client and concurrent clients
        loads += [m["load1"] for rs in size["runs"]["single"].values() for m in rs if "load1" in m]
        loads += [m["load1"] for by_clients in size["runs"]["concurrency"].values() for rs in by_clients.values()
                  for m in rs if "load1" in m]
    return loads


def provenance(r: dict[str, Any]) -> list[str]:
    loads = run_loads(r)
    cpus = r["machine"].get("cpu_count") or 1
    busy = statistics.median(loads) > cpus  # the benchmark's own 2 threads already count for up to 2
    lines = [f"Reproduce: `{r['command']}` (from the repository root). Date: {r['date']}, took {r['duration_s']:.0f} s.",
             f"Machine: {machine_line(r)}.",
             f"Load average (1 min) during the run: median {statistics.median(loads):.1f}, min {min(loads):.1f}, "
             f"max {max(loads):.1f} on {cpus} CPUs, the benchmark's own threads included" + (" — **the machine was busy** (other processes competed for "
                                                      "the CPUs), so absolute figures are low and noisy; ratios of "
                                                      "back-to-back runs are the more reliable figures." if busy else ".")]
    return lines


# ------------------------------------------------------------------------------------ sections


def section_train(r: dict[str, Any]) -> list[str]:
    c, t, q = r["config"], r["tokens_per_s"], r["ratios"]
    names = {"wordformer_trainer": "wordformer, Lightning Trainer (`train()`, loggers + progress bar off)",
             "wordformer_trainer_default": "wordformer, Lightning Trainer (`train()` defaults: CSV + TensorBoard loggers, LR monitor, progress bar)",
             "wordformer_plain": "wordformer's model, plain PyTorch loop",
             "peer_plain": "HF `GPT2LMHeadModel` (peer), same plain loop",
             "wordformer_plain_fused": "supplementary: wordformer's model, plain loop, fused AdamW",
             "peer_plain_fused": "supplementary: peer, plain loop, fused AdamW",
             "peer_plain_gelu_new": "supplementary: peer with GPT-2's default activation `gelu_new`, plain loop",
             "wordformer_trainer_bf16": "wordformer, Lightning Trainer, `precision=\"bf16-mixed\"` (loggers and progress bar off)",
             "peer_plain_phase3": "peer, plain loop, float32 (paired with the bf16 Trainer run)",
             "wordformer_plain_phase3": "wordformer's model, plain loop, float32 (paired with the bf16 Trainer run)",
             "wordformer_plain_bf16": "wordformer's model, plain loop, bf16 autocast, fused AdamW",
             "peer_plain_bf16": "peer, plain loop, bf16 autocast"}
    lines = [f"Char-level tinyshakespeare, {c['num_layers']} layers, {c['num_heads']} heads, d_model {c['d_model']}, "
             f"block {c['block_size']}, batch {c['batch_size']} ({c['tokens_per_step']} tokens/step), vocabulary "
             f"{c['vocab_size']}, {c['parameters']:,} parameters in both models. AdamW lr {c['optimizer']['lr']}, betas "
             f"{tuple(c['optimizer']['betas'])}, weight decay {c['optimizer']['weight_decay']} on 2-D parameters, grad clip "
             f"{c['optimizer']['grad_clip']}, warm-up + cosine. Alternation at the step level: while `train()` runs, "
             f"a callback trains a chunk of {c['chunk_steps']} steps of each plain loop after every {c['chunk_steps']} "
             f"Trainer steps (order rotating), {c['rounds']} rounds after {c['warmup_steps_untimed']} untimed steps; the "
             "Trainer's chunk time excludes the interleaved work. Each chunk is one measurement; ratios pair the chunks "
             "of one round. Two such runs: Trainer with loggers and progress bar off, then with `train()`'s defaults "
             "(each paired with its own plain-loop chunks)" + (", and a third with `precision=\"bf16-mixed\"` (this CPU "
             "has native bf16), paired with float32 and bf16-autocast plain loops." if c.get("cpu_native_bf16") else
             "."), "",
             *table(["run", "tokens/s, all chunks: median [IQR]", "quiet rounds: median (min–max), n", "best chunk",
                     "all chunks pooled"],
                    [[names[k], all_cell(t[k]), quiet_cell(t[k]), num(t[k]["max"]), num(t[k].get("overall"))]
                     for k in names if k in t]), "",
             *table(["ratio (per round: chunks run back to back)", "all rounds: median [IQR]",
                     "quiet rounds: median (min–max), n"], [
                 [label, all_cell(q[key], 2, as_pct="overhead" in key), quiet_cell(q[key], 2, as_pct="overhead" in key)]
                 for key, label in (
                     ("trainer_over_peer", "wordformer (Trainer) / peer"),
                     ("trainer_default_over_peer", "wordformer (Trainer, defaults) / peer"),
                     ("plain_over_peer", "wordformer (plain loop) / peer"),
                     ("trainer_overhead", "Trainer overhead over the plain loop (plain/Trainer − 1)"),
                     ("trainer_default_overhead", "Trainer overhead, defaults (loggers + progress bar)"),
                     ("plain_fused_over_plain", "supplementary: wordformer plain loop, fused / default AdamW"),
                     ("plain_fused_over_peer", "supplementary: wordformer plain loop with fused AdamW / peer (default AdamW)"),
                     ("plain_fused_over_peer_fused", "supplementary: both with fused AdamW, wordformer / peer"),
                     ("trainer_over_peer_gelu_new", "supplementary: wordformer (Trainer) / peer with `gelu_new`"),
                     ("trainer_bf16_over_peer", "wordformer (Trainer, bf16-mixed) / peer (float32)"),
                     ("trainer_bf16_over_peer_bf16", "wordformer (Trainer, bf16-mixed) / peer (bf16 autocast)"),
                     ("plain_bf16_over_peer_bf16", "both plain loops under bf16 autocast, wordformer / peer"),
                     ("plain_bf16_over_plain_fp32", "wordformer plain loop, bf16 autocast / float32"))
                 if key in q]), "", QUIET_NOTE, "",
             f"Same model: with wordformer's weights copied into the peer, the largest logit difference is "
             f"{c['max_logit_diff_same_weights']:.1e}. Same batches: the Trainer's first batch equals the plain loops' "
             f"({c['same_batches_trainer_and_loops']}). Peer attention: `{c['peer_attention']}`; peer activation: "
             f"{c['peer_activation']} (wordformer's GELU; GPT-2's default `gelu_new` would be a different function). "
             f"Positions: learned in both (wordformer's default is sinusoidal, which costs the same). The Trainer also "
             f"builds each batch on the fly ({c['batch_build_us']:.0f} µs per batch), the plain loops index a prepared "
             "list.", ""]
    return lines + provenance(r)


def section_generate(r: dict[str, Any]) -> list[str]:
    c, t, q = r["config"], r["tokens_per_s"], r["ratios"]
    names = {"wordformer_cache": "wordformer `generate_ids`, KV cache", "wordformer_no_cache": "wordformer `generate_ids`, no cache",
             "peer_generate": "HF `GPT2LMHeadModel.generate` (peer), its cache",
             "wordformer_cache_1thread": "supplementary, 1 thread: wordformer, KV cache",
             "peer_generate_1thread": "supplementary, 1 thread: peer `generate`"}
    lines = [f"{c['new_tokens']} new tokens, batch 1, {c['prompt_tokens']}-token prompt, greedy; {c['num_layers']} layers, "
             f"{c['num_heads']} heads, d_model {c['d_model']} as in 1 but **block_size {c['block_size']} with learned "
             f"positions (peer: n_positions {c['block_size']})**, so {c['prompt_tokens']} + {c['new_tokens']} tokens fit "
             f"and neither model slides its window. Weights: {c['weights']}. {c['repeats']} repeats, alternating.", "",
             *table(["run", "tokens/s, all repeats: median [IQR]", "quiet repeats: median (min–max), n", "best",
                     "ms/token (best)"],
                    [[names[k], all_cell(t[k]), quiet_cell(t[k]), num(t[k]["max"]), num(1000 / t[k]["max"], 2)]
                     for k in names if k in t]), "",
             *table(["ratio (per repeat)", "all repeats: median [IQR]", "quiet repeats: median (min–max), n"], [
                 [label, all_cell(q[key], 2), quiet_cell(q[key], 2)] for key, label in (
                     ("cache_over_no_cache", "wordformer cache / no cache"),
                     ("cache_over_peer", "wordformer (cache) / peer"),
                     ("cache_over_peer_1thread", "supplementary, 1 thread: wordformer (cache) / peer")) if key in q]), "",
             QUIET_NOTE.replace("rounds", "repeats").replace("round", "repeat") + " The 1-thread cases are judged "
             "among themselves.", "",
             f"The same work: greedy output with the cache equals the output without it ({c['cache_equals_no_cache']}) "
             f"and equals the peer's ({c['wordformer_equals_peer']}, {c['token_agreement_with_peer']:.0%} of tokens). "
             f"Peer attention: `{c['peer_attention']}`.", ""]
    return lines + provenance(r)


def section_memory(r: dict[str, Any]) -> list[str]:
    c, s = r["config"], r["memory_mib"]
    names = {"train_wordformer_trainer": "training, wordformer through `train()` (defaults)",
             "train_wordformer_plain": "training, wordformer's model, plain loop",
             "train_peer_plain": "training, peer, plain loop",
             "generate_wordformer_cache": "generation, wordformer, KV cache",
             "generate_wordformer_no_cache": "generation, wordformer, no cache",
             "generate_peer": "generation, peer `generate`"}
    tr = c["training"]
    lines = [f"Each measurement is a fresh child process ({c['method']}); {c['repeats']} repeats, alternating. "
             f"Training: {tr['steps']} steps at the sizes of 1; generation: as in 2. \"After imports\" is the child's RSS "
             "once torch and the case's libraries are imported (the Trainer case imports Lightning); \"work\" is the "
             "peak minus that.", "",
             *table(["case", "peak RSS MiB (ru_maxrss): median (min–max)", "VmHWM MiB (cross-check)",
                     "after imports MiB", "work MiB"],
                    [[names[k], spread(s[k]["peak_rss_mib"]), num((s[k].get("vmhwm_mib") or {}).get("median")),
                      num(s[k]["rss_after_imports_mib"]["median"]), num(s[k]["work_peak_mib"]["median"])]
                     for k in names if k in s]), ""]
    return lines + provenance(r)


def section_quality(r: dict[str, Any]) -> list[str]:
    c = r["config"]
    rows = []
    for res in r["results"]:
        curve = ", ".join(f"{p['step'] + 1}: {p['val_loss']:.3f}" for p in res["curve"])
        rows.append([res["label"], f"{res['val_loss']:.4f}", f"{res['best_val_loss']:.4f}", f"{res['train_time_s']:.0f}",
                     f"{res['load_before'][0]:.1f} / {res['load_after'][0]:.1f}", curve or "—"])
    summary_rows = [[label, spread(s["val_loss"], 3), spread(s["train_time_s"])]
                    for label, s in (r.get("summary") or {}).items()]
    lines = [f"Through the CLI; validation: {c['val_split']}, {c['eval']}. {c['threads']}. Seeds "
             f"{', '.join(str(x) for x in c.get('seeds', [1337]))}. Reference: {c['reference']}.", ""]
    if summary_rows:
        lines += [*table(["positions", "val loss: median (min–max) over seeds", "wall time s: median (min–max)"],
                         summary_rows), ""]
    lines += [*table(["run", "val loss at the end", "best", "wall time s", "load before / after", "val loss by step"],
                     rows), "", "Commands:", ""]
    lines += [f"    {res['command']}" for res in r["results"]]
    return lines + [""] + provenance(r)


def section_recipe(r: dict[str, Any]) -> list[str]:
    # bench_recipe renders its own tables (they follow its plan) into the result file: importing it here would
    # make an import circle, as it writes its results through this module
    return list(r.get("section", [])) + provenance(r)


def section_scaling(r: dict[str, Any]) -> list[str]:
    c = r["config"]
    lines = [f"{c['num_layers']} layers, {c['num_heads']} heads, batch {c['batch_size']}, float32; {c['loop']}; "
             f"wordformer and peer alternate in chunks of about {c['seconds_per_chunk']} s (same step count for both), "
             f"{c['rounds']} rounds per size; each chunk is one measurement. "
             f"FLOPs per token: {c['flops_formula']}. This machine's float32 matmul peak (2 threads, best of 1024–4096 "
             f"square matmuls at the start and the end of the run and of 2048 ones before each size): "
             f"**{r['matmul_peak_gflops']:.0f} GFLOP/s** (start {r['matmul_peak_start']['gflops']:.0f}, end "
             f"{r['matmul_peak_end']['gflops']:.0f}" + (", between sizes " + ", ".join(
                 f"{v:.0f}" for v in r["matmul_peak_between_sizes"]) if r.get("matmul_peak_between_sizes") else "") +
             "). On a busy machine this underestimates the true peak, so the fractions below are upper bounds.", ""]
    for axis, other in (("block_size", "d_model 128"), ("d_model", "block 64")):
        rows = []
        for row in (x for x in r["rows"] if x["axis"] == axis):
            wf, peer = row["wordformer"], row["peer"]
            def frac(who: dict[str, Any]) -> str:
                f = who["peak_fraction"]
                qf = f.get("quiet") or {}
                return (f"{qf['median'] * 100:.0f}%" if qf.get("n") else f"{f['median'] * 100:.0f}%") + \
                    f" (best {f['max'] * 100:.0f}%)"

            rows.append([str(row[axis]), f"{row['parameters']:,}", num(row["flops_per_token"] / 1e6, 2),
                         quiet_cell(wf["tokens_per_s"]), quiet_cell(peer["tokens_per_s"]),
                         quiet_cell(row["wordformer_over_peer"], 2), frac(wf), frac(peer)])
        lines += [f"Growing {axis} ({other}):", "",
                  *table([axis, "parameters", "MFLOP/token", "wordformer tokens/s", "peer tokens/s", "wordformer/peer",
                          "wordformer % of peak", "peer % of peak"], rows), ""]
    lines += ["Cells: median (min–max) over the quiet rounds, n = their count (all rounds are in the JSON); % of peak: "
              "quiet-round median and the best chunk. " + QUIET_NOTE.split(";")[0] + ".", ""]
    if r.get("plot"):
        lines += [f"![training throughput versus block size and d_model]({r['plot']})", ""]
    return lines + provenance(r)


def section_gpu(r: Optional[dict[str, Any]]) -> list[str]:
    cmd = "python -m benchmarks.bench_gpu"
    if r is None:
        return ["**Not measured yet**: no GPU was available to this work. The script is written and exits cleanly "
                "with \"no CUDA device\" on a machine without one; it has not been run on a GPU, so expect to fix small "
                f"things the first time. Run it with `{cmd}` (`--quick` for a smoke run; `--peak-tflops` when the GPU "
                "is not in its table). It measures GPT-2-small sizes (12 layers, 12 heads, d_model 768, block 1024, "
                "vocabulary 50304, batch 16, random tokens), bf16 autocast, `torch.compile`, fused AdamW: wordformer's "
                "model in a plain loop, wordformer through the Lightning Trainer (compile=True, bf16-mixed) and the "
                "peer, alternating, and reports tokens/s and MFU = tokens/s × (6N + 12·L·d·T) / bf16 dense peak "
                "(H100 SXM: 989 TFLOP/s). Goal: MFU >= 45% on an H100. Until recommendation 1 above is applied, "
                "expect the Trainer measurement to fail with Lightning's \"does not allow for gradient clipping\" "
                "error (fused AdamW under bf16-mixed with clipping); the script records the error and measures the "
                "plain loop and the peer."]
    c, t, m = r["config"], r["tokens_per_s"], r["mfu"]
    rows = [[k, spread(t[k]), spread(m[k], 1, 100) + " %" if m.get(k) else "—"] for k in t]
    if c.get("trainer_error"):
        rows.append(["wordformer_trainer", "failed: " + c["trainer_error"].replace("|", "/")[:200], "—"])
    return [f"{c['device']}, bf16 peak {c['bf16_peak_tflops']} TFLOP/s; GPT-2 small ({c['parameters']:,} parameters), "
            f"batch {c['batch_size']} × {c['block_size']}, {c['flops_per_token'] / 1e6:.0f} MFLOP/token.", "",
            *table(["run", "tokens/s: median (min–max)", "MFU"], rows), ""] + provenance(r)


def section_omp(r: dict[str, Any]) -> list[str]:
    c = r["config"]
    lines = [f"`OMP_WAIT_POLICY` is read once per process, so each measurement is a fresh child ({c['method']}, "
             f"{c['repeats']} repeats per condition, {c['openmp']}, {c['threads']} torch threads). \"default\": libgomp's "
             "own (spin a while, then sleep); PASSIVE: what `import wordformer` sets when the machine is busy at import (load >= cores); "
             "spin10k: default policy with `GOMP_SPINCOUNT=10000`. Conditions: the machine as it is, and with one "
             f"added competing process ({c['competitor']}). Training: wordformer's plain loop, {c['timed_steps']} timed "
             "steps at the sizes of 1; generation: 256 tokens with the cache as in 2 (best of 3 per child).", ""]
    for condition, res in r["conditions"].items():
        rows = [[pol, all_cell(v["train_tokens_per_s"]), all_cell(v["generate_tokens_per_s"])]
                for pol, v in res["summary"].items()]
        lines += [f"{condition[0].upper() + condition[1:]}:", "",
                  *table(["policy", "training tokens/s: median [IQR]", "generation tokens/s: median [IQR]"], rows), "",
                  *table(["ratio (per repeat)", "median [IQR]"],
                         [[key.replace("_", " "), all_cell(val, 2)] for key, val in res["ratios"].items()]), ""]
    return lines + provenance(r)


def section_scale(r: dict[str, Any]) -> list[str]:
    cases = r.get("cases", {})
    mib = lambda kib: f"{kib / 1024:,.0f}"  # noqa: E731
    lines = ["Corpora built in a scratch folder (never committed) from ~1 MB files, alternately tinyshakespeare and "
             "slices of CPython's standard-library sources (`sysconfig` stdlib path, 31.5 MB of `.py`); word tokenizer "
             "with `--max-vocab 16384`, BPE with 2,000 entries. Every figure comes from a fresh child process. "
             f"Tokenizing: `prepare_corpus` into an empty cache with `--workers {r.get('workers')}`, wall time of the "
             "whole preparation (scan and key, tokenizer training, tokenizing and writing); MB/s = corpus MB / that "
             "time. Memory: the child's own peak RSS (VmHWM; after its imports of torch and Lightning it already holds "
             "the figure in the next column) and, sampled every 0.2 s, the summed RSS and PSS of the child and its "
             "workers (forked workers share the parent's pages: RSS counts them in every process, PSS shares them out). "
             "Phases: read+key = reading every file once for the cache key; chars = collecting the characters; merges "
             "= BPE's iterator training (on a 256 MB sample above that size); one pass = words encoded with a growing "
             "vocabulary and counted; gather+write = the ids mapped to the chosen vocabulary and written; "
             "tokenize+write = encoding with the trained tokenizer and writing the ids.",
             ""]
    rows = []
    for key in sorted((k for k in cases if k.startswith("tokenize/")), key=lambda k: (int(k.split("/")[1]), k)):
        c, (_, size, kind) = cases[key], key.split("/")
        ph = c.get("phases", {})
        short = {"reading": "read+key", "collecting characters": "chars", "counting and tokenizing words": "one pass",
                 "writing ids": "gather+write", "tokenizing": "tokenize+write"}
        phases = ", ".join(f"{short.get(k, 'merges' if k.startswith('learning BPE') else k)} {v:.1f}"
                           for k, v in ph.items())
        rows.append([f"{int(size):,} MB", kind, f"{c['documents']:,}", f"{c['tokens'] / 1e6:,.1f} M", f"{c['vocab_size']:,}",
                     f"{c['seconds']:.1f}", f"**{c['mb_per_s']:.1f}**",
                     phases,
                     mib(c["peak_rss_main_kib"]), mib(c["rss_after_imports_kib"]), mib(c["peak_rss_largest_worker_kib"]),
                     f"{mib(c['peak_tree_rss_kib'])} / {mib(c['peak_tree_pss_kib'])}", f"{c.get('load1', 0):.1f}",
                     c.get("date", "")])
    if rows:
        lines += table(["corpus", "tokenizer", "files", "tokens", "vocab", "seconds", "MB/s",
                        "phases (s)", "peak RSS, main (MiB)",
                        "after imports (MiB)", "largest worker (MiB)", "tree peak RSS / PSS (MiB)", "load", "date"],
                       rows) + [""]
    anchors = [(k, cases[k]) for k in sorted(cases, key=lambda k: (k.split("/")[0], int(k.split("/")[1]) if k.count("/") else 0))
               if k.startswith("anchor/")]
    if anchors:
        lines += ["BPE anchor: the `tokenizers` library's own `encode_batch_fast` on the same text, already in memory, "
                  "in the same 16k-character pieces (plus reading the ids out), all cores; against our tokenizing phase, "
                  "which also reads and decodes the files, cuts them, and writes the ids.", "",
                  *table(["corpus", "library: encode + ids (s)", "ours: tokenizing phase (s)", "ours / library"],
                         [[f"{int(k.split('/')[1]):,} MB", f"{a['encode_seconds']:.1f} + {a['ids_seconds']:.1f}",
                           f"{a['ours_tokenizing_seconds']:.1f}" if a.get("ours_tokenizing_seconds") else "—",
                           f"{a['ours_tokenizing_seconds'] / a['seconds']:.2f}" if a.get("ours_tokenizing_seconds") else "—"]
                          for k, a in anchors]), ""]
    trains = sorted((k for k in cases if k.startswith("train/")), key=lambda k: (k.split("/")[2], int(k.split("/")[1])))
    if trains:
        lines += ["Training on each corpus: wordformer's model at the sizes of 1 (4 layers, d_model 128, block 64, batch "
                  "12), plain loop, fused AdamW, 2 threads, every batch drawn from the memory-mapped corpus (random "
                  "windows), 5 untimed then the timed steps. The vocabulary is the same for every corpus size (it sets "
                  "the output layer's cost), so tokens/s should not depend on the size.", "",
                  *table(["tokenizer", "corpus", "vocab", "tokens/s", "steps", "load"],
                         [[k.split("/")[2], f"{int(k.split('/')[1]):,} MB", f"{cases[k]['vocab_size']:,}",
                           f"{cases[k]['tokens_per_s']:,.0f}", str(cases[k]["steps"]), f"{cases[k].get('load1', 0):.1f}"]
                          for k in trains]), ""]
    ddp = cases.get("ddp")
    if ddp:
        runs = ddp["runs"]
        label = {"one_process_2_threads_batch_24": "one process, 2 threads, batch 24",
                 "one_process_1_thread_batch_12": "one process, 1 thread, batch 12",
                 "two_nodes_1_thread_batch_12_each": "two nodes on 127.0.0.1 (gloo), 1 thread and batch 12 each"}
        rows = [[label.get(k, k), spread(summarize_runs(v, "tokens_per_s")), spread(summarize_runs(v, "step_ms"), 1)]
                for k, v in runs.items()]
        two = runs.get("two_nodes_1_thread_batch_12_each", [])
        ar = summarize_runs(two, "allreduce_ms")
        over = ([m["allreduce_ms"] / m["step_ms"] for m in two if m.get("allreduce_ms")])
        lines += ["Two-process DDP on this CPU against one process: `wordformer train` (the Trainer, char tokenizer, the "
                  "10 MB corpus, sizes of 1, learned positions), global batch 24 in both, repeats alternating; "
                  "tokens/s over all processes. The all-reduce: the time of one `all_reduce` of a tensor the size of "
                  "all gradients (gloo, after training, 30 times), against the two-process step time.", "",
                  *table(["run", "tokens/s: median (min–max)", "ms per step: median (min–max)"], rows), "",
                  f"All-reduce of {two[0].get('allreduce_floats', 0):,} floats: {spread(ar, 1)} ms, "
                  f"{100 * statistics.median(over):.0f}% of a two-process step (median)." if over else "", ""]
    lines += ["Multi-GPU (DDP against FSDP): `python -m benchmarks.bench_multi_gpu` is ready; not measured (no GPU "
              "machine was lent to this work).", "",
              f"Reproduce: {', '.join(f'`{c}`' for c in r.get('commands', [r.get('command_last', '')]))} (from the "
              "repository root; run here in chunks, each under the CPU lock). "
              f"Machine: {machine_line(r)}."]
    return lines


def summarize_runs(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    vals = [m[key] for m in runs if m.get(key) is not None]
    if not vals:
        return {}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def section_serve(r: dict[str, Any]) -> list[str]:
    c = r["config"]
    lines = [f"Both servers run as their own processes on the same weights ({c['weights']}; "
             f"block_size {c['block_size']} so prompt + new tokens fit without wordformer sliding its window or GPT-2 "
             f"running past its positions), the client is a third process on the same machine. Peer: `transformers "
             f"serve FOLDER --device cpu` (the folder written by `wordformer.gpt2.to_hf_model`, with a `tokenizers` "
             f"tokenizer of the same vocabulary), plain and with `--continuous-batching` (its paged KV cache bounded to "
             f"256 blocks of 32 tokens), OMP threads {c['peer_threads']} (plain also with 2, to find its best). One client: the official `openai` "
             f"client, greedy, {c['new_tokens']} new tokens, {c['repeats']} repeats alternating between the servers; "
             f"per-token latency = (last chunk - first chunk) / (tokens - 1). Concurrent clients: "
             f"{c.get('concurrent_client', 'AsyncOpenAI')}, each asking {c['requests_per_client']} streamed completions "
             f"of {c['concurrent_new_tokens']} tokens one after another (temperature 0.8, no seed); aggregate "
             f"tokens/s over the phase; latency percentiles over every gap between two chunks of a stream and over "
             f"every time to first token; {c['rounds']} rounds, the servers alternating. The servers and the client "
             f"share the machine's cores with each other and with whatever else runs (see the load average below); "
             f"each figure is a median over the alternating repeats or rounds.", ""]
    names = {"wordformer": "`wordformer serve`", "peer": "`transformers serve` (peer)",
             "peer_cb": "`transformers serve --continuous-batching` (peer)",
             "peer_2threads": "`transformers serve`, 2 OMP threads (peer)"}
    for size, e in r["sizes"].items():
        o = e["options"]
        lines += [f"**{size} size**: {o['num_layers']} layers, {o['num_heads']} heads, d_model {o['d_model']}, "
                  f"{o['tokenizer']} tokenizer, vocabulary {e['vocab_size']:,}, {e['parameters']:,} parameters; prompt "
                  f"{e['prompt_tokens']} tokens. Same greedy text from both servers: {e['same_greedy_text']}.", "",
                  *table(["one streaming client", "time to first token, ms: median [IQR]",
                          "per-token latency, ms: median [IQR]"],
                         [[names[k], all_cell(v["ttft_ms"], 2), all_cell(v["per_token_ms"], 2)]
                          for k, v in e["single"].items()]),
                  "", f"Per-token latency, wordformer / the faster peer ({names[e.get('best_peer', 'peer')]}), per "
                      f"repeat: {all_cell(e['per_token_ratio'], 2)}.", ""]
        rows = []
        for name, by_clients in e["concurrency"].items():
            for clients in ("1", "4", "16"):
                v = by_clients.get(clients)
                if not v:
                    continue
                rows.append([names[name], clients, all_cell(v["tokens_per_s"]), num(v["gap_p50_ms"]["median"], 2),
                             num(v["gap_p99_ms"]["median"], 2), num(v["ttft_p50_ms"]["median"], 1),
                             num(v["ttft_p99_ms"]["median"], 1)])
        lines += [*table(["server", "clients", "aggregate tokens/s: median [IQR]", "gap p50 ms", "gap p99 ms",
                          "TTFT p50 ms", "TTFT p99 ms"], rows), ""]
        scale = {n: v.get("scaling_16_over_1") for n, v in e["concurrency"].items()}
        lines += ["Aggregate tokens/s at 16 clients / 1 client (medians): " + ", ".join(
            f"{names[n]} {num(v, 2)}" for n, v in scale.items()) + ".", ""]
    goals = r.get("goals", [])
    if goals:
        lines += ["Goals (issue 14):", *(f"- {g['goal'].removeprefix('serving, ')} {g['target']}: "
                                         f"{num(g['value'], 3)}, {met(g['met'])}" for g in goals), ""]
    chunks = r.get("chunks")
    if chunks:  # bench_serve --max-chunks: one size per CPU-lock hold
        lines += ["Measured one size per run (`--max-chunks 1`, each under the shared CPU lock): " + ", ".join(
            f"{size} {c['date']} ({c['duration_s'] / 60:.1f} min)" for size, c in chunks.items()) + ".", ""]
    reading = ROOT / "benchmarks" / "SERVE.md"  # the hand-written reading of these figures
    if reading.is_file():
        lines += [ln.replace("# ", "### ", 1) if ln.startswith("# ") else ln
                  for ln in reading.read_text().strip().splitlines()] + [""]
    return lines + provenance(r)


# ------------------------------------------------------------------------------------ the page


def goal_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for name in ORDER:
        r = results.get(name)
        if name == "gpu" and r is None:
            rows.append(["GPU: MFU of wordformer, GPT-2 small, bf16, compiled, H100", ">= 0.45", "—", "not measured yet (no GPU)"])
            continue
        if r is None:
            if name != "omp":
                rows.append([TITLES[name], "", "—", "not run yet"])
            continue
        for g in r.get("goals", []):
            value = g["value"]
            shown = "—" if value is None else (f"{value * 100:+.1f}%" if "overhead" in g["goal"] else f"{value:.3f}"
                                                 if name in ("quality", "serve", "recipe") else f"{value:.2f}")
            if g.get("note"):
                shown += f" ({g['note']})"
            rows.append([g["goal"], g["target"], shown, met(g["met"])])
    return rows


HEADER = """# Benchmarks

wordformer against a peer: HuggingFace `transformers.GPT2LMHeadModel` of the same sizes (SDPA attention, exact
GELU, no dropout, tied output layer), trained by a plain PyTorch loop with the same optimiser settings and the
very same batches (wordformer's `TextBatches`, seed 1337), measured in the same process, alternating
(ABCABC…, the order rotating each round; training alternates in chunks of a few steps). Figures are medians
over repeats or chunks with min–max and IQR. Each section states its command, date, machine and the load average during it.

Run everything with `make bench` (`python -m benchmarks.run_all`: about 17 minutes on this 2-core machine
when it is quiet, 40 or more when other processes compete; the four 2000-step quality runs take half of
it; `--skip quality` leaves them out). It is not part of `make test`. Or run one benchmark alone, e.g.
`python -m benchmarks.bench_train` (`--quick` for a smoke run that writes `benchmarks/results/quick/` and
leaves this page alone; `python -m benchmarks.run_all --quick` smoke-runs all of them in under 2 minutes). Raw figures: `benchmarks/results/NAME.json`.
This page is generated from them by `python -m benchmarks.report`.
"""


def load_warning(results: dict[str, dict[str, Any]]) -> list[str]:
    # bench_omp adds a competing process on purpose: its load says nothing about the machine
    loads = [v for name, r in results.items() if name != "omp" for v in run_loads(r)]
    if not loads:
        return []
    cpus = next(iter(results.values()))["machine"].get("cpu_count") or 1
    med = statistics.median(loads)
    if med <= cpus:
        return [f"Load average (1 min) over all runs: median {med:.1f}, max {max(loads):.1f} on {cpus} CPUs.", ""]
    return [f"> **The machine was busy while these figures were taken**: the 1-minute load average over all runs had "
            f"median {med:.1f} and max {max(loads):.1f} on {cpus} CPUs (other developers' test runs shared the "
            "machine). With 2 torch threads on 2 contended cores, a step waits whenever either thread is descheduled, "
            "so absolute tokens/s swing by up to two orders of magnitude between chunks; the ratios of back-to-back "
            "runs in quiet rounds and the best chunks are the more trustworthy figures. Re-run `make bench` on an idle machine for clean "
            "absolute numbers.", ""]


def render(path: Path = OUT) -> str:
    results = load_results()
    notes = ROOT / "benchmarks" / "NOTES.md"
    lines = [HEADER, "## Goals", "",
             *table(["goal", "target", "measured (median)", "status"], goal_rows(results)), "",
             *load_warning(results)]
    if notes.is_file():  # the hand-written reading of the figures, right after the summary
        lines += [notes.read_text().rstrip(), ""]
    for name in ORDER:
        if name == "recipe":  # numbered after the tuning sections below
            continue
        lines += [f"## {TITLES[name]}", ""]
        r = results.get(name)
        if name == "gpu":
            lines += section_gpu(r)
        elif r is None:
            lines += [f"Not run yet: `python -m benchmarks.bench_{name}`."]
        else:
            lines += {"train": section_train, "generate": section_generate, "memory": section_memory,
                      "quality": section_quality, "scaling": section_scaling, "omp": section_omp,
                      "serve": section_serve, "scale": section_scale, "recipe": section_recipe}[name](r)
        lines.append("")
    if (ROOT / "benchmarks" / "TUNE.md").is_file():
        tune = (ROOT / "benchmarks" / "TUNE.md").read_text().strip().splitlines()
        lines += ["## 10. Hyperparameter tuning (issue: `wordformer tune`)", "",
                  "Written by `python -m benchmarks.bench_tune` (about 30 minutes; not part of `make bench`), "
                  "copied from [benchmarks/TUNE.md](benchmarks/TUNE.md).", ""]
        lines += [ln.replace("## ", "### ", 1) if ln.startswith("## ") else ln for ln in tune[1:]] + [""]
    if (ROOT / "benchmarks" / "SPOT.md").is_file():  # written by bench_spot.py (issue 17)
        spot = (ROOT / "benchmarks" / "SPOT.md").read_text().strip().splitlines()
        lines += ["## 11. Tuning against spotpython's SPOT (issue 17)", "",
                  "Written by `python -m benchmarks.bench_spot`, copied from [benchmarks/SPOT.md](benchmarks/SPOT.md).", ""]
        lines += spot[1:] + [""]
    lines += [f"## {TITLES['recipe']}", ""]
    lines += section_recipe(results["recipe"]) if "recipe" in results else [
        "Not run yet: `python -m benchmarks.bench_recipe`."]
    text = "\n".join(lines).rstrip() + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return text



def finish(name: str, module: str, args: argparse.Namespace, started: dict[str, Any], data: dict[str, Any]) -> Path:
    """Write ``results/NAME.json`` (or ``results/quick/NAME.json``) and re-render BENCHMARKS.md."""
    import torch

    payload = {
        "name": name,
        "command": command_line(module),
        "date": started["date"],
        "duration_s": round(time.perf_counter() - started["t0"], 1),
        "quick": bool(args.quick),
        "machine": machine_info(),
        "threads": torch.get_num_threads(),
        "load": {"start": started["load"], "end": loadavg()},
        **data,
    }
    folder = QUICK_RESULTS if args.quick else RESULTS
    path = folder / f"{name}.json"
    write_json(path, payload)
    log(f"wrote {path.relative_to(ROOT)}")
    if not args.quick and not args.no_report:
        render()
        log("updated BENCHMARKS.md")
    return path


if __name__ == "__main__":
    render()
    print(f"wrote {OUT}")
