"""Serving: ``wordformer serve`` against HuggingFace ``transformers serve`` on the same weights, over HTTP.

Two model sizes, each a GPT-2-shaped model (learned positions, pre-norm, tanh GELU, tied output layer,
biases) so that one set of weights is both a wordformer checkpoint and a ``GPT2LMHeadModel`` folder
(``wordformer.gpt2.to_hf_model``):

* ``demo``: the demo's sizes (``DEMO_SIZES``: 2 layers, 4 heads, d_model 64) and its word tokenizer
  (built-in corpus, min_freq 2);
* ``bench``: the benchmarks' sizes (``SIZES``: 4 layers, 4 heads, d_model 128) and the char tokenizer of
  tinyshakespeare.

Both get ``block_size`` 256 (the demo has 32, the benchmarks 64), so a 16-token prompt plus 128 new tokens
fit: wordformer does not slide its window and GPT-2 does not run past its positions. The weights are the
seeded initialisation, untrained: speed does not depend on their values, and both servers produce the same
greedy text from them (checked). The peer's folder carries a ``tokenizers`` word-level tokenizer with the same
vocabulary, so both servers see the same token ids.

Each server runs as its own process, started by its own command (``wordformer serve``, ``transformers serve``),
and the benchmark process is the client (the official ``openai`` client), so the client's work competes for
the same 2 cores as the server's, as it would on a laptop.

1. One streaming client, greedy, 128 new tokens, alternating between the servers each repeat: time to the
   first token (TTFT) and per-token latency ((last chunk - first chunk) / (tokens - 1)).
2. 1, 4 and 16 concurrent streaming clients (``httpx.AsyncClient`` reading the events as plain lines: the
   official client parses every chunk into pydantic objects, which would spend the cores the servers need),
   each asking 4 completions of 64 tokens one after another (temperature 0.8, no seed): aggregate tokens/s over
   the whole phase, and p50/p99 of the per-token gaps and of TTFT. The peer runs the same phases for reference.

Each size is one chunk (a few minutes here), written to ``results/serve_<size>.json`` when it ends; with
``--max-chunks 1`` a run measures one size not yet measured and stops, and a rerun resumes (a chunk is reused only
when its settings are the same). When every size is there the chunks become ``results/serve.json`` and are removed.

    python -m benchmarks.bench_serve [--quick] [--max-chunks N]
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import torch

from .common import (DATA, QUICK_RESULTS, RESULTS, ROOT, SEED, SIZES, base_parser, goal, load1, loadavg, log,
                     quiet_libraries, start, summarize, write_json)
from .report import finish

NAME = "serve"
MODULE = "benchmarks.bench_serve"
BLOCK = 256
PROMPT_TOKENS = 16
CLIENTS = (1, 4, 16)
REQUESTS_PER_CLIENT = 4


def size_options() -> dict[str, dict[str, Any]]:
    from wordformer.cli.train import DEMO_SIZES

    demo = {k: DEMO_SIZES[k] for k in ("num_layers", "num_heads", "d_model")}
    bench = {k: SIZES[k] for k in ("num_layers", "num_heads", "d_model")}
    return {"demo": {**demo, "tokenizer": "word", "min_freq": DEMO_SIZES["min_freq"]},
            "bench": {**bench, "tokenizer": "char"}}


# ------------------------------------------------------------------------------------------- the models


def _tokenizer(options: dict[str, Any], data: Path = DATA):
    from wordformer.data import builtin_texts
    from wordformer.tokenizers import CharTokenizer, WordTokenizer

    if options["tokenizer"] == "word":
        texts = builtin_texts()
        return WordTokenizer.train(texts, min_freq=options["min_freq"]), "\n".join(texts)
    if not data.is_file():
        raise SystemExit(f"benchmarks: {data} is missing; give --data PATH to tinyshakespeare.txt")
    text = data.read_text(encoding="utf-8")
    return CharTokenizer.train([text]), text


def _hf_tokenizer(tok, folder: Path) -> None:
    """The same vocabulary as a ``tokenizers`` word-level tokenizer, saved where ``transformers serve`` reads it."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from wordformer.tokenizers import WORD_PATTERN

    vocab = {tok.id_to_token(i): i for i in range(tok.vocab_size)}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    if tok.kind == "word":
        hf.normalizer = normalizers.Lowercase()
        hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                    pre_tokenizers.Split(Regex(WORD_PATTERN.pattern), "isolated")])
        hf.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # tokens joined by spaces
    else:
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")  # one piece per character
        hf.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=hf, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(folder)


def build(size: str, options: dict[str, Any], root: Path, data: Path = DATA) -> dict[str, Any]:
    """A wordformer checkpoint and a GPT-2 folder holding the same weights, and a prompt of real text."""
    from wordformer.checkpoint import wordformer_entry
    from wordformer.config import DataConfig, ModelConfig, TrainConfig
    from wordformer.files import atomic_torch_save
    from wordformer.gpt2 import to_hf_model
    from wordformer.model import WordPredictor

    tok, text = _tokenizer(options, data)
    config = ModelConfig(vocab_size=tok.vocab_size, block_size=BLOCK, d_model=options["d_model"],
                         num_heads=options["num_heads"], num_layers=options["num_layers"], positional="learned",
                         norm="pre", activation="gelu_tanh", tie_weights=True, bias=True, dropout=0.0)
    torch.manual_seed(SEED)
    model = WordPredictor(config).eval()
    folder = root / size
    folder.mkdir(parents=True, exist_ok=True)
    entry = wordformer_entry(config, DataConfig(tokenizer=options["tokenizer"]), TrainConfig(), tok, step=0)
    state = {"model." + k: v for k, v in model.state_dict().items()}
    atomic_torch_save({"state_dict": state, "wordformer": entry}, folder / "model.ckpt")
    hf_folder = folder / "hf"
    to_hf_model(model).save_pretrained(hf_folder)
    _hf_tokenizer(tok, hf_folder)
    ids = tok.encode(text[:4000])
    prompt = tok.decode([i for i in ids if i not in (tok.eos_id, tok.pad_id)][:PROMPT_TOKENS])
    return {"checkpoint": folder / "model.ckpt", "hf": hf_folder, "prompt": prompt, "vocab_size": tok.vocab_size,
            "parameters": model.num_parameters(), "prompt_tokens": len(tok.encode(prompt))}


# ------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process and the model id it answers to."""

    def __init__(self, name: str, command: list[str], port: int, model: str, env: dict[str, str], log_path: Path):
        self.name, self.port, self.model = name, port, model
        self.base = f"http://127.0.0.1:{port}/v1"
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     start_new_session=True)
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(self.base + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"benchmarks: {name} did not start; see {log_path}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# transformers serve, plain and with continuous batching; the latter sizes its paged KV cache from the machine's
# memory unless told (14 GB of this 23 GB machine for a 0.8M-parameter model): 256 blocks of 32 tokens hold
# 8,192 tokens, six times what 16 clients x (16 + 64) tokens need
PEERS = {"peer": [], "peer_cb": ["--continuous-batching", "--cb-num-blocks", "256", "--cb-block-size", "32"],
         "peer_2threads": []}  # the plain peer with 2 OMP threads instead of --peer-threads
PEER_THREADS = {"peer_2threads": 2}


def start_servers(built: dict[str, Any], root: Path, peer_threads: int, peers: list[str]) -> dict[str, Server]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    port = free_port()
    servers = {"wordformer": Server("wordformer", [sys.executable, "-m", "wordformer.cli", "serve", "--checkpoint",
                                                   str(built["checkpoint"]), "--port", str(port)],
                                    port, f"{built['checkpoint'].parent.name}/model", env, root / "wordformer.log")}
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    try:
        for name in peers:
            port = free_port()
            servers[name] = Server(name, [cli, "serve", str(built["hf"]), "--device", "cpu", "--port", str(port),
                                          "--host", "127.0.0.1", *PEERS[name]],
                                   port, str(built["hf"]),
                                   {**env, "OMP_NUM_THREADS": str(PEER_THREADS.get(name, peer_threads))},
                                   root / f"{name}.log")
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


# ------------------------------------------------------------------------------------------- clients


def one_stream(server: Server, prompt: str, new: int) -> dict[str, Any]:
    """One greedy streamed completion through the official client: TTFT, per-token latency, the text."""
    import openai

    client = openai.OpenAI(base_url=server.base, api_key="none", max_retries=0, timeout=120)
    times: list[float] = []
    pieces: list[str] = []
    t0 = time.perf_counter()
    stream = client.completions.create(model=server.model, prompt=prompt, max_tokens=new, temperature=0, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            times.append(time.perf_counter())
            pieces.append(chunk.choices[0].text)
    client.close()
    n = len(times)
    return {"ttft_ms": (times[0] - t0) * 1000 if times else None,
            "per_token_ms": (times[-1] - times[0]) / (n - 1) * 1000 if n > 1 else None,
            "tokens": n, "tokens_per_s": (n - 1) / (times[-1] - times[0]) if n > 1 else None,
            "text": "".join(pieces)}


def single_client(servers: dict[str, Server], prompt: str, new: int, repeats: int, label: str) -> dict[str, list]:
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    names = list(servers)
    for name in names:  # warm-up: first requests pay for lazy imports and allocations
        one_stream(servers[name], prompt, 8)
    for rep in range(repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            before = load1()
            result = one_stream(servers[name], prompt, new)
            result.update(repeat=rep, load1=before)
            runs[name].append(result)
            log(f"{label} repeat {rep + 1}/{repeats} {name}: ttft {result['ttft_ms']:.1f} ms, "
                f"{result['per_token_ms']:.2f} ms/token, {result['tokens']} tokens, load {before}")
    return runs


async def _client(http: Any, server: Server, prompt: str, new: int, requests: int, record: dict[str, list]) -> None:
    """One client: ``requests`` streamed completions one after another, read as plain server-sent events."""
    body = {"model": server.model, "prompt": prompt, "max_tokens": new, "temperature": 0.8, "stream": True}
    for _ in range(requests):
        t0 = time.perf_counter()
        last: Optional[float] = None
        async with http.stream("POST", server.base + "/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                choices = json.loads(line[6:]).get("choices") or [{}]
                if not choices[0].get("text"):
                    continue
                now = time.perf_counter()
                if last is None:
                    record["ttft"].append(now - t0)
                else:
                    record["gaps"].append(now - last)
                last = now
                record["tokens"][0] += 1


def concurrent_phase(server: Server, prompt: str, clients: int, new: int, requests: int) -> dict[str, Any]:
    record: dict[str, list] = {"ttft": [], "gaps": [], "tokens": [0]}

    async def main() -> float:
        import httpx

        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as http:
            t0 = time.perf_counter()
            await asyncio.gather(*(_client(http, server, prompt, new, requests, record) for _ in range(clients)))
            return time.perf_counter() - t0

    before = load1()
    seconds = asyncio.run(main())
    tokens = record["tokens"][0]

    def pct(values: list[float], q: float) -> Optional[float]:
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000

    return {"clients": clients, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "gap_p50_ms": pct(record["gaps"], 0.5), "gap_p99_ms": pct(record["gaps"], 0.99),
            "ttft_p50_ms": pct(record["ttft"], 0.5), "ttft_p99_ms": pct(record["ttft"], 0.99), "load1": before}


def concurrency(servers: dict[str, Server], prompt: str, new: int, rounds: int, label: str) -> dict[str, Any]:
    out: dict[str, dict[str, list]] = {name: {str(c): [] for c in CLIENTS} for name in servers}
    for rnd in range(rounds):
        for name, server in (list(servers.items()) if rnd % 2 == 0 else list(servers.items())[::-1]):
            for clients in CLIENTS:
                result = concurrent_phase(server, prompt, clients, new, REQUESTS_PER_CLIENT)
                out[name][str(clients)].append(result)
                log(f"{label} round {rnd + 1}/{rounds} {name} x{clients}: {result['tokens_per_s']:.0f} tokens/s, "
                    f"gap p50 {result['gap_p50_ms']:.2f} ms p99 {result['gap_p99_ms']:.2f} ms, load {result['load1']}")
    return out


# ------------------------------------------------------------------------------------------- the run


def summarize_size(single: dict[str, list], conc: dict[str, Any]) -> dict[str, Any]:
    def s(runs: list[dict], key: str) -> dict[str, Any]:
        return summarize([r[key] for r in runs if r.get(key) is not None])

    peers = [name for name in single if name != "wordformer"]
    # the peer at its best: the variant with the lower median per-token latency
    best = min(peers, key=lambda name: statistics.median(r["per_token_ms"] for r in single[name]))
    by_rep = {r["repeat"]: r for r in single[best]}
    ratio = summarize([r["per_token_ms"] / by_rep[r["repeat"]]["per_token_ms"] for r in single["wordformer"]
                       if r["repeat"] in by_rep and r["per_token_ms"] and by_rep[r["repeat"]]["per_token_ms"]])
    summary: dict[str, Any] = {
        "single": {name: {"ttft_ms": s(runs, "ttft_ms"), "per_token_ms": s(runs, "per_token_ms"),
                          "tokens": s(runs, "tokens")} for name, runs in single.items()},
        "per_token_ratio": ratio,  # wordformer / the best peer variant, per repeat
        "best_peer": best,
        "concurrency": {},
    }
    for name, by_clients in conc.items():
        summary["concurrency"][name] = {
            c: {key: summarize([r[key] for r in runs if r.get(key) is not None])
                for key in ("tokens_per_s", "gap_p50_ms", "gap_p99_ms", "ttft_p50_ms", "ttft_p99_ms")}
            for c, runs in by_clients.items()}
        one = summary["concurrency"][name]["1"]["tokens_per_s"]["median"]
        sixteen = summary["concurrency"][name]["16"]["tokens_per_s"]["median"]
        summary["concurrency"][name]["scaling_16_over_1"] = sixteen / one if one and sixteen else None
    return summary


def run_size(size: str, options: dict[str, Any], args: Any, config: dict[str, Any]) -> dict[str, Any]:
    """One size, all servers and phases: the chunk that one CPU-lock hold measures."""
    started = start()
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        root = Path(tmp)
        built = build(size, options, root, args.data)
        log(f"{size}: {built['parameters']:,} parameters, vocabulary {built['vocab_size']}, prompt "
            f"{built['prompt']!r} ({built['prompt_tokens']} tokens)")
        servers = start_servers(built, root, config["peer_threads"], config["peers"])
        try:
            single = single_client(servers, built["prompt"], config["new_tokens"], config["repeats"], size)
            conc = concurrency(servers, built["prompt"], config["concurrent_new_tokens"], config["rounds"], size)
        finally:
            for server in servers.values():
                server.stop()
    texts = {name: {r["text"] for r in runs} for name, runs in single.items()}
    entry = {"options": options, "vocab_size": built["vocab_size"], "parameters": built["parameters"],
             "prompt": built["prompt"], "prompt_tokens": built["prompt_tokens"],
             "same_greedy_text": all(texts[name] == texts["wordformer"] for name in texts)
                                 and len(texts["wordformer"]) == 1,
             "runs": {"single": {k: [{kk: vv for kk, vv in r.items() if kk != "text"} for r in v]
                                 for k, v in single.items()}, "concurrency": conc}}
    entry.update(summarize_size(single, conc))
    return {"settings": {**config, "size": size}, "date": started["date"],
            "duration_s": round(time.perf_counter() - started["t0"], 1),
            "load": {"start": started["load"], "end": loadavg()}, "entry": entry}


def chunk_path(folder: Path, size: str) -> Path:
    return folder / f"{NAME}_{size}.json"


def done(path: Path, settings: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The chunk measured with these settings, else None."""
    try:
        chunk = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return chunk if chunk.get("settings") == settings else None


def main(argv: Optional[list[str]] = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="demo,bench", help="comma-separated: demo, bench")
    p.add_argument("--data", type=Path, default=DATA, help="tinyshakespeare.txt (the bench size's char vocabulary)")
    p.add_argument("--peers", default="peer,peer_cb,peer_2threads",
                   help="transformers serve variants: peer (plain), peer_cb (--continuous-batching), peer_2threads "
                        "(plain, 2 OMP threads)")
    p.add_argument("--peer-threads", type=int, default=1,
                   help="OMP threads of the transformers serve process (its best setting here: see BENCHMARKS.md)")
    p.add_argument("--max-chunks", type=int, default=None,
                   help="measure at most N sizes not yet measured (one chunk each), then stop; a rerun resumes")
    args = p.parse_args(argv)
    quiet_libraries(lightning=False)
    repeats = args.repeats or (2 if args.quick else 12)
    rounds = 1 if args.quick else 5
    new = 16 if args.quick else 128
    conc_new = 16 if args.quick else 64
    options = size_options()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    peers = [s.strip() for s in args.peers.split(",") if s.strip()]
    data: dict[str, Any] = {"config": {"block_size": BLOCK, "prompt_tokens_target": PROMPT_TOKENS, "new_tokens": new,
                                       "concurrent_new_tokens": conc_new, "requests_per_client": REQUESTS_PER_CLIENT,
                                       "clients": list(CLIENTS), "repeats": repeats, "rounds": rounds,
                                       "peer_threads": args.peer_threads, "peers": peers,
                                       "weights": "seeded initialisation (untrained), GPT-2 architecture",
                                       "concurrent_client": "httpx.AsyncClient, events read as plain lines"},
                            "sizes": {}, "goals": []}
    folder = QUICK_RESULTS if args.quick else RESULTS
    budget = args.max_chunks if args.max_chunks is not None else len(sizes)
    chunks: dict[str, dict[str, Any]] = {}
    for size in sizes:
        chunk = done(chunk_path(folder, size), {**data["config"], "size": size})
        if chunk is None:
            if budget <= 0:
                log(f"stopping before size {size} (--max-chunks); run the same command again to continue")
                return 0
            budget -= 1
            chunk = run_size(size, options[size], args, data["config"])
            write_json(chunk_path(folder, size), chunk)
            log(f"wrote {chunk_path(folder, size).relative_to(ROOT)}")
        else:
            log(f"{size}: measured {chunk['date']} (chunk file kept from an earlier run with the same settings)")
        chunks[size] = chunk
    for size, chunk in chunks.items():
        entry = chunk["entry"]
        data["sizes"][size] = entry
        ratio = entry["per_token_ratio"]["median"]
        data["goals"].append(goal(f"serving, {size} size: per-token latency, wordformer / transformers serve",
                                  ratio, 0.5, higher_is_better=False, note=f"best peer: {entry['best_peer']}"))
        scaling = entry["concurrency"]["wordformer"]["scaling_16_over_1"]
        data["goals"].append(goal(f"serving, {size} size: aggregate tokens/s, 16 clients / 1 client", scaling, 4.0))
    first = min(chunks.values(), key=lambda c: c["date"])
    data["chunks"] = {size: {k: c[k] for k in ("date", "duration_s", "load")} for size, c in chunks.items()}
    # the run's date, start load and duration are the chunks': the first one's start, the sum of their times
    started = {"date": first["date"], "load": first["load"]["start"],
               "t0": time.perf_counter() - sum(c["duration_s"] for c in chunks.values())}
    path = finish(NAME, MODULE, args, started, data)
    for size in chunks:  # serve.json holds them now; the next run measures afresh
        chunk_path(folder, size).unlink(missing_ok=True)
    print(json.dumps(data["goals"], indent=1))
    return 0 if path else 1


if __name__ == "__main__":
    raise SystemExit(main())
