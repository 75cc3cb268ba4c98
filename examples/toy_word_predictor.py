"""The chapter's toy word predictor, trained in seconds on a CPU.

Two training sequences, "what is statquest <eos> awesome <eos>" and "statquest is what <eos> awesome
<eos>", a decoder-only transformer with d_model = 2 (one head, one layer, no layer norm: with two
numbers per token a layer norm would flatten every vector to (1, -1) or (-1, 1)), and after training
both prompts continue with "awesome".

    python examples/toy_word_predictor.py [--steps 100] [--seed 42] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Sequence

PAIRS = "what is statquest\tawesome\nstatquest is what\tawesome\n"
PROMPTS = ("what is statquest", "statquest is what")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps (default: 100)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42, as in the chapter)")
    parser.add_argument("--out", default=None, help="folder for data and checkpoints (default: a temporary folder)")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")  # Lightning's hints about data loader workers
    from wordformer import DataConfig, ModelConfig, TrainConfig, load_checkpoint, train

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("wordformer").setLevel(logging.ERROR)  # "too few pairs to hold any out": expected here

    with tempfile.TemporaryDirectory(prefix="wordformer-toy-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        pairs = root / "statquest.tsv"
        pairs.write_text(PAIRS, encoding="utf-8")
        model = ModelConfig(d_model=2, num_heads=1, num_layers=1, block_size=8, norm="none")
        data = DataConfig(data=str(pairs), pairs=True, cache_dir=str(root / "cache"))
        settings = TrainConfig(max_steps=args.steps, batch_size=2, lr=0.1, min_lr=0.005, warmup_steps=5,
                               weight_decay=0.0, eval_interval=args.steps, progress=False, seed=args.seed)
        result = train(model, data, settings, root / "run", overwrite=True, logger=False)
        toy = load_checkpoint(result.best_checkpoint)

        print(f"trained {result.num_parameters} parameters for {result.steps} steps in {result.seconds:.1f} s; "
              f"validation loss {result.val_loss:.4f}")
        print("token embeddings (d_model = 2):")
        for i, vector in enumerate(toy.model.token_embedding.weight.tolist()):
            print(f"  {toy.tokenizer.id_to_token(i):<10} [{vector[0]: .4f}, {vector[1]: .4f}]")
        print("generation (the prompt ends with <eos>, which starts the answer):")
        for prompt in PROMPTS:
            print(f"  {prompt} <eos> -> {toy.generate(prompt, temperature=0)}")
        print("next-token probabilities after <eos>:")
        for prompt in PROMPTS:
            top = ", ".join(f"{tok} {p:.4f}" for tok, p in toy.predict_next(prompt, 3))
            print(f"  {prompt} <eos> -> {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
