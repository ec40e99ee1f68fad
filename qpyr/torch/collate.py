"""Batching multi-level samples of variable size (what a VLM trainer wants).

Samples from :mod:`qpyr.torch` datasets are mappings ``{"name": str, "index": int, "levels":
{level: Tensor[C, h, w] or LevelPayload}}``. Images keep their own sizes (nothing is resized
unless asked), so a batch is one of:

- :func:`collate_list` — lists of tensors per level (NaViT-style packing, or models that take
  variable-size inputs); payloads stay payloads, for device-side decoding;
- :func:`collate_padded` — ``Tensor[N, C, H, W]`` per level, padded to the largest image of the
  batch (optionally to a multiple of a patch size), with a boolean ``mask`` of valid pixels and
  the ``sizes``;
- paired with :class:`qpyr.torch.samplers.AspectRatioBucketSampler` (re-exported here), a
  batch sampler that groups items of similar aspect ratio, so padding wastes little.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from qpyr.errors import InputError
from qpyr.read.payload import LevelPayload, PayloadBatch
from qpyr.torch.samplers import DEFAULT_ASPECT_RATIOS, AspectRatioBucketSampler

__all__ = ["collate_list", "collate_padded", "pad_batch", "pin", "AspectRatioBucketSampler", "DEFAULT_ASPECT_RATIOS"]


def pin(x: Any) -> Any:
    """``x`` with its tensors (in dicts, lists and tuples, and objects with a ``pin_memory``
    method such as :class:`~qpyr.read.payload.PayloadBatch`) in pinned memory, for
    ``non_blocking`` copies to the GPU; ``x`` itself where there is no CUDA device (pinning
    needs the CUDA runtime: torch raises without one)."""
    if not torch.cuda.is_available():
        return x
    if isinstance(x, torch.Tensor):
        return x if x.is_pinned() else x.pin_memory()
    if isinstance(x, Mapping):
        return {k: pin(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(pin(v) for v in x)
    if callable(getattr(x, "pin_memory", None)):
        return x.pin_memory()
    return x


def collate_list(samples: Sequence[Mapping[str, Any]], *, pin_memory: bool = False) -> dict[str, Any]:
    """``{"name": [str], "index": Tensor[N], "levels": {level: [Tensor[C, h_i, w_i]]}}``.

    ``pin_memory=True`` pins the tensors (see :func:`pin`; a no-op without CUDA). Best done
    in the main process: ``DataLoader(pin_memory=True)`` does it with these batches too.

    Payloads (``device_decode=True``) become a :class:`~qpyr.read.payload.PayloadBatch` per level
    (a sequence of :class:`~qpyr.read.payload.LevelPayload` whose equal-shaped samples travel as one
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
    return pin(out) if pin_memory else out


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


def collate_padded(samples: Sequence[Mapping[str, Any]], *, multiple: int = 1, value: float = 0.0,
                   pin_memory: bool = False) -> dict[str, Any]:
    """Like :func:`collate_list`, with each level padded by :func:`pad_batch`:
    ``{"name", "index", "levels": {l: Tensor[N, C, H, W]}, "mask": {l: bool [N, H, W]},
    "sizes": {l: int64 [N, 2]}}`` (levels keep the samples' dtype: float, or uint8 0..255).
    ``pin_memory=True`` pins them (no-op without CUDA). Use ``functools.partial`` to set
    ``multiple``/``value``/``pin_memory``."""
    out = collate_list(samples)
    out["mask"], out["sizes"] = {}, {}
    for k, ts in out["levels"].items():
        if not all(isinstance(t, torch.Tensor) for t in ts):
            raise InputError("collate_padded needs decoded tensors; with device_decode=True use collate_list and "
                             "qpyr.torch.decode_batch(batch, device, pad=True).")
        out["levels"][k], out["mask"][k], out["sizes"][k] = pad_batch(ts, multiple=multiple, value=value)
    return pin(out) if pin_memory else out
