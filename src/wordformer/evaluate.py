"""Held-out evaluation of a trained model: loss, perplexity and next-token accuracy."""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch
import torch.nn.functional as F

from .checkpoint import LoadedModel
from .batches import IGNORE_INDEX, pad_pairs
from .data import check_same_corpus, load_pairs, load_texts, prepare_corpus, text_stream
from .errors import WordformerError, check_int

logger = logging.getLogger(__name__)


@torch.no_grad()
def _score(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    total_loss, total_correct, total = 0.0, 0, 0
    device = next(model.parameters()).device
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = model(x)  # (B, T, V)
        flat_y = y.reshape(-1)
        total_loss += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), flat_y,
                                            ignore_index=IGNORE_INDEX, reduction="sum"))
        keep = flat_y != IGNORE_INDEX
        total_correct += int((logits.reshape(-1, logits.size(-1)).argmax(-1)[keep] == flat_y[keep]).sum())
        total += int(keep.sum())
    if total == 0:
        raise WordformerError("no tokens to evaluate on")
    loss = total_loss / total
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "accuracy": total_correct / total, "tokens": total}


def _windows(ids: torch.Tensor, block: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows covering the whole stream: every target token scored once."""
    n = (len(ids) - 1) // block
    if n < 1:
        raise WordformerError(f"the evaluation text has {len(ids)} tokens, fewer than block_size + 1 = {block + 1}")
    starts = torch.arange(n) * block
    idx = starts[:, None] + torch.arange(block + 1)  # (N, T+1)
    seqs = ids[idx]
    return [(seqs[i : i + batch_size, :-1], seqs[i : i + batch_size, 1:]) for i in range(0, n, batch_size)]


def evaluate(loaded: LoadedModel, data: Optional[str] = None, *, batch_size: int = 32) -> dict[str, float]:
    """Score ``loaded`` on the validation split of its own corpus, or on all of ``data`` (held-out text).

    Returns loss (mean cross entropy per target token), perplexity, accuracy and the token count.
    """
    check_int("batch_size", batch_size)
    block = loaded.model_config.block_size
    cfg = loaded.data_config
    tok = loaded.tokenizer
    if data is None:
        corpus = prepare_corpus(cfg, block)
        check_same_corpus(corpus, loaded.info.get("corpus"), cfg, loaded.path or "this checkpoint", tok,
                          advice="restore that text, or score held-out text with --data FILE")
        if corpus.mode == "pairs":
            batches = [pad_pairs(corpus.val_pairs[i : i + batch_size], tok.pad_id)
                       for i in range(0, len(corpus.val_pairs), batch_size)]
        else:
            batches = _windows(torch.from_numpy(corpus.val_ids.astype("int64")), block, batch_size)
        return _score(loaded.model, batches)
    if cfg.pairs:
        pairs = load_pairs(data, encoding_errors=cfg.encoding_errors)
        seqs = [torch.tensor(tok.encode(p) + [tok.eos_id] + tok.encode(a) + [tok.eos_id])[-(block + 1):].numpy()
                for p, a in pairs]
        return _score(loaded.model, [pad_pairs(seqs[i : i + batch_size], tok.pad_id) for i in range(0, len(seqs), batch_size)])
    texts = load_texts(data, encoding_errors=cfg.encoding_errors)
    ids = torch.from_numpy(text_stream(tok, texts, cfg.eos_mode()).astype("int64"))
    if tok.unk_id is not None and len(ids) > 1:
        unknown = float((ids[1:] == tok.unk_id).float().mean())
        if unknown > 0.2:  # predicting <unk> is easy and says nothing about the text
            logger.warning("%.0f%% of the tokens of %s are <unk> (text the model's tokenizer never saw): loss and "
                           "accuracy say little about it", 100 * unknown, data)
    return _score(loaded.model, _windows(ids, block, batch_size))
