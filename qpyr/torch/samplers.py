"""Batch samplers over the catalog (no pixels read): :class:`AspectRatioBucketSampler`."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from qpyr.errors import InputError
from qpyr.torch._distributed import dist_rank_world

__all__ = ["AspectRatioBucketSampler", "DEFAULT_ASPECT_RATIOS"]

#: Aspect ratios (width / height) of :class:`AspectRatioBucketSampler`'s default buckets.
DEFAULT_ASPECT_RATIOS = (1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 2.0, 3.0, 4.0)


class AspectRatioBucketSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of items whose aspect ratios fall in the same bucket (a batch sampler).

    Args:
        sizes: ``[N, 2]`` ``(h, w)`` per item — e.g. ``dataset.sizes()`` or
            ``store.level_shapes(level)``; items with a non-positive size are skipped.
        batch_size: items per batch.
        ratios: bucket centres (width / height); an item goes to the nearest in log scale.
        shuffle: shuffle items within buckets and the order of batches (a pure function of
            ``seed`` and the epoch set by :meth:`set_epoch`).
        drop_last: drop each bucket's last incomplete batch (default: keep it).
        rank, world_size: split batches over distributed ranks (batch ``j`` goes to rank
            ``j % world_size``; every rank gets the same number of batches, the surplus batches
            of an epoch are dropped). Defaults from ``torch.distributed`` when initialized.

    ``DataLoader(dataset, batch_sampler=AspectRatioBucketSampler(...), collate_fn=...)``.
    """

    def __init__(self, sizes: Any, batch_size: int, *, ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 rank: int | None = None, world_size: int | None = None):
        a = np.asarray(sizes, dtype=np.int64)
        if a.ndim != 2 or a.shape[1] != 2:
            raise InputError(f"Expected sizes as [N, 2] (h, w). Got shape {a.shape}.")
        if batch_size < 1:
            raise InputError(f"Expected batch_size >= 1. Got {batch_size}.")
        if not ratios or any(r <= 0 for r in ratios):
            raise InputError(f"Expected positive aspect ratios. Got {ratios}.")
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch = 0
        valid = np.nonzero((a[:, 0] > 0) & (a[:, 1] > 0))[0]
        logr = np.log(a[valid, 1] / a[valid, 0])
        centres = np.log(np.asarray(ratios, dtype=np.float64))
        which = np.abs(logr[:, None] - centres[None, :]).argmin(axis=1)
        self.ratios = tuple(float(r) for r in ratios)
        self.buckets = [valid[which == j] for j in range(len(ratios))]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches: list[np.ndarray] = []
        for members in self.buckets:
            m = rng.permutation(members) if self.shuffle else members
            for s in range(0, len(m), self.batch_size):
                b = m[s:s + self.batch_size]
                if len(b) == self.batch_size or (not self.drop_last and len(b)):
                    batches.append(b)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        n = len(batches) // self.world_size * self.world_size if self.world_size > 1 else len(batches)
        return batches[self.rank:n:self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._batches():
            yield [int(i) for i in b]

    def __len__(self) -> int:
        n = 0
        for members in self.buckets:
            n += len(members) // self.batch_size if self.drop_last else math.ceil(len(members) / self.batch_size)
        return n // self.world_size
