"""LOCO-I (JPEG-LS) median-predictor residual histogram, compiled with numba.

Imported on first use by :mod:`qpyr.policies.search` (this module imports numba at its top):
the order-0 entropy of these residuals is the quality search's cheap estimate of what a
lossless coding of a level would cost. Integer arithmetic only: the same bits everywhere.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["residual_histogram"]


@njit(cache=True, nogil=True)
def _histogram(x, hist):  # type: ignore[no-untyped-def]
    """Add the mod-256 MED residuals of every plane of ``x`` (``uint8 [C, h, w]``) to ``hist``.
    Neighbours outside the plane repeat the nearest edge sample (the first row predicts from
    the left, the first column from above)."""
    c, h, w = x.shape
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                v = np.int32(x[ch, i, j])
                a = np.int32(x[ch, i, j - 1]) if j > 0 else (np.int32(x[ch, i - 1, j]) if i > 0 else v)
                b = np.int32(x[ch, i - 1, j]) if i > 0 else a
                cc = np.int32(x[ch, i - 1, j - 1]) if (i > 0 and j > 0) else b
                lo, hi = (a, b) if a <= b else (b, a)
                if cc >= hi:
                    p = lo
                elif cc <= lo:
                    p = hi
                else:
                    p = a + b - cc
                hist[(v - p) & 255] += 1


def residual_histogram(codes: np.ndarray) -> np.ndarray:
    """``int64 [256]``: counts of the mod-256 median-predictor residuals of ``codes``
    (``uint8 [C, h, w]``), all planes together."""
    hist = np.zeros(256, np.int64)
    _histogram(np.ascontiguousarray(codes, dtype=np.uint8), hist)
    return hist
