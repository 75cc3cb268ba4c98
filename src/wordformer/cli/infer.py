"""Using a trained model: ``generate``, ``predict``, ``evaluate`` and ``explain``."""

from __future__ import annotations

import argparse
import json

from ..errors import WordformerError, check_int
from .options import add_checkpoint, add_json, add_prompt, add_sampling, prompt_of


def add_generate(p: argparse.ArgumentParser) -> None:
    add_checkpoint(p)
    add_prompt(p)
    add_sampling(p)
    p.add_argument("--num-samples", type=int, default=1, help="how many continuations (default: 1)")
    p.add_argument("--no-cache", action="store_true", help="decode without the KV cache (default: cache on)")


def run_generate(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..generation import check_sampling, encode_prompt

    check_sampling(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
    check_int("--num-samples", args.num_samples)
    loaded = load_checkpoint(args.checkpoint)
    # encoded once (one warning about unknown words); each line is generate(..., echo=True): the prompt as the
    # model read it, then the continuation, as the Python API returns it
    ids = encode_prompt(loaded.tokenizer, prompt_of(args), append_eos=args.append_eos)
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i
        print(loaded.generate(ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=seed, use_cache=not args.no_cache,
                              append_eos=False, echo=True))  # the ids hold <eos> already where it belongs
        if args.num_samples > 1 and i < args.num_samples - 1:
            print("---")
    return 0


def add_predict(p: argparse.ArgumentParser) -> None:
    add_checkpoint(p)
    add_prompt(p)
    p.add_argument("--k", type=int, default=5, help="how many tokens (default: 5)")
    add_json(p)


def run_predict(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..token_display import visible

    loaded = load_checkpoint(args.checkpoint)
    predictions = loaded.predict_next(prompt_of(args), args.k, append_eos=args.append_eos)
    if args.json:
        print(json.dumps([{"token": t, "label": visible(t), "probability": p} for t, p in predictions]))
        return 0
    print(f"next token after {args.prompt!r}:")
    for rank, (token, prob) in enumerate(predictions, 1):  # as the page and explain show tokens: "␣the", "↵"
        print(f"{rank:>3}. {visible(token):<20} {prob:.4f}")
    return 0


def add_evaluate(p: argparse.ArgumentParser) -> None:
    add_checkpoint(p)
    p.add_argument("--data", default=None,
                   help="held-out text (file or folder; pairs file for pair models); default: the validation split")
    p.add_argument("--batch-size", type=int, default=32, help="windows per batch (default: 32)")
    add_json(p)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..evaluate import evaluate
    from ..streaming import Progress

    loaded = load_checkpoint(args.checkpoint)
    metrics = evaluate(loaded, args.data, batch_size=args.batch_size, progress=Progress())
    if args.json:
        print(json.dumps(metrics))
    else:
        where = args.data or "the validation split of its training corpus"
        print(f"on {where}: loss {metrics['loss']:.4f}   perplexity {metrics['perplexity']:.2f}   "
              f"accuracy {metrics['accuracy']:.4f}   ({metrics['tokens']} tokens)")
    return 0


EXPLAIN_DESCRIPTION = (
    "Print query, keys, scaled dot products, softmax weights, values, weighted values and their sum for one token "
    "of the prompt, then the residual connection and the next-token probabilities. Defaults: the last token, "
    "layer 0, head 0.")


def add_explain(p: argparse.ArgumentParser) -> None:
    add_checkpoint(p)
    add_prompt(p)
    p.add_argument("--layer", type=int, default=0,
                   help="decoder block, 0-based; negative counts from the end (default: 0)")
    p.add_argument("--head", type=int, default=0, help="attention head, 0-based (default: 0)")
    p.add_argument("--token", type=int, default=-1,
                   help="position of the token to explain, 0-based; negative counts from the end "
                        "(default: -1, the last)")
    p.add_argument("--top-k", type=int, default=5, help="how many next-token probabilities to show (default: 5)")
    p.add_argument("--decimals", type=int, default=4, help="decimals per number (default: 4)")
    p.add_argument("--full", action="store_true",
                   help="print every value of long vectors (default: the first and last few)")
    p.add_argument("--weights", action="store_true",
                   help="also print this head's query/key/value weights and biases, to check steps 1, 2 and 5 by hand")
    p.add_argument("--json", action="store_true", help="print every tensor as JSON instead")


def run_explain(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..explain import explain_prompt, format_explanation

    if not 0 <= args.decimals <= 12:
        raise WordformerError(f"--decimals {args.decimals} must lie in 0..12")
    loaded = load_checkpoint(args.checkpoint)
    explanation = explain_prompt(loaded, prompt_of(args), args.layer, args.head, args.token,
                                 append_eos=args.append_eos, top_k=args.top_k)
    if args.json:
        print(json.dumps(explanation.to_dict()))
    else:
        print(format_explanation(explanation, decimals=args.decimals, max_dims=None if args.full else 8,
                                 weights=args.weights))
    return 0
