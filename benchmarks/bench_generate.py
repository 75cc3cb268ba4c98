"""Generation on CPU: 256 new tokens, batch 1, a 16-token prompt, greedy; wordformer with its KV cache, without
it, and the peer's ``generate`` (HuggingFace GPT-2 with its cache).

The model has the sizes of the training benchmark (4 layers, 4 heads, d_model 128) but block_size 512 with
learned positions (the peer: n_positions 512), so 16 + 256 tokens fit and neither model slides its window.
The peer gets wordformer's weights, so both compute the same function; the runs alternate in one process.

    python -m benchmarks.bench_generate [--quick]
"""

from __future__ import annotations

from . import _env  # noqa: F401  (first: OMP settings must precede torch)

import time
from typing import Any

import torch

from .common import (SIZES, alternate, base_parser, char_corpus, copy_into_peer, log, peer_attention,
                     peer_model, quiet_libraries, set_threads, start, wordformer_model)
from .report import finish
from .derive import derive_generate

NAME = "generate"
MODULE = "benchmarks.bench_generate"
BLOCK = 512
PROMPT_TOKENS = 16


def model_sizes() -> dict[str, int]:
    return {"num_layers": SIZES["num_layers"], "num_heads": SIZES["num_heads"], "d_model": SIZES["d_model"],
            "block_size": BLOCK}


def prompt_ids(corpus) -> list[int]:
    """The first 16 tokens of the validation text (real characters, so the prompt is ordinary input)."""
    return [int(i) for i in corpus.val_ids[:PROMPT_TOKENS]]


def wordformer_generate(model, prompt: list[int], new: int, *, use_cache: bool) -> list[int]:
    from wordformer.generation import generate_ids

    return generate_ids(model, [prompt], max_new_tokens=new, temperature=0.0, use_cache=use_cache)[0]


@torch.no_grad()
def peer_generate(peer, prompt: list[int], new: int, *, use_cache: bool = True) -> list[int]:
    x = torch.tensor([prompt], dtype=torch.long)
    out = peer.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                        do_sample=False, use_cache=use_cache, pad_token_id=0, eos_token_id=None)
    return out[0, x.size(1):].tolist()


def one_thread(fn, restore: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(restore)


def timed(fn, new: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    if len(out) != new:
        raise RuntimeError(f"expected {new} new tokens, got {len(out)}")
    return {"tokens_per_s": new / seconds, "seconds": seconds, "ms_per_token": seconds / new * 1e3}


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=256, help="tokens to generate")
    args = p.parse_args(argv)
    started = start()
    threads = set_threads(args.threads)
    quiet_libraries()
    repeats = args.repeats or (2 if args.quick else 15)
    new = args.new_tokens
    if PROMPT_TOKENS + new > BLOCK:
        p.error(f"--new-tokens must be <= {BLOCK - PROMPT_TOKENS} so the window never slides")

    corpus = char_corpus(SIZES["block_size"])
    vocab = corpus.tokenizer.vocab_size
    prompt = prompt_ids(corpus)
    wf = wordformer_model(vocab, **model_sizes()).eval()
    peer = peer_model(vocab, **model_sizes()).eval()
    copy_into_peer(wf, peer)
    attn = peer_attention(peer)

    # identical work: the same greedy continuation from all three (checked, not assumed)
    out_cache = wordformer_generate(wf, prompt, new, use_cache=True)
    out_nocache = wordformer_generate(wf, prompt, new, use_cache=False)
    out_peer = peer_generate(peer, prompt, new)
    agree = sum(a == b for a, b in zip(out_cache, out_peer)) / new
    log(f"threads {threads}, peer attention {attn}; cache == no-cache: {out_cache == out_nocache}; "
        f"wordformer == peer: {out_cache == out_peer} ({agree:.0%} of tokens)")

    cases = {
        "wordformer_cache": lambda: timed(lambda: wordformer_generate(wf, prompt, new, use_cache=True), new),
        "wordformer_no_cache": lambda: timed(lambda: wordformer_generate(wf, prompt, new, use_cache=False), new),
        "peer_generate": lambda: timed(lambda: peer_generate(peer, prompt, new), new),
        # supplementary: one thread (batch-1 decoding is a chain of tiny ops, where a second thread mostly waits)
        "wordformer_cache_1thread": lambda: one_thread(lambda: timed(
            lambda: wordformer_generate(wf, prompt, new, use_cache=True), new), threads),
        "peer_generate_1thread": lambda: one_thread(lambda: timed(lambda: peer_generate(peer, prompt, new), new), threads),
    }
    runs = alternate(cases, repeats)
    derived = derive_generate(runs)
    finish(NAME, MODULE, args, started, {
        "config": {**model_sizes(), "vocab_size": vocab, "positional": "learned", "batch": 1,
                   "prompt_tokens": PROMPT_TOKENS, "new_tokens": new, "decoding": "greedy", "repeats": repeats,
                   "weights": "random init (seed 1337), copied into the peer", "peer": "transformers.GPT2LMHeadModel.generate",
                   "peer_attention": attn, "cache_equals_no_cache": out_cache == out_nocache,
                   "wordformer_equals_peer": out_cache == out_peer, "token_agreement_with_peer": agree},
        **derived,  # tokens_per_s, ratios, quiet_rounds, goals (benchmarks/derive.py)
        "runs": runs,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
