"""uint8 ``[H, W, C]`` pixels to float32 ``[C, H, W]`` values in one pass, compiled with numba.

Imported on first use by :mod:`qpyr.codecs.quant`: a JPEG decoder hands back interleaved
``[H, W, C]`` memory, and a loader wants planar float32. torch's strided conversion of that
view costs about as much as the JPEG decode itself; this loop reads the pixels once, in memory
order, and writes the planes. Each value is ``float32(code) * scale``, one IEEE multiply: the
same bits as torch's ``x.to(float32).mul_(scale)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["planar_float32"]


@njit(cache=True, nogil=True)
def _planar(src, scale, dst):  # type: ignore[no-untyped-def]
    h, w, c = src.shape
    for i in range(h):  # one source row (in L1) gives one row of every plane
        row = src[i]
        for k in range(c):
            out = dst[k, i]
            for j in range(w):
                out[j] = np.float32(row[j, k]) * scale


def planar_float32(hwc: np.ndarray, scale: float) -> np.ndarray:
    """``float32 [C, H, W]`` of ``uint8 [H, W, C]`` (C-contiguous) pixels times ``scale``
    (rounded to float32 first)."""
    h, w, c = hwc.shape
    out = np.empty((c, h, w), np.float32)
    _planar(hwc, np.float32(scale), out)
    return out
