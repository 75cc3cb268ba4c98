"""Held-out evaluation of a trained model: loss, perplexity and next-token accuracy."""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import LoadedModel
from .batches import IGNORE_INDEX, pad_pairs
from .data import check_same_corpus, load_pairs, prepare_corpus
from .errors import WordformerError, check_int
from .files import corpus_cache_dir
from .streaming import Progress, scan
from .tokenizing import stream_ids

logger = logging.getLogger(__name__)


@torch.no_grad()
def _score(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
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


def _windows(ids: np.ndarray, block: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows covering the whole stream: every target token scored once. Built a batch at a
    time from the (memory-mapped) ids, so a long text is never held whole."""
    n = (len(ids) - 1) // block
    if n < 1:
        raise WordformerError(f"the evaluation text has {len(ids)} tokens, fewer than block_size + 1 = {block + 1}")

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        offsets = np.arange(block + 1)
        for i in range(0, n, batch_size):
            starts = np.arange(i, min(n, i + batch_size)) * block  # (B,)
            seqs = torch.from_numpy(np.asarray(ids[starts[:, None] + offsets], dtype=np.int64))  # (B, T+1)
            yield seqs[:, :-1], seqs[:, 1:]

    return batches()


def _unknown_share(ids: np.ndarray, unk: int) -> float:
    """The share of ``<unk>`` among the target tokens, counted a slice at a time."""
    step, hits = 1 << 24, 0
    for start in range(1, len(ids), step):
        hits += int(np.count_nonzero(np.asarray(ids[start:start + step]) == unk))
    return hits / max(1, len(ids) - 1)


def evaluate(loaded: LoadedModel, data: Optional[str] = None, *, batch_size: int = 32,
             progress: Optional[Progress] = None) -> dict[str, float]:
    """Score ``loaded`` on the validation split of its own corpus, or on all of ``data`` (held-out text).

    Returns loss (mean cross entropy per target token), perplexity, accuracy and the token count. ``data`` is
    streamed: tokenized in pieces into a temporary file beside the corpus cache, then scored batch by batch.
    """
    check_int("batch_size", batch_size)
    block = loaded.model_config.block_size
    cfg = loaded.data_config
    tok = loaded.tokenizer
    if data is None:
        corpus = prepare_corpus(cfg, block, progress=progress)
        check_same_corpus(corpus, loaded.info.get("corpus"), cfg, loaded.path or "this checkpoint", tok,
                          advice="restore that text, or score held-out text with --data FILE")
        if corpus.mode == "pairs":
            batches = [pad_pairs(corpus.val_pairs[i : i + batch_size], tok.pad_id)
                       for i in range(0, len(corpus.val_pairs), batch_size)]
        else:
            batches = _windows(corpus.val_ids, block, batch_size)
        return _score(loaded.model, batches)
    if cfg.pairs:
        pairs = load_pairs(data, encoding_errors=cfg.encoding_errors)
        seqs = [torch.tensor(tok.encode(p) + [tok.eos_id] + tok.encode(a) + [tok.eos_id])[-(block + 1):].numpy()
                for p, a in pairs]
        return _score(loaded.model, [pad_pairs(seqs[i : i + batch_size], tok.pad_id) for i in range(0, len(seqs), batch_size)])
    sources, _ = scan(data, None, b"", errors=cfg.encoding_errors, progress=progress)
    root = corpus_cache_dir(cfg.cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        where: Optional[str] = str(root)
    except OSError:
        where = None
    with tempfile.TemporaryDirectory(prefix="wordformer-eval-", dir=where, ignore_cleanup_errors=True) as tmp:
        ids = stream_ids(tok, sources, cfg.eos_mode(), Path(tmp) / "ids.bin", errors=cfg.encoding_errors,
                         workers=cfg.workers, progress=progress)
        if tok.unk_id is not None and len(ids) > 1:
            unknown = _unknown_share(ids, tok.unk_id)
            if unknown > 0.2:  # predicting <unk> is easy and says nothing about the text
                logger.warning("%.0f%% of the tokens of %s are <unk> (text the model's tokenizer never saw): loss "
                               "and accuracy say little about it", 100 * unknown, data)
        metrics = _score(loaded.model, _windows(ids, block, batch_size))
        del ids
    return metrics
