"""Batches of token ids: random training windows or pairs, fixed validation batches.

Every training batch is a pure function of ``(seed, batch number)``: batch ``n`` draws from its own
``torch.Generator`` seeded with a hash of both, so a run resumed at batch ``n`` sees exactly the batches
an uninterrupted run would have seen. With several processes, batch ``n`` is drawn once for all of them
(``world x batch_size`` rows) and each rank takes its own share: no window is drawn twice for one step, and the
run trains like one process with the whole global batch.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from .distributed import rank_share

IGNORE_INDEX = -100  # targets the loss skips (padding)
Batch = tuple[torch.Tensor, torch.Tensor]


def batch_seed(seed: int, n: int) -> int:
    """A 63-bit seed for batch ``n``: independent streams, no state carried between batches."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{n}".encode()).digest()[:8], "little") >> 1


def as_tensor(ids: np.ndarray) -> torch.Tensor:
    """A zero-copy torch view of (possibly read-only, memory-mapped) ids; they are never written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": we only read
        return torch.from_numpy(np.asarray(ids))


def text_windows(ids: torch.Tensor, offsets: torch.Tensor, block_size: int) -> Batch:
    """Windows starting at ``offsets`` (B,) -> x, y (B, T) int64, y being x shifted one token left."""
    idx = offsets[:, None] + torch.arange(block_size + 1)  # (B, T+1)
    w = ids[idx].long()  # (B, T+1)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def pad_pairs(seqs: Sequence[np.ndarray], pad_id: int) -> Batch:
    """Right-pad to the longest sequence: x (B, L-1) padded with ``pad_id``, y (B, L-1) with -100."""
    length = max(len(s) for s in seqs) - 1
    x = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    y = torch.full((len(seqs), length), IGNORE_INDEX, dtype=torch.long)
    for i, seq in enumerate(seqs):
        t = torch.from_numpy(np.asarray(seq, dtype=np.int64))  # (L_i,)
        x[i, : len(t) - 1], y[i, : len(t) - 1] = t[:-1], t[1:]
    return x, y


class SeededBatches(IterableDataset):
    """An endless stream of whole batches; batch ``n`` depends only on ``(seed, n)``."""

    def __init__(self, batch_size: int, seed: int) -> None:
        self.batch_size, self.seed, self.start_batch = batch_size, seed, 0
        self.rank, self.world = 0, 1

    def set_ranks(self, rank: int, world: int) -> None:
        """Draw for ``world`` processes and keep rank ``rank``'s share of each global batch."""
        self.rank, self.world = rank, world

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    def batch(self, n: int) -> Batch:
        raise NotImplementedError

    def generator(self, n: int) -> torch.Generator:
        return torch.Generator().manual_seed(batch_seed(self.seed, n))

    def __iter__(self) -> Iterator[Batch]:
        n = self.start_batch
        while True:
            yield self.batch(n)
            n += 1


class EpochOrder:
    """Epoch-style sampling: every item once per epoch, in an order shuffled per epoch.

    Batch ``n`` belongs to epoch ``n // per_epoch``, whose permutation is seeded by ``(seed, epoch)``, so
    batches stay a pure function of ``(seed, n)``; the last partial batch of an epoch is dropped.
    """

    def __init__(self, count: int, batch_size: int, seed: int) -> None:
        self.count, self.batch_size, self.seed = count, batch_size, seed
        self.per_epoch = max(1, count // batch_size)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def items(self, n: int) -> torch.Tensor:
        epoch, j = divmod(n, self.per_epoch)
        if epoch != self._epoch:  # one permutation per epoch, memoised
            gen = torch.Generator().manual_seed(batch_seed(self.seed, -1 - epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.count, generator=gen)
        picks = self._perm[j * self.batch_size : (j + 1) * self.batch_size]  # (B,)
        if len(picks) < self.batch_size:  # fewer items than one batch: wrap around
            picks = self._perm.repeat(-(-self.batch_size // self.count))[: self.batch_size]
        return picks


class TextBatches(SeededBatches):
    """Windows of the training stream, gathered with one tensor index.

    ``sampling="random"``: windows at random offsets, nanoGPT-style. ``sampling="epoch"``: the stream cut
    into non-overlapping windows, each seen once per epoch in shuffled order.
    """

    def __init__(self, ids: np.ndarray, block_size: int, batch_size: int, seed: int, sampling: str = "random") -> None:
        super().__init__(batch_size, seed)
        self.ids, self.block_size, self.sampling = as_tensor(ids), block_size, sampling
        self.windows = (len(self.ids) - 1) // block_size
        self.order = EpochOrder(self.windows, batch_size, seed) if sampling == "epoch" else None

    def set_ranks(self, rank: int, world: int) -> None:
        super().set_ranks(rank, world)
        if self.sampling == "epoch":
            self.order = EpochOrder(self.windows, self.global_batch, self.seed)

    def batch(self, n: int) -> Batch:
        if self.order is not None:
            offsets = self.order.items(n) * self.block_size  # (W*B,)
        else:
            high = len(self.ids) - self.block_size  # last valid window start + 1
            offsets = torch.randint(high, (self.global_batch,), generator=self.generator(n))  # (W*B,)
        return text_windows(self.ids, rank_share(offsets, self.rank, self.world), self.block_size)  # (B, T) each


class PairBatches(SeededBatches):
    """Pairs padded to the longest in the batch: drawn with replacement, or once per epoch (``"epoch"``)."""

    def __init__(self, pairs: list[np.ndarray], pad_id: int, batch_size: int, seed: int, sampling: str = "random") -> None:
        super().__init__(batch_size, seed)
        self.pairs, self.pad_id, self.sampling = pairs, pad_id, sampling
        self.order = EpochOrder(len(pairs), batch_size, seed) if sampling == "epoch" else None

    def set_ranks(self, rank: int, world: int) -> None:
        super().set_ranks(rank, world)
        if self.sampling == "epoch":
            self.order = EpochOrder(len(self.pairs), self.global_batch, self.seed)

    def batch(self, n: int) -> Batch:
        if self.order is not None:
            picks = self.order.items(n)  # (W*B,)
        else:
            picks = torch.randint(len(self.pairs), (self.global_batch,), generator=self.generator(n))  # (W*B,)
        return pad_pairs([self.pairs[i] for i in rank_share(picks, self.rank, self.world).tolist()], self.pad_id)


class FixedBatches(Dataset):
    """A fixed list of validation batches, built on demand: the same every time it is read."""

    def __init__(self, count: int, make: Callable[[int], Batch]) -> None:
        self.count, self.make = count, make

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> Batch:
        if not 0 <= i < self.count:
            raise IndexError(i)
        return self.make(i)
