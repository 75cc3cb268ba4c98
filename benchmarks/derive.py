"""Figures derived from the raw measurements: summaries, paired ratios and goals, over all rounds and over
"quiet" rounds.

The benchmarks alternate their cases round by round (ABCABC..., or chunk by chunk inside one training run).
On a shared machine a round can be hit by another process: with 2 torch threads on 2 busy cores a step then
waits for a descheduled thread, and throughput drops by up to two orders of magnitude for that chunk.
A round is *quiet* when every case in it ran at >= ``QUIET`` x that case's own 90th-percentile throughput,
i.e. no case of the round was visibly slowed. The filter is symmetric (each case is judged against itself),
so it does not favour either side of a ratio. Goals use the quiet rounds when there are at least
``MIN_QUIET`` of them, else all rounds, and say which.

``python -m benchmarks.rescore`` re-derives these fields in existing result files.
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

from typing import Any, Callable, Iterable, Optional

from .common import goal, summarize

QUIET = 0.7
MIN_QUIET = 5

TRAIN_PHASES = (("wordformer_trainer", "wordformer_plain", "peer_plain", "wordformer_plain_fused", "peer_plain_fused",
                 "peer_plain_gelu_new"),
                ("wordformer_trainer_default", "wordformer_plain_phase2", "peer_plain_phase2"),
                ("wordformer_trainer_bf16", "peer_plain_phase3", "wordformer_plain_phase3", "wordformer_plain_bf16",
                 "peer_plain_bf16"))
GEN_TWO_THREADS = ("wordformer_cache", "wordformer_no_cache", "peer_generate")
GEN_ONE_THREAD = ("wordformer_cache_1thread", "peer_generate_1thread")


def percentile(values: list[float], q: float) -> float:
    vals = sorted(values)
    pos = q * (len(vals) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def quiet_rounds(runs: dict[str, list[dict]], names: Iterable[str], key: str = "tokens_per_s") -> list[int]:
    """Rounds in which every named case ran at >= QUIET x its own 90th-percentile throughput."""
    keep: Optional[set[int]] = None
    for name in names:
        if name not in runs or not runs[name]:
            continue
        ref = percentile([r[key] for r in runs[name]], 0.9)
        ok = {r["repeat"] for r in runs[name] if r[key] >= QUIET * ref}
        keep = ok if keep is None else keep & ok
    return sorted(keep or ())


def both(runs: dict[str, list[dict]], name: str, quiet: list[int], key: str = "tokens_per_s") -> dict[str, Any]:
    """Summary of one case over all rounds and over the quiet ones, plus all chunks pooled (total/total)."""
    rs = runs[name]
    out = {**summarize([r[key] for r in rs]), "quiet": summarize([r[key] for r in rs if r["repeat"] in quiet])}
    if rs and all("seconds" in r for r in rs):
        out["overall"] = sum(r[key] * r["seconds"] for r in rs) / sum(r["seconds"] for r in rs)
    return out


def pair(runs: dict[str, list[dict]], a: str, b: str, fn: Callable[[float, float], float], quiet: list[int],
         key: str = "tokens_per_s") -> dict[str, Any]:
    """``fn(a, b)`` of the two measurements of each round, over all rounds and over the quiet ones."""
    by = {r["repeat"]: r[key] for r in runs[b]}
    values = [(r["repeat"], fn(r[key], by[r["repeat"]])) for r in runs[a] if r["repeat"] in by]
    return {**summarize([v for _, v in values]), "quiet": summarize([v for rep, v in values if rep in quiet])}


def headline(s: dict[str, Any]) -> tuple[Optional[float], str]:
    """The figure a goal is judged on: the quiet-round median when there are enough quiet rounds."""
    q = s.get("quiet") or {}
    if q.get("n", 0) >= MIN_QUIET:
        return q["median"], f"median of {q['n']} quiet rounds (all {s['n']} rounds: {s['median']:.3g})"
    return s.get("median"), f"median of all {s['n']} rounds (only {q.get('n', 0)} quiet)"


def ratio_fn(x: float, y: float) -> float:
    return x / y


def overhead_fn(plain: float, trainer: float) -> float:
    return plain / trainer - 1


# ------------------------------------------------------------------------------------ per benchmark


def derive_train(runs: dict[str, list[dict]]) -> dict[str, Any]:
    q1, q2, q3 = (quiet_rounds(runs, names) for names in TRAIN_PHASES)
    quiet = {name: (q1 if name in TRAIN_PHASES[0] else q2 if name in TRAIN_PHASES[1] else q3) for name in runs}
    summary = {name: both(runs, name, quiet[name]) for name in runs}
    specs = {
        "trainer_over_peer": ("wordformer_trainer", "peer_plain", ratio_fn, q1),
        "trainer_default_over_peer": ("wordformer_trainer_default", "peer_plain_phase2", ratio_fn, q2),
        "plain_over_peer": ("wordformer_plain", "peer_plain", ratio_fn, q1),
        "trainer_overhead": ("wordformer_plain", "wordformer_trainer", overhead_fn, q1),
        "trainer_default_overhead": ("wordformer_plain_phase2", "wordformer_trainer_default", overhead_fn, q2),
        "plain_fused_over_plain": ("wordformer_plain_fused", "wordformer_plain", ratio_fn, q1),
        "plain_fused_over_peer": ("wordformer_plain_fused", "peer_plain", ratio_fn, q1),
        "plain_fused_over_peer_fused": ("wordformer_plain_fused", "peer_plain_fused", ratio_fn, q1),
        "trainer_over_peer_gelu_new": ("wordformer_trainer", "peer_plain_gelu_new", ratio_fn, q1),
        "trainer_bf16_over_peer": ("wordformer_trainer_bf16", "peer_plain_phase3", ratio_fn, q3),
        "trainer_bf16_over_peer_bf16": ("wordformer_trainer_bf16", "peer_plain_bf16", ratio_fn, q3),
        "plain_bf16_over_plain_fp32": ("wordformer_plain_bf16", "wordformer_plain_phase3", ratio_fn, q3),
        "plain_bf16_over_peer_bf16": ("wordformer_plain_bf16", "peer_plain_bf16", ratio_fn, q3),
    }
    ratios = {k: pair(runs, a, b, fn, q) for k, (a, b, fn, q) in specs.items() if a in runs and b in runs}
    speed, speed_how = headline(ratios["trainer_over_peer"])
    over, over_how = headline(ratios["trainer_overhead"])
    over_d, _ = headline(ratios["trainer_default_overhead"])
    goals = [goal("training: wordformer (Trainer) / peer tokens/s, both float32", speed, 1.3, note=speed_how)]
    if "trainer_bf16_over_peer" in ratios:
        bf, bf_how = headline(ratios["trainer_bf16_over_peer"])
        same, _ = headline(ratios["trainer_bf16_over_peer_bf16"])
        goals.append(goal("training: wordformer (Trainer, `--precision bf16-mixed`) / peer (float32, as nanoGPT on a "
                          "CPU)", bf, 1.3, note=f"{bf_how}; against the peer under the same bf16 autocast {same:.2f}"))
    goals += [
             goal("training: Trainer overhead over wordformer's plain loop", over, 0.05, higher_is_better=False,
                  note=f"loggers and progress bar off, {over_how}; with train()'s defaults {over_d:+.1%}")]
    return {"tokens_per_s": summary, "ratios": ratios, "quiet_rounds": {"phase1": q1, "phase2": q2, "phase3": q3},
            "goals": goals}


def derive_generate(runs: dict[str, list[dict]]) -> dict[str, Any]:
    q2 = quiet_rounds(runs, GEN_TWO_THREADS)
    q1 = quiet_rounds(runs, GEN_ONE_THREAD)
    quiet = {name: (q1 if name in GEN_ONE_THREAD else q2) for name in runs}
    summary = {name: both(runs, name, quiet[name]) for name in runs}
    ratios = {"cache_over_no_cache": pair(runs, "wordformer_cache", "wordformer_no_cache", ratio_fn, q2),
              "cache_over_peer": pair(runs, "wordformer_cache", "peer_generate", ratio_fn, q2)}
    if all(n in runs for n in GEN_ONE_THREAD):
        ratios["cache_over_peer_1thread"] = pair(runs, *GEN_ONE_THREAD, ratio_fn, q1)
    cache, cache_how = headline(ratios["cache_over_no_cache"])
    peer, peer_how = headline(ratios["cache_over_peer"])
    goals = [goal("generation: wordformer cache / no cache tokens/s", cache, 3.0, note=cache_how),
             goal("generation: wordformer (cache) / peer generate tokens/s", peer, 1.5, note=peer_how)]
    return {"tokens_per_s": summary, "ratios": ratios, "quiet_rounds": {"two_threads": q2, "one_thread": q1},
            "goals": goals}


def derive_scaling_row(row: dict[str, Any], peak_gflops: float) -> None:
    """Fill a scaling row's summaries, ratio and fraction of the matmul peak (in place)."""
    runs = row["runs"]
    quiet = quiet_rounds(runs, ("wordformer", "peer"))
    row["quiet_rounds"] = quiet
    row["wordformer_over_peer"] = pair(runs, "wordformer", "peer", ratio_fn, quiet)
    for who, rs in runs.items():
        row[who] = {"tokens_per_s": both(runs, who, quiet)}
        fractions = [r["tokens_per_s"] * row["flops_per_token"] / (peak_gflops * 1e9) for r in rs]
        row[who]["peak_fraction"] = {**summarize(fractions),
                                     "quiet": summarize([f for r, f in zip(rs, fractions) if r["repeat"] in quiet])}
