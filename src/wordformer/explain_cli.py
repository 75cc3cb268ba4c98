"""``wordformer explain``: print the chapter's seven steps of masked self-attention for one token."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_explain_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``explain`` on the main parser's subcommands."""
    p = subparsers.add_parser(
        "explain",
        help="the seven steps of masked self-attention for one token, with the model's own numbers",
        description="Print query, keys, scaled dot products, softmax weights, values, weighted values and their "
                    "sum for one token of the prompt, then the residual connection and the next-token "
                    "probabilities. Defaults: the last token, layer 0, head 0.",
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by `wordformer train` (required)")
    p.add_argument("--prompt", required=True, help="the input text (required)")
    p.add_argument("--layer", type=int, default=0,
                   help="decoder block, 0-based; negative counts from the end (default: 0)")
    p.add_argument("--head", type=int, default=0, help="attention head, 0-based (default: 0)")
    p.add_argument("--token", type=int, default=-1,
                   help="position of the token to explain, 0-based; negative counts from the end "
                        "(default: -1, the last)")
    p.add_argument("--append-eos", action=argparse.BooleanOptionalAction, default=None,
                   help="end the prompt with <eos> (default: on for models trained with --pairs)")
    p.add_argument("--top-k", type=int, default=5, help="how many next-token probabilities to show (default: 5)")
    p.add_argument("--decimals", type=int, default=4, help="decimals per number (default: 4)")
    p.add_argument("--full", action="store_true",
                   help="print every value of long vectors (default: the first and last few)")
    p.add_argument("--weights", action="store_true",
                   help="also print this head's query/key/value weights and biases, to check steps 1, 2 and 5 by hand")
    p.add_argument("--json", action="store_true", help="print every tensor as JSON instead")
    p.set_defaults(func=handle_explain)
    return p


def handle_explain(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .errors import WordformerError
    from .explain import explain_prompt, format_explanation

    if not 0 <= args.decimals <= 12:
        raise WordformerError(f"--decimals {args.decimals} must lie in 0..12")
    loaded = load_checkpoint(args.checkpoint)
    explanation = explain_prompt(loaded, args.prompt, args.layer, args.head, args.token,
                                 append_eos=args.append_eos, top_k=args.top_k)
    if args.json:
        print(json.dumps(explanation.to_dict()))
    else:
        print(format_explanation(explanation, decimals=args.decimals, max_dims=None if args.full else 8,
                                 weights=args.weights))
    return 0
