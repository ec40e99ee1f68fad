"""Batching multi-level samples of variable size (what a VLM trainer wants).

Samples from :mod:`qpyr.torch` datasets are mappings ``{"name": str, "index": int, "levels":
{level: Tensor[C, h, w] or LevelPayload}}``. Images keep their own sizes (nothing is resized
unless asked), so a batch is one of:

- :func:`collate_list` — lists of tensors per level (NaViT-style packing, or models that take
  variable-size inputs); payloads stay payloads, for device-side decoding;
- :func:`collate_padded` — ``Tensor[N, C, H, W]`` per level, padded to the largest image of the
  batch (optionally to a multiple of a patch size), with a boolean ``mask`` of valid pixels and
  the ``sizes``;
- :class:`AspectRatioBucketSampler` — a batch sampler that groups items of similar aspect ratio
  (from the catalog, without reading pixels), so padding wastes little; pair it with either
  collate function.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from qpyr.errors import InputError
from qpyr.read.payload import LevelPayload, PayloadBatch

__all__ = ["collate_list", "collate_padded", "pad_batch", "AspectRatioBucketSampler", "DEFAULT_ASPECT_RATIOS"]

#: Aspect ratios (width / height) of :class:`AspectRatioBucketSampler`'s default buckets.
DEFAULT_ASPECT_RATIOS = (1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 2.0, 3.0, 4.0)


def collate_list(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"name": [str], "index": Tensor[N], "levels": {level: [Tensor[C, h_i, w_i]]}}``.

    Payloads (``device_decode=True``) become a :class:`~qpyr.payload.PayloadBatch` per level
    (a sequence of :class:`~qpyr.payload.LevelPayload` whose equal-shaped samples travel as one
    tensor); decode the batch with :func:`qpyr.torch.decode_batch` on the training device.
    """
    if not samples:
        raise InputError("Expected at least one sample to collate.")
    keys = list(samples[0]["levels"])
    levels: dict[int, Any] = {k: [] for k in keys}  # lists, or a PayloadBatch per level
    for s in samples:
        if list(s["levels"]) != keys:
            raise InputError(f"Samples of one batch must hold the same levels. Got {keys} and {list(s['levels'])}; "
                             "use levels=[...] rather than target_size, or batch by level.")
        for k in keys:
            levels[k].append(s["levels"][k])
    for k, v in levels.items():
        if v and all(isinstance(p, LevelPayload) for p in v):
            levels[k] = PayloadBatch(v)  # one shared-memory block per batch, not one per image
    out: dict[str, Any] = {"name": [s["name"] for s in samples], "levels": levels}
    if "index" in samples[0]:
        out["index"] = torch.tensor([int(s["index"]) for s in samples], dtype=torch.int64)
    return out


def pad_batch(tensors: Sequence[torch.Tensor], *, multiple: int = 1, value: float = 0.0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad ``[C, h_i, w_i]`` tensors into ``Tensor[N, C, H, W]`` (top-left aligned).

    Returns ``(batch, mask, sizes)``: ``mask`` is ``bool [N, H, W]`` (True on real pixels),
    ``sizes`` is ``int64 [N, 2]`` of ``(h_i, w_i)``. ``H``/``W`` are the batch maxima rounded up
    to ``multiple`` (e.g. a ViT patch size).
    """
    if not tensors:
        raise InputError("Expected at least one tensor to pad.")
    if multiple < 1:
        raise InputError(f"Expected multiple >= 1. Got {multiple}.")
    c = tensors[0].shape[0]
    if any(t.dim() != 3 or t.shape[0] != c for t in tensors):
        raise InputError(f"Expected [C, h, w] tensors with one channel count. Got {[tuple(t.shape) for t in tensors]}.")
    hmax = -(-max(t.shape[1] for t in tensors) // multiple) * multiple
    wmax = -(-max(t.shape[2] for t in tensors) // multiple) * multiple
    ref = tensors[0]
    batch = torch.full((len(tensors), c, hmax, wmax), value, dtype=ref.dtype, device=ref.device)
    mask = torch.zeros((len(tensors), hmax, wmax), dtype=torch.bool, device=ref.device)
    sizes = torch.empty((len(tensors), 2), dtype=torch.int64)
    for i, t in enumerate(tensors):
        h, w = t.shape[1], t.shape[2]
        batch[i, :, :h, :w] = t
        mask[i, :h, :w] = True
        sizes[i, 0], sizes[i, 1] = h, w
    return batch, mask, sizes


def collate_padded(samples: Sequence[Mapping[str, Any]], *, multiple: int = 1, value: float = 0.0) -> dict[str, Any]:
    """Like :func:`collate_list`, with each level padded by :func:`pad_batch`:
    ``{"name", "index", "levels": {l: Tensor[N, C, H, W]}, "mask": {l: bool [N, H, W]},
    "sizes": {l: int64 [N, 2]}}``. Use ``functools.partial`` to set ``multiple``/``value``."""
    out = collate_list(samples)
    out["mask"], out["sizes"] = {}, {}
    for k, ts in out["levels"].items():
        if not all(isinstance(t, torch.Tensor) for t in ts):
            raise InputError("collate_padded needs decoded tensors; with device_decode=True use collate_list and "
                             "qpyr.torch.decode_batch(batch, device, pad=True).")
        out["levels"][k], out["mask"][k], out["sizes"][k] = pad_batch(ts, multiple=multiple, value=value)
    return out


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
        from qpyr.torch._distributed import dist_rank_world

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
