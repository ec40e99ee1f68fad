"""``qpyr.dct`` reconstruction on CPU, compiled with numba: coefficients to pixels in one pass.

Imported on first use by :mod:`qpyr.codecs.dct._transform` (this module imports numba at its
top). Input planes are ``int16 [by, bx, 64]`` quantised coefficients in natural order,
C-contiguous, or (``fm``) the frequency-major ``[64, by, bx]`` arrays that ``entropy="fast"``
decodes to; output is a C-contiguous ``[C, H, W]`` array, ``float32`` (unrounded) or ``uint8``
(``floor(x + 1/2)``), clamped to [0, 255]. The maths is spec/codecs/dct.md §5 and
spec/codecs/ycbcr420.md §5; that page lists this kernel's order of operations.

Work goes one block row at a time (8 luma rows; 16 with 4:2:0) through strips of a few tens
of kB, so every intermediate stays in L1/L2 and the output is written once:

1. row pass (:func:`_rows`), per block and nonzero coefficient row ``u``: ``c = float32(q) *
   float32(T)`` (dequantisation), then with the float32 basis ``d`` (spec §5) and its symmetry
   ``d[v][7 - x] = (-1)^v d[v][x]`` the even and odd halves ``e[x]``, ``o[x]`` (``x < 4``) of
   ``sum over v of c[v] d[v][x]``, up to the row's last nonzero coefficient, and ``r[x] = e + o``,
   ``r[7 - x] = e - o``, into a strip ``rs[u, 8 bj + x]``. Scalar code: numba leaves LLVM's SLP
   vectoriser off, and at usual qualities a block has a handful of low-frequency terms
   (astronaut q75: 10 per luma block, 2-3 per chroma block);
2. column pass (:func:`_columns`) on whole strip rows, which LLVM's loop vectoriser handles:
   the same even/odd form over ``u``, rows past the highest one nonzero in any block of the
   strip left out (they would add exact zeros: skipping changes no bit);
3. planes that are not YCbCr: ``clamp(p + shift, 0, 255)`` into the output row;
   YCbCr: chroma (4:2:0: upsampled first, below) through the colour matrix, ``R = 1.402 cr +
   y``, ``G = (-0.344136286 cb + -0.714136286 cr) + y``, ``B = 1.772 cb + y`` with ``y = p_Y +
   shift``, clamped; ``shift`` is 128, or 128.5 for ``uint8`` output, whose conversion then
   truncates (the floor of the clamped value);
4. 4:2:0 chroma: libjpeg's fancy (triangle) filter, edges clamped at the padded chroma size,
   horizontally first (once per chroma row: ``0.25 c[j-1] + 0.75 c[j]`` and ``0.75 c[j] + 0.25
   c[j+1]``, ``c[0]`` itself at column 0), then vertically per output row with the same
   weights (``h[0]`` itself at row 0). Chroma block rows live in a ring of three strips.

Determinism: every sum has one fixed order and runs in one thread, and the kernels are compiled
without ``fastmath`` (no reassociation, no fused multiply-add), so the same coefficients give
the same bits in every process, at any thread count or SIMD width. The torch reconstruction
(the GEMM form, other devices) sums in another order: the two agree within 1 code on ``uint8``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["basis", "reconstruct_plane", "reconstruct_ycbcr420", "reconstruct_ycbcr444"]

_CR_R = np.float32(1.402)
_CB_G = np.float32(-0.344136286)
_CR_G = np.float32(-0.714136286)
_CB_B = np.float32(1.772)


def _basis() -> np.ndarray:
    n = np.arange(8)
    d = np.cos((2 * n[None, :] + 1) * n[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    out = np.ascontiguousarray(d.astype(np.float32))
    out.flags.writeable = False
    return out


_BASIS = _basis()


def basis() -> np.ndarray:
    """``float32 [8, 8]`` orthonormal DCT-II basis ``d[k][n]`` (spec/codecs/dct.md §5), read-only:
    the ``d`` argument of the kernels."""
    return _BASIS


@njit(cache=True, nogil=True)
def _rows(blocks, tab, d, nz, bm, rs):  # type: ignore[no-untyped-def]
    """Row pass of one block row, ``blocks`` = ``int16 [bx, 64]`` (C- or F-contiguous), into
    ``rs`` (``float32 [8, >= 8 bx]``, zeroed first): coefficient row ``u`` of block ``bj``
    goes to ``rs[u, 8 bj : 8 bj + 8]``. Returns the bit mask of the rows ``u`` nonzero in any
    block. ``nz`` (``int16 [8, bx]``: the OR of each coefficient row) and ``bm`` (``int32
    [bx]``: each block's mask of nonzero rows) are scratch, computed first across the block
    row, a coefficient at a time (contiguous, so vectorised, for the F-contiguous rows of
    frequency-major planes).

    One row, ``c[v] = float32(q[v]) * T[v]``: with ``d[v][7 - x] = (-1)^v d[v][x]``, ``e[x] =
    sum over even v of c[v] d[v][x]`` and ``o[x]`` over odd ``v`` (``x < 4``; each from ``v =
    0`` up, starting at 0, pairs ``(v, v + 1)`` up to the last nonzero ``c``), then ``r[x] =
    e[x] + o[x]`` and ``r[7 - x] = e[x] - o[x]``."""
    bx = blocks.shape[0]
    n = bx * 8
    for u in range(8):
        ru = rs[u]
        for x in range(n):
            ru[x] = np.float32(0.0)
    for bj in range(bx):
        bm[bj] = 0
    for u in range(8):
        acc = nz[u]
        for bj in range(bx):
            acc[bj] = blocks[bj, 8 * u]
        for v in range(1, 8):
            for bj in range(bx):
                acc[bj] |= blocks[bj, 8 * u + v]
        for bj in range(bx):
            bm[bj] |= np.int32(acc[bj] != 0) << u
    mask = 0
    for bj in range(bx):
        m = bm[bj]
        mask |= m
        c0 = bj * 8
        u = 0
        while m:
            if m & 1:
                b = 8 * u
                last = 8
                while blocks[bj, b + last - 1] == 0:
                    last -= 1
                e0 = e1 = e2 = e3 = o0 = o1 = o2 = o3 = np.float32(0.0)
                for v in range(0, last, 2):
                    ce = np.float32(blocks[bj, b + v]) * tab[b + v]
                    co = np.float32(blocks[bj, b + v + 1]) * tab[b + v + 1]
                    e0 += ce * d[v, 0]
                    e1 += ce * d[v, 1]
                    e2 += ce * d[v, 2]
                    e3 += ce * d[v, 3]
                    o0 += co * d[v + 1, 0]
                    o1 += co * d[v + 1, 1]
                    o2 += co * d[v + 1, 2]
                    o3 += co * d[v + 1, 3]
                dst = rs[u]
                dst[c0] = e0 + o0
                dst[c0 + 1] = e1 + o1
                dst[c0 + 2] = e2 + o2
                dst[c0 + 3] = e3 + o3
                dst[c0 + 4] = e3 - o3
                dst[c0 + 5] = e2 - o2
                dst[c0 + 6] = e1 - o1
                dst[c0 + 7] = e0 - o0
            m >>= 1
            u += 1
    return mask


@njit(cache=True, nogil=True)
def _block_row(plane, fm, bi, tab, d, nz, bm, gather, rs, strip, r0):  # type: ignore[no-untyped-def]
    """IDCT of block row ``bi`` into ``strip[r0:r0 + 8]`` (``float32``, centred: pixel - 128).
    ``plane`` is ``int16 [by, bx, 64]``, or with ``fm`` frequency-major ``[64, by, bx]``, whose
    block row is first copied (64 contiguous rows) into ``gather`` (``[64, bx]``): its 64
    coefficient rows lie a whole plane apart, and read block by block they would all compete
    for the same few cache sets. Row pass (:func:`_rows`) into ``rs``, column pass
    (:func:`_columns`) from it."""
    if fm:
        for k in range(64):
            src = plane[k, bi]
            dst = gather[k]
            for bj in range(src.shape[0]):
                dst[bj] = src[bj]
        mask = _rows(gather.T, tab, d, nz, bm, rs)
    else:
        mask = _rows(plane[bi], tab, d, nz, bm, rs)
    _columns(rs, mask, d, strip, r0)


@njit(cache=True, nogil=True)
def _columns(rs, mask, d, strip, r0):  # type: ignore[no-untyped-def]
    """Column pass on whole strip rows (``rs`` rows ``u`` past the highest bit of ``mask`` are
    zero, so their terms are left out: they add exact zeros): for ``y < 4``, ``e = ((d[0][y]
    rs[0] + d[2][y] rs[2]) + d[4][y] rs[4]) + d[6][y] rs[6]``, ``o`` likewise over odd ``u``,
    then ``strip[r0 + y] = e + o`` and ``strip[r0 + 7 - y] = e - o``."""
    n = strip.shape[1]  # 8 bx: rs may be wider (shared by the luma and chroma planes)
    r0_, r1, r2, r3, r4, r5, r6, r7 = rs[0], rs[1], rs[2], rs[3], rs[4], rs[5], rs[6], rs[7]
    for y in range(4):
        top = strip[r0 + y]
        bot = strip[r0 + 7 - y]
        a0, a1, a2, a3 = d[0, y], d[1, y], d[2, y], d[3, y]
        a4, a5, a6, a7 = d[4, y], d[5, y], d[6, y], d[7, y]
        if mask == 0:
            for x in range(n):
                top[x] = np.float32(0.0)
                bot[x] = np.float32(0.0)
        elif mask < 2:
            for x in range(n):
                e = a0 * r0_[x]
                top[x] = e
                bot[x] = e
        elif mask < 4:
            for x in range(n):
                e = a0 * r0_[x]
                o = a1 * r1[x]
                top[x] = e + o
                bot[x] = e - o
        elif mask < 16:
            for x in range(n):
                e = a0 * r0_[x] + a2 * r2[x]
                o = a1 * r1[x] + a3 * r3[x]
                top[x] = e + o
                bot[x] = e - o
        else:
            for x in range(n):
                e = ((a0 * r0_[x] + a2 * r2[x]) + a4 * r4[x]) + a6 * r6[x]
                o = ((a1 * r1[x] + a3 * r3[x]) + a5 * r5[x]) + a7 * r7[x]
                top[x] = e + o
                bot[x] = e - o


@njit(cache=True, nogil=True)
def _grid(plane, fm):  # type: ignore[no-untyped-def]
    """``(by, bx)`` blocks of ``plane`` (``[by, bx, 64]``, or ``[64, by, bx]`` with ``fm``)."""
    if fm:
        return plane.shape[1], plane.shape[2]
    return plane.shape[0], plane.shape[1]


@njit(cache=True, nogil=True)
def reconstruct_plane(plane, fm, tab, shift, d, out):  # type: ignore[no-untyped-def]
    """One independent plane -> ``out`` (``[h, w]``, float32 or uint8, ``h <= 8 by``,
    ``w <= 8 bx``): ``clamp(IDCT + shift, 0, 255)``, cast on store."""
    by, bx = _grid(plane, fm)
    h, w = out.shape
    nz = np.empty((8, bx), np.int16)
    bm = np.empty(bx, np.int32)
    gather = np.empty((64, bx), np.int16)
    rs = np.empty((8, bx * 8), np.float32)
    strip = np.empty((8, bx * 8), np.float32)
    lo = np.float32(0.0)
    hi = np.float32(255.0)
    for bi in range(by):
        y0 = bi * 8
        if y0 >= h:
            break
        _block_row(plane, fm, bi, tab, d, nz, bm, gather, rs, strip, 0)
        for y in range(min(8, h - y0)):
            src = strip[y]
            row = out[y0 + y]
            for x in range(w):
                row[x] = min(max(src[x] + shift, lo), hi)


@njit(cache=True, nogil=True)
def _colour_row(yr, cb, cr, shift, r_out, g_out, b_out, w):  # type: ignore[no-untyped-def]
    """One output row: centred luma ``yr`` and chroma ``cb``, ``cr`` -> clamped R, G, B."""
    lo = np.float32(0.0)
    hi = np.float32(255.0)
    for x in range(w):
        y = yr[x] + shift
        b_ = cb[x]
        r_ = cr[x]
        r_out[x] = min(max(_CR_R * r_ + y, lo), hi)
        g_out[x] = min(max((_CB_G * b_ + _CR_G * r_) + y, lo), hi)
        b_out[x] = min(max(_CB_B * b_ + y, lo), hi)


@njit(cache=True, nogil=True)
def reconstruct_ycbcr444(yp, cbp, crp, fm, ty, tc, shift, d, out):  # type: ignore[no-untyped-def]
    """Y, Cb, Cr planes of the same size (chroma table ``tc``) -> RGB ``out [3, h, w]``."""
    by, bx = _grid(yp, fm)
    h, w = out.shape[1], out.shape[2]
    nz = np.empty((8, bx), np.int16)
    bm = np.empty(bx, np.int32)
    gather = np.empty((64, bx), np.int16)
    rs = np.empty((8, bx * 8), np.float32)
    sy = np.empty((8, bx * 8), np.float32)
    scb = np.empty((8, bx * 8), np.float32)
    scr = np.empty((8, bx * 8), np.float32)
    for bi in range(by):
        y0 = bi * 8
        if y0 >= h:
            break
        _block_row(yp, fm, bi, ty, d, nz, bm, gather, rs, sy, 0)
        _block_row(cbp, fm, bi, tc, d, nz, bm, gather, rs, scb, 0)
        _block_row(crp, fm, bi, tc, d, nz, bm, gather, rs, scr, 0)
        for y in range(min(8, h - y0)):
            _colour_row(sy[y], scb[y], scr[y], shift, out[0, y0 + y], out[1, y0 + y], out[2, y0 + y], w)


@njit(cache=True, nogil=True)
def _hup(src, dst):  # type: ignore[no-untyped-def]
    """Horizontal fancy 2x of one chroma row ``src [n]`` into ``dst [2n]``, edges clamped."""
    n = src.shape[0]
    q = np.float32(0.25)
    t = np.float32(0.75)
    dst[0] = src[0]
    for j in range(1, n):
        dst[2 * j] = q * src[j - 1] + t * src[j]
    for j in range(n - 1):
        dst[2 * j + 1] = t * src[j] + q * src[j + 1]
    dst[2 * n - 1] = t * src[n - 1] + q * src[n - 1]


@njit(cache=True, nogil=True)
def reconstruct_ycbcr420(yp, cbp, crp, fm, ty, tc, shift, d, out):  # type: ignore[no-untyped-def]
    """Y (``2 cby x 2 cbx`` blocks) and half-size Cb, Cr (``cby x cbx``) -> RGB ``out [3, h, w]``,
    one 16-row macroblock row at a time."""
    cby, cbx = _grid(cbp, fm)
    h, w = out.shape[1], out.shape[2]
    cw = cbx * 8
    ch = cby * 8
    wp = cw * 2
    nz = np.empty((8, wp // 8), np.int16)
    bm = np.empty(wp // 8, np.int32)
    gly = np.empty((64, wp // 8), np.int16)  # luma and chroma block rows differ in width
    gc = np.empty((64, cbx), np.int16)
    rs = np.empty((8, wp), np.float32)
    sy = np.empty((16, wp), np.float32)
    rcb = np.empty((24, cw), np.float32)  # chroma block row k in rows 8 (k % 3) ..
    rcr = np.empty((24, cw), np.float32)
    hcb = np.empty((10, wp), np.float32)  # chroma rows 8r - 1 .. 8r + 8, upsampled across
    hcr = np.empty((10, wp), np.float32)
    vcb = np.empty(wp, np.float32)
    vcr = np.empty(wp, np.float32)
    q = np.float32(0.25)
    t = np.float32(0.75)
    for r in range(cby):
        y0 = r * 16
        if y0 >= h:
            break
        for k in range(0 if r == 0 else r + 1, min(r + 2, cby)):  # block rows r - 1 .. r + 1 in the ring
            _block_row(cbp, fm, k, tc, d, nz, bm, gc, rs, rcb, (k % 3) * 8)
            _block_row(crp, fm, k, tc, d, nz, bm, gc, rs, rcr, (k % 3) * 8)
        _block_row(yp, fm, 2 * r, ty, d, nz, bm, gly, rs, sy, 0)
        _block_row(yp, fm, 2 * r + 1, ty, d, nz, bm, gly, rs, sy, 8)
        c0 = r * 8 - 1
        for i in range(10):  # the chroma rows this macroblock row reads, clamped at the edges
            c = min(max(c0 + i, 0), ch - 1)
            s = ((c // 8) % 3) * 8 + c % 8
            _hup(rcb[s], hcb[i])
            _hup(rcr[s], hcr[i])
        for yy in range(min(16, h - y0)):
            gy = y0 + yy
            i = gy // 2 - c0  # hcb row of chroma row gy // 2
            if gy == 0:
                _colour_row(sy[yy], hcb[i], hcr[i], shift, out[0, gy], out[1, gy], out[2, gy], w)
                continue
            if gy % 2 == 0:
                a, wa, b, wb = i - 1, q, i, t
            else:
                a, wa, b, wb = i, t, i + 1, q  # row i + 1 is clamped at the bottom edge
            ha0, hb0 = hcb[a], hcb[b]
            ha1, hb1 = hcr[a], hcr[b]
            for x in range(w):
                vcb[x] = wa * ha0[x] + wb * hb0[x]
                vcr[x] = wa * ha1[x] + wb * hb1[x]
            _colour_row(sy[yy], vcb, vcr, shift, out[0, gy], out[1, gy], out[2, gy], w)
