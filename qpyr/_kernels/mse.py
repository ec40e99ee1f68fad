"""Mean squared error of two images, compiled with numba: one pass, float64 sums.

Imported on first use by :func:`qpyr.metrics.psnr` for CPU tensors (this module imports numba
at its top). torch's float64 path converts both images, subtracts, squares and reduces: four
passes over memory; this loop reads each sample once. Per image the differences are taken in
float64 and summed row by row, left to right, so the result is the same in every process.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["mean_squared_error"]


@njit(cache=True, nogil=True)
def _mse(a, b, out):  # type: ignore[no-untyped-def]
    n, c, h, w = a.shape
    for i in range(n):
        total = 0.0
        for k in range(c):
            for y in range(h):
                row = 0.0
                ra = a[i, k, y]
                rb = b[i, k, y]
                for x in range(w):
                    d = np.float64(ra[x]) - np.float64(rb[x])
                    row += d * d
                total += row
        out[i] = total / (c * h * w)


def mean_squared_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``float64 [N]``: the MSE of each pair of ``[N, C, H, W]`` images (float32 or float64,
    same shape and dtype)."""
    out = np.empty(a.shape[0], dtype=np.float64)
    _mse(a, b, out)
    return out
