"""SSIM kernel compiled with numba: Wang et al. 2004 on planes, one fixed order of operations.

Imported on first use by :mod:`qpyr.metrics` (this module imports numba at its top). The
conventions (window, constants, valid region, small-image fallback) are those documented in
:mod:`qpyr.metrics`; this module only evaluates them.

Determinism: every sum runs in one fixed order in a single thread (a separable "valid"
correlation, taps in ascending order, then the map summed row by row, left to right, in
float64), and the kernel is compiled without ``fastmath``, so LLVM may vectorise across
independent pixels but never reassociates a sum or fuses a multiply-add. The same inputs give
the same bits whatever the process, the torch/numba thread count or the SIMD width.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["ssim_plane_means"]


@njit(cache=True, nogil=True)
def _correlate_row(src, taps, dst):  # type: ignore[no-untyped-def]
    """Horizontal pass: ``dst[j] = sum_k taps[k] * src[j + k]``, ``k`` ascending.

    The 11-tap window is written out so that the sum stays in registers; the expression is
    evaluated left to right, so it gives the same bits as the generic loop.
    """
    n = dst.shape[0]
    if taps.shape[0] == 11:
        t0, t1, t2, t3, t4, t5 = taps[0], taps[1], taps[2], taps[3], taps[4], taps[5]
        t6, t7, t8, t9, t10 = taps[6], taps[7], taps[8], taps[9], taps[10]
        for j in range(n):
            dst[j] = (
                t0 * src[j] + t1 * src[j + 1] + t2 * src[j + 2] + t3 * src[j + 3]
                + t4 * src[j + 4] + t5 * src[j + 5] + t6 * src[j + 6] + t7 * src[j + 7]
                + t8 * src[j + 8] + t9 * src[j + 9] + t10 * src[j + 10]
            )
        return
    t = taps[0]
    for j in range(n):
        dst[j] = t * src[j]
    for k in range(1, taps.shape[0]):
        t = taps[k]
        for j in range(n):
            dst[j] += t * src[j + k]


@njit(cache=True, nogil=True)
def _correlate_ring(ring, first, taps, dst):  # type: ignore[no-untyped-def]
    """Vertical pass: ``dst[j] = sum_k taps[k] * ring[(first + k) % win, j]``, ``k`` ascending.

    Same written-out 11-tap form as :func:`_correlate_row`, same bits as the generic loop.
    """
    n = dst.shape[0]
    win = taps.shape[0]
    if win == 11:
        t0, t1, t2, t3, t4, t5 = taps[0], taps[1], taps[2], taps[3], taps[4], taps[5]
        t6, t7, t8, t9, t10 = taps[6], taps[7], taps[8], taps[9], taps[10]
        r0, r1, r2 = ring[first % 11], ring[(first + 1) % 11], ring[(first + 2) % 11]
        r3, r4, r5 = ring[(first + 3) % 11], ring[(first + 4) % 11], ring[(first + 5) % 11]
        r6, r7, r8 = ring[(first + 6) % 11], ring[(first + 7) % 11], ring[(first + 8) % 11]
        r9, r10 = ring[(first + 9) % 11], ring[(first + 10) % 11]
        for j in range(n):
            dst[j] = (
                t0 * r0[j] + t1 * r1[j] + t2 * r2[j] + t3 * r3[j] + t4 * r4[j] + t5 * r5[j]
                + t6 * r6[j] + t7 * r7[j] + t8 * r8[j] + t9 * r9[j] + t10 * r10[j]
            )
        return
    t = taps[0]
    r = ring[first % win]
    for j in range(n):
        dst[j] = t * r[j]
    for k in range(1, win):
        t = taps[k]
        r = ring[(first + k) % win]
        for j in range(n):
            dst[j] += t * r[j]


# error_model="numpy": a division by zero gives inf/nan instead of raising, so the SSIM formula
# loop has no per-element zero check and vectorises (~1.3x); its denominators are >= C1 * C2 > 0
# for finite inputs, so the values are the same bits.
@njit(cache=True, nogil=True, error_model="numpy")
def _ssim_sums(x, y, taps, consts, out):  # type: ignore[no-untyped-def]
    """Mean SSIM and mean contrast-structure term of each plane pair, over the valid region.

    ``x``, ``y``: C-contiguous ``[P, H, W]`` of one float dtype (float32 or float64, which is
    also the dtype of every filter sum and of the SSIM formula); ``taps``: the normalised 1-D
    window (``win <= min(H, W)`` taps) and ``consts``: ``(C1, C2, 2)``, both of that dtype;
    ``out``: float64 ``[P, 2]`` receiving ``(mean SSIM, mean cs)`` per plane.

    The five moment images (x, y, x*x, y*y, x*y) are filtered along rows into a ring of
    ``win`` rows, then down columns one output row at a time, so the working set is
    ``5 * win`` rows whatever the image height.
    """
    n_planes, h, w = x.shape
    win = taps.shape[0]
    hv = h - win + 1
    wv = w - win + 1
    c1 = consts[0]
    c2 = consts[1]
    two = consts[2]
    ring = np.empty((5, win, wv), dtype=x.dtype)
    prod = np.empty((3, w), dtype=x.dtype)
    mom = np.empty((5, wv), dtype=x.dtype)
    s_row = np.empty(wv, dtype=x.dtype)
    cs_row = np.empty(wv, dtype=x.dtype)
    for p in range(n_planes):
        s_sum = 0.0
        cs_sum = 0.0
        for r in range(h):
            # horizontal pass of input row r into ring slot r % win
            xr = x[p, r]
            yr = y[p, r]
            for j in range(w):
                prod[0, j] = xr[j] * xr[j]
                prod[1, j] = yr[j] * yr[j]
                prod[2, j] = xr[j] * yr[j]
            slot = r % win
            _correlate_row(xr, taps, ring[0, slot])
            _correlate_row(yr, taps, ring[1, slot])
            for m in range(3):
                _correlate_row(prod[m], taps, ring[2 + m, slot])
            i = r - win + 1
            if i < 0:
                continue
            # vertical pass: output row i from ring rows i .. i + win - 1, in that order
            for m in range(5):
                _correlate_ring(ring[m], i, taps, mom[m])
            mx, my, mxx, myy, mxy = mom[0], mom[1], mom[2], mom[3], mom[4]
            for j in range(wv):
                ux = mx[j]
                uy = my[j]
                vx = mxx[j] - ux * ux
                vy = myy[j] - uy * uy
                vxy = mxy[j] - ux * uy
                a1 = two * ux * uy + c1
                a2 = two * vxy + c2
                b1 = ux * ux + uy * uy + c1
                b2 = vx + vy + c2
                cs_row[j] = a2 / b2
                s_row[j] = (a1 * a2) / (b1 * b2)
            for j in range(wv):
                s_sum += s_row[j]
                cs_sum += cs_row[j]
        count = float(hv * wv)
        out[p, 0] = s_sum / count
        out[p, 1] = cs_sum / count


def ssim_plane_means(
    x: np.ndarray, y: np.ndarray, taps: list[float], c1: float, c2: float
) -> np.ndarray:
    """``float64 [P, 2]``: (mean SSIM, mean cs) of each plane pair of ``x``, ``y`` ``[P, H, W]``.

    ``x`` and ``y`` share one float dtype (float32 or float64), the precision of the filter sums
    and of the SSIM formula; ``taps`` is the window (``len(taps) <= min(H, W)``), ``c1``, ``c2``
    the stabilising constants. The means themselves are summed in float64.
    """
    dtype = x.dtype
    with np.errstate(over="ignore"):  # a huge data range overflows float32 C1, C2 to inf
        consts = np.asarray((c1, c2, 2.0), dtype=dtype)
    out = np.empty((x.shape[0], 2), dtype=np.float64)
    _ssim_sums(
        np.ascontiguousarray(x),
        np.ascontiguousarray(y, dtype=dtype),
        np.asarray(taps, dtype=dtype),
        consts,
        out,
    )
    return out
