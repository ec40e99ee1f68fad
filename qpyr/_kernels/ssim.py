"""SSIM kernel compiled with numba: Wang et al. 2004 on planes, one fixed order of operations.

Imported on first use by :mod:`qpyr.metrics` (this module imports numba at its top). The
conventions (window, constants, valid region, small-image fallback) are those documented in
:mod:`qpyr.metrics`; this module only evaluates them.

SSIM needs the local means ``ux``, ``uy``, the sum of variances ``vx + vy`` and the covariance
``vxy``, so four moment images are filtered, of the samples shifted by ``m`` (half the data
range: variances do not depend on it, and float32 loses less to cancellation): ``x' = x - m``,
``y' = y - m``, ``q = x'^2 + y'^2`` and ``p = x' y'``, with ``ux = E[x'] + m``, ``vx + vy =
E[q] - (E[x']^2 + E[y']^2)``, ``vxy = E[p] - E[x'] E[y']``. Per plane:

1. the four moments of each input row are computed once, into a ring of ``win + 3`` rows;
2. vertical pass, four output rows ``i .. i + 3`` per sweep: each moment summed down input
   rows ``i .. i + win + 2``, whole rows at a time (vectorised across columns, each input row
   loaded once for the four), into row buffers; leftover rows one at a time, same sums;
3. per output row, the horizontal pass on its four row buffers and, in the same loop, the
   SSIM formula, into one row of the SSIM and contrast-structure maps;
4. each map row is added to float64 column sums; at the end of the plane the columns are
   summed with four interleaved accumulators (``j % 4``) combined as ``(a0 + a1) + (a2 +
   a3)``, then the tail, left to right.

The window is symmetric (``taps[k] == taps[win - 1 - k]``, exactly), so both passes add the
two samples that share a tap before multiplying: ``t[0] * (a[0] + a[win-1]) + t[1] * (a[1] +
a[win-2]) + ... + t[r] * a[r]``, left to right, ``r = (win - 1) // 2``. The working set is
``4 * (win + 3)`` rows of the input width plus a few row buffers (about 115 kB for a 512 px
float32 row: L2-resident), whatever the image height. Windows smaller than 11 (images under
11 px) take a slower generic path with the same sums.

Determinism: every sum is written out in one fixed order (blocking rows changes no sum) and
runs in a single thread; the kernel is compiled without ``fastmath``, so LLVM may vectorise
across independent pixels but never reassociates a sum or fuses a multiply-add. The same
inputs give the same bits whatever the process, the torch/numba thread count or the SIMD
width.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from numba import njit

__all__ = ["ssim_plane_means"]

#: Output rows per vertical sweep of the 11-tap path (:func:`_vertical11x4`).
_BLOCK = 4


@njit(cache=True, nogil=True)
def _products(xr, yr, m, ring, slot):  # type: ignore[no-untyped-def]
    """The four moment rows of one input row into ``ring[0..3, slot]``: ``x' = x - m``, ``y' =
    y - m``, ``q = x'^2 + y'^2``, ``p = x' y'``."""
    rx, ry, rq, rp = ring[0, slot], ring[1, slot], ring[2, slot], ring[3, slot]
    for j in range(xr.shape[0]):
        a = xr[j] - m
        b = yr[j] - m
        rx[j] = a
        ry[j] = b
        rq[j] = a * a + b * b
        rp[j] = a * b


@njit(cache=True, nogil=True, error_model="numpy")
def _ssim_pixel(dx, dy, eq, ep, c1, c2, two, m):  # type: ignore[no-untyped-def]
    """(SSIM, cs) of one pixel from its filtered moments ``E[x']``, ``E[y']``, ``E[q]``, ``E[p]``.

    ``dx``, ``dy``: the means of the shifted samples, ``ux = dx + m``, ``uy = dy + m``;
    ``vx + vy = E[q] - (dx^2 + dy^2)``, ``vxy = E[p] - dx dy``; ``cs = (2 vxy + C2) / (vx + vy + C2)``, ``SSIM =
    (2 ux uy + C1) (2 vxy + C2) / ((ux^2 + uy^2 + C1) (vx + vy + C2))``. Identical inputs give
    numerators equal to denominators, bit for bit, so exactly 1. error_model="numpy": a zero
    denominator gives inf/nan instead of raising (it is >= C1 * C2 > 0 for finite inputs), so
    there is no per-pixel check and the loops around it vectorise.
    """
    ux = dx + m
    uy = dy + m
    dxy = dx * dy
    a1 = two * (ux * uy) + c1
    a2 = two * (ep - dxy) + c2
    b1 = (ux * ux + uy * uy) + c1
    b2 = (eq - (dx * dx + dy * dy)) + c2
    return (a1 * a2) / (b1 * b2), a2 / b2


@njit(cache=True, nogil=True)
def _vertical11(rows, first, taps, dst):  # type: ignore[no-untyped-def]
    """Vertical pass of one moment: ``dst[j] = sum_k t[k] * (f(k, j) + f(10 - k, j)) + t[5] *
    f(5, j)``, ``k`` ascending from 0 to 4, ``f(k, j) = rows[(first + k) % len(rows), j]``.

    ``rows`` is a plane (``x`` or ``y``, ``[H, W]``: rows ``first .. first + 10``) or a ring
    of 11 rows (``q`` or ``p``: input row ``r`` in slot ``r % 11``). One moment per sweep keeps
    the loop to 11 loads and one store, which LLVM vectorises.
    """
    t0, t1, t2, t3, t4, t5 = taps[0], taps[1], taps[2], taps[3], taps[4], taps[5]
    n = rows.shape[0]
    r0, r1, r2 = rows[first % n], rows[(first + 1) % n], rows[(first + 2) % n]
    r3, r4, r5 = rows[(first + 3) % n], rows[(first + 4) % n], rows[(first + 5) % n]
    r6, r7, r8 = rows[(first + 6) % n], rows[(first + 7) % n], rows[(first + 8) % n]
    r9, r10 = rows[(first + 9) % n], rows[(first + 10) % n]
    for j in range(dst.shape[0]):
        dst[j] = (
            t0 * (r0[j] + r10[j]) + t1 * (r1[j] + r9[j]) + t2 * (r2[j] + r8[j])
            + t3 * (r3[j] + r7[j]) + t4 * (r4[j] + r6[j]) + t5 * r5[j]
        )


@njit(cache=True, nogil=True)
def _vertical11x4(rows, first, taps, vert, m):  # type: ignore[no-untyped-def]
    """:func:`_vertical11` for four consecutive output rows ``first .. first + 3`` at once, into
    ``vert[0..3, m]``: the same folded sum per row (same bits), but each of the 14 input rows is
    loaded once for the four, a quarter of the memory traffic."""
    t0, t1, t2, t3, t4, t5 = taps[0], taps[1], taps[2], taps[3], taps[4], taps[5]
    n = rows.shape[0]
    r0, r1, r2 = rows[first % n], rows[(first + 1) % n], rows[(first + 2) % n]
    r3, r4, r5 = rows[(first + 3) % n], rows[(first + 4) % n], rows[(first + 5) % n]
    r6, r7, r8 = rows[(first + 6) % n], rows[(first + 7) % n], rows[(first + 8) % n]
    r9, r10, r11 = rows[(first + 9) % n], rows[(first + 10) % n], rows[(first + 11) % n]
    r12, r13 = rows[(first + 12) % n], rows[(first + 13) % n]
    d0, d1, d2, d3 = vert[0, m], vert[1, m], vert[2, m], vert[3, m]
    for j in range(d0.shape[0]):
        a0, a1, a2, a3, a4, a5, a6 = r0[j], r1[j], r2[j], r3[j], r4[j], r5[j], r6[j]
        a7, a8, a9, a10, a11, a12, a13 = r7[j], r8[j], r9[j], r10[j], r11[j], r12[j], r13[j]
        d0[j] = (
            t0 * (a0 + a10) + t1 * (a1 + a9) + t2 * (a2 + a8) + t3 * (a3 + a7)
            + t4 * (a4 + a6) + t5 * a5
        )
        d1[j] = (
            t0 * (a1 + a11) + t1 * (a2 + a10) + t2 * (a3 + a9) + t3 * (a4 + a8)
            + t4 * (a5 + a7) + t5 * a6
        )
        d2[j] = (
            t0 * (a2 + a12) + t1 * (a3 + a11) + t2 * (a4 + a10) + t3 * (a5 + a9)
            + t4 * (a6 + a8) + t5 * a7
        )
        d3[j] = (
            t0 * (a3 + a13) + t1 * (a4 + a12) + t2 * (a5 + a11) + t3 * (a6 + a10)
            + t4 * (a7 + a9) + t5 * a8
        )


@njit(cache=True, nogil=True)
def _horizontal11_ssim(vert, taps, consts, s_row, cs_row):  # type: ignore[no-untyped-def]
    """Horizontal pass of the four row buffers ``vert[m, j .. j + 10]`` (folded as in
    :func:`_vertical11`) and the SSIM formula, into ``s_row[j]``, ``cs_row[j]``."""
    t0, t1, t2, t3, t4, t5 = taps[0], taps[1], taps[2], taps[3], taps[4], taps[5]
    c1, c2, two, m = consts[0], consts[1], consts[2], consts[3]
    vx, vy, vq, vp = vert[0], vert[1], vert[2], vert[3]
    for j in range(s_row.shape[0]):
        ux = (
            t0 * (vx[j] + vx[j + 10]) + t1 * (vx[j + 1] + vx[j + 9])
            + t2 * (vx[j + 2] + vx[j + 8]) + t3 * (vx[j + 3] + vx[j + 7])
            + t4 * (vx[j + 4] + vx[j + 6]) + t5 * vx[j + 5]
        )
        uy = (
            t0 * (vy[j] + vy[j + 10]) + t1 * (vy[j + 1] + vy[j + 9])
            + t2 * (vy[j + 2] + vy[j + 8]) + t3 * (vy[j + 3] + vy[j + 7])
            + t4 * (vy[j + 4] + vy[j + 6]) + t5 * vy[j + 5]
        )
        eq = (
            t0 * (vq[j] + vq[j + 10]) + t1 * (vq[j + 1] + vq[j + 9])
            + t2 * (vq[j + 2] + vq[j + 8]) + t3 * (vq[j + 3] + vq[j + 7])
            + t4 * (vq[j + 4] + vq[j + 6]) + t5 * vq[j + 5]
        )
        ep = (
            t0 * (vp[j] + vp[j + 10]) + t1 * (vp[j + 1] + vp[j + 9])
            + t2 * (vp[j + 2] + vp[j + 8]) + t3 * (vp[j + 3] + vp[j + 7])
            + t4 * (vp[j + 4] + vp[j + 6]) + t5 * vp[j + 5]
        )
        s_row[j], cs_row[j] = _ssim_pixel(ux, uy, eq, ep, c1, c2, two, m)


@njit(cache=True, nogil=True)
def _folded(src, taps, dst):  # type: ignore[no-untyped-def]
    """Any odd window, 1-D: ``dst[j] = t[0] * (src[j] + src[j+win-1]) + ... + t[r] *
    src[j+r]``, one tap (pair) per sweep, left to right."""
    win = taps.shape[0]
    rad = (win - 1) // 2
    n = dst.shape[0]
    for k in range(rad):
        t = taps[k]
        if k == 0:
            for j in range(n):
                dst[j] = t * (src[j] + src[j + win - 1])
        else:
            for j in range(n):
                dst[j] = dst[j] + t * (src[j + k] + src[j + win - 1 - k])
    t = taps[rad]
    if rad == 0:
        for j in range(n):
            dst[j] = t * src[j]
    else:
        for j in range(n):
            dst[j] = dst[j] + t * src[j + rad]


@njit(cache=True, nogil=True)
def _row_small(ring, i, taps, consts, col, vert, mom, s_row, cs_row):  # type: ignore[no-untyped-def]
    """One output row for a window ``win < 11`` (small images): the same folded sums as the
    11-tap path, one tap (pair) per sweep.

    ``ring``: ``[4, span, W]``, the moments of input row ``r`` in slot ``r % span``; ``col``:
    ``[4, win]`` scratch for one column's samples; ``vert``: ``[4, W]``; ``mom``: ``[4, Wv]``.
    """
    win = taps.shape[0]
    span = ring.shape[1]
    for j in range(ring.shape[2]):
        for k in range(win):
            for f in range(4):
                col[f, k] = ring[f, (i + k) % span, j]
        for f in range(4):
            _folded(col[f], taps, vert[f, j : j + 1])
    for f in range(4):
        _folded(vert[f], taps, mom[f])
    c1, c2, two, m = consts[0], consts[1], consts[2], consts[3]
    for j in range(s_row.shape[0]):
        s_row[j], cs_row[j] = _ssim_pixel(
            mom[0, j], mom[1, j], mom[2, j], mom[3, j], c1, c2, two, m
        )


@njit(cache=True, nogil=True)
def _accumulate(s_row, cs_row, s_col, cs_col):  # type: ignore[no-untyped-def]
    """Add one map row to the float64 column sums: ``s_col[j] += s_row[j]``, same for cs."""
    for j in range(s_row.shape[0]):
        s_col[j] += np.float64(s_row[j])
        cs_col[j] += np.float64(cs_row[j])


@njit(cache=True, nogil=True)
def _row_sum(v):  # type: ignore[no-untyped-def]
    """float64 sum of a row: four accumulators over ``j % 4``, then ``(a0 + a1) + (a2 + a3)``
    plus the tail, left to right."""
    n = v.shape[0]
    n4 = n - n % 4
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    for j in range(0, n4, 4):
        a0 += np.float64(v[j])
        a1 += np.float64(v[j + 1])
        a2 += np.float64(v[j + 2])
        a3 += np.float64(v[j + 3])
    total = (a0 + a1) + (a2 + a3)
    for j in range(n4, n):
        total += np.float64(v[j])
    return total


@njit(cache=True, nogil=True)
def _ssim_sums(x, y, taps, consts, out):  # type: ignore[no-untyped-def]
    """Mean SSIM and mean contrast-structure term of each plane pair, over the valid region.

    ``x``, ``y``: C-contiguous ``[P, H, W]`` of one float dtype (float32 or float64, which is
    also the dtype of every filter sum and of the SSIM formula); ``taps``: the normalised,
    symmetric 1-D window (``win <= min(H, W)`` taps, ``win`` odd) and ``consts``: ``(C1, C2,
    2, m)``, both of that dtype; ``out``: float64 ``[P, 2]`` receiving ``(mean SSIM, mean cs)``
    per plane. The order of operations is described in the module docstring.
    """
    n_planes, h, w = x.shape
    win = taps.shape[0]
    shift = consts[3]
    hv = h - win + 1
    wv = w - win + 1
    span = win + _BLOCK - 1  # input rows behind one block of output rows
    ring = np.empty((4, span, w), dtype=x.dtype)
    vert = np.empty((_BLOCK, 4, w), dtype=x.dtype)
    mom = np.empty((4, wv), dtype=x.dtype)
    col = np.empty((4, win), dtype=x.dtype)
    s_row = np.empty(wv, dtype=x.dtype)
    cs_row = np.empty(wv, dtype=x.dtype)
    s_col = np.empty(wv, dtype=np.float64)
    cs_col = np.empty(wv, dtype=np.float64)
    for pl in range(n_planes):
        xp = x[pl]
        yp = y[pl]
        for r in range(win - 1):
            _products(xp[r], yp[r], shift, ring, r % span)
        s_col[:] = 0.0
        cs_col[:] = 0.0
        for i0 in range(0, hv, _BLOCK):
            nb = min(_BLOCK, hv - i0)
            for r in range(i0 + win - 1, i0 + win - 1 + nb):
                _products(xp[r], yp[r], shift, ring, r % span)
            if win == 11 and nb == _BLOCK:
                _vertical11x4(ring[0], i0, taps, vert, 0)
                _vertical11x4(ring[1], i0, taps, vert, 1)
                _vertical11x4(ring[2], i0, taps, vert, 2)
                _vertical11x4(ring[3], i0, taps, vert, 3)
            for b in range(nb):
                i = i0 + b
                if win == 11:
                    if nb < _BLOCK:
                        _vertical11(ring[0], i, taps, vert[b, 0])
                        _vertical11(ring[1], i, taps, vert[b, 1])
                        _vertical11(ring[2], i, taps, vert[b, 2])
                        _vertical11(ring[3], i, taps, vert[b, 3])
                    _horizontal11_ssim(vert[b], taps, consts, s_row, cs_row)
                else:
                    _row_small(ring, i, taps, consts, col, vert[0], mom, s_row, cs_row)
                _accumulate(s_row, cs_row, s_col, cs_col)
        count = float(hv * wv)
        out[pl, 0] = _row_sum(s_col) / count
        out[pl, 1] = _row_sum(cs_col) / count


@lru_cache(maxsize=64)
def _parameters(
    taps: tuple[float, ...], c1: float, c2: float, shift: float, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """The window and ``(C1, C2, 2, shift)`` as arrays of ``dtype``, built once per combination
    (the kernel only reads them)."""
    with np.errstate(over="ignore"):  # a huge data range overflows float32 C1, C2 to inf
        consts = np.asarray((c1, c2, 2.0, shift), dtype=dtype)
    return np.asarray(taps, dtype=dtype), consts


def ssim_plane_means(
    x: np.ndarray, y: np.ndarray, taps: Sequence[float], c1: float, c2: float, shift: float = 0.0
) -> np.ndarray:
    """``float64 [P, 2]``: (mean SSIM, mean cs) of each plane pair of ``x``, ``y`` ``[P, H, W]``.

    ``x`` and ``y`` share one float dtype (float32 or float64), the precision of the filter sums
    and of the SSIM formula; ``taps`` is the symmetric window of odd length (``len(taps) <=
    min(H, W)``), ``c1``, ``c2`` the stabilising constants. The second moments are those of ``x
    - shift`` and ``y - shift`` (variances do not depend on it; half the data range, the middle
    of the signal, keeps them small, so float32 loses less to cancellation in ``E[x^2] -
    E[x]^2``). The means themselves are summed in float64.
    """
    dtype = x.dtype
    taps_arr, consts = _parameters(tuple(taps), c1, c2, shift, dtype)
    out = np.empty((x.shape[0], 2), dtype=np.float64)
    _ssim_sums(
        np.ascontiguousarray(x), np.ascontiguousarray(y, dtype=dtype), taps_arr, consts, out
    )
    return out
