"""Device-side decoding of a collated batch: :func:`decode_batch`.

With ``device_decode=True`` the datasets' workers return :class:`~qpyr.read.payload.LevelPayload`
s, :func:`qpyr.torch.collate.collate_list` packs each level into a
:class:`~qpyr.read.payload.PayloadBatch`, and :func:`decode_batch` turns the batch into tensors
on the training device in the main process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from qpyr.errors import InputError
from qpyr.read.payload import LevelPayload, PayloadBatch, check_dtype
from qpyr.torch.collate import pad_batch

__all__ = ["decode_batch"]


def decode_batch(batch: Mapping[str, Any], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 *, pad: bool = False, multiple: int = 1) -> dict[str, Any]:
    """Decode a batch of payloads (from ``device_decode=True`` + :func:`qpyr.collate.collate_list`)
    on ``device``.

    Each level becomes ``Tensor[N, C, H, W]`` of ``dtype`` on ``device`` (values in [0, 1] for
    uint8/uint16 sources, source units otherwise; ``torch.uint8``: 0..255, 8-bit sources only) when its images share a shape, else a list of
    ``Tensor[C, h_i, w_i]``; with ``pad=True`` it is always padded (see
    :func:`qpyr.collate.pad_batch`) and ``"mask"`` (bool ``[N, H, W]``) and ``"sizes"`` (int64
    ``[N, 2]``) are added.
    """
    check_dtype(dtype)
    out = dict(batch)
    out["levels"] = {}
    if pad:
        out["mask"], out["sizes"] = {}, {}
    for li, items in batch["levels"].items():
        if isinstance(items, torch.Tensor):
            out["levels"][li] = items.to(device=device, dtype=dtype, non_blocking=True)
            continue
        if not isinstance(items, PayloadBatch) and not all(isinstance(p, LevelPayload) for p in items):
            raise InputError("decode_batch expects LevelPayload lists (device_decode=True with collate_list).")
        batch_ = items if isinstance(items, PayloadBatch) else PayloadBatch(items)
        if pad:
            ts = batch_.decode(device, dtype)
            out["levels"][li], out["mask"][li], out["sizes"][li] = pad_batch(ts, multiple=multiple)
        else:
            out["levels"][li] = batch_.decode(device, dtype, stack=True)
    return out
