"""Context functions of the ``ctx`` entropy mode, shared by its encoder and decoder
(spec/codecs/dct.md §6.2), and the DC prediction shared by the ``ctx`` and ``fast`` modes."""

from __future__ import annotations

import numpy as np

_NCLASS = 2  # 0: luma / generic plane, 1: chroma
_BAND = np.array([0] * 3 + [1] * 7 + [2] * 18 + [3] * 36)  # zigzag position -> AC band
_DS = np.array([0, 1, 2, 2, 3, 3, 3, 3, 3, 3] + [4] * 54)  # eob - k -> bucket
_NB_EDGES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48])  # neighbour-mean eob buckets
# contexts of one class: DC | EOB black (8) | EOB white (12) | AC 4 bands x 5 ds x 4 dn
_CTX_DC, _CTX_EB, _CTX_EW, _CTX_AC = 0, 1, 9, 21
_CTX_PER_CLASS = _CTX_AC + 4 * 5 * 4
_NCTX = _NCLASS * _CTX_PER_CLASS


def _pad1(a: np.ndarray, edge: bool) -> np.ndarray:
    """``np.pad(a, 1, mode="edge" if edge else "constant")`` for 2-D ``a``, without np.pad's
    Python overhead (a dozen calls per chunk: most of a small chunk's context modelling)."""
    h, w = a.shape
    p = np.empty((h + 2, w + 2), dtype=a.dtype)
    p[1:-1, 1:-1] = a
    if edge:
        p[0, 1:-1] = a[0]
        p[-1, 1:-1] = a[-1]
        p[:, 0] = p[:, 1]
        p[:, -1] = p[:, -2]
    else:
        p[0] = p[-1] = 0
        p[1:-1, 0] = p[1:-1, -1] = 0
    return p


def _neighbour_sum(e: np.ndarray) -> np.ndarray:
    p = _pad1(e, True)
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]


def _dc_residual(dc: np.ndarray) -> np.ndarray:
    r = dc.copy()
    r[:, 1:] = dc[:, 1:] - dc[:, :-1]
    r[1:, 0] = dc[1:, 0] - dc[:-1, 0]
    return r


def _dc_undo(r: np.ndarray) -> np.ndarray:
    r = r.copy()
    r[:, 0] = np.cumsum(r[:, 0])
    return np.cumsum(r, axis=1)


def _black_mask(by: int, bx: int) -> np.ndarray:
    return (np.add.outer(np.arange(by), np.arange(bx)) % 2) == 0


def _eob_contexts_black(dc: np.ndarray) -> np.ndarray:
    dc = dc.astype(np.int64)
    p = _pad1(dc, True)
    g = np.abs(p[:-2, 1:-1] - dc) + np.abs(p[2:, 1:-1] - dc) + np.abs(p[1:-1, :-2] - dc) + np.abs(p[1:-1, 2:] - dc)
    return np.minimum(np.frexp(g.astype(np.float64))[1], 7)


def _eob_contexts_white(eob_black_only: np.ndarray, black: np.ndarray) -> np.ndarray:
    """Bucket of the rounded mean of the in-bounds black 4-neighbours' eob (for white blocks)."""
    ep = _pad1(eob_black_only.astype(np.int64) * black, False)
    bp = _pad1(black.astype(np.int64), False)
    s = ep[:-2, 1:-1] + ep[2:, 1:-1] + ep[1:-1, :-2] + ep[1:-1, 2:]
    n = bp[:-2, 1:-1] + bp[2:, 1:-1] + bp[1:-1, :-2] + bp[1:-1, 2:]
    n = np.maximum(n, 1)
    return np.searchsorted(_NB_EDGES, (2 * s + n) // (2 * n), side="right") - 1


def _ac_positions(eob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = eob.ravel().astype(np.int64)
    total = int(e.sum())
    blk = np.repeat(np.arange(e.size), e)
    k = np.arange(total) - np.repeat(np.cumsum(e) - e, e) + 1
    return blk, k


def _ac_contexts(eob: np.ndarray, blk: np.ndarray, k: np.ndarray) -> np.ndarray:
    e = eob.ravel().astype(np.int64)
    nb = _neighbour_sum(eob.astype(np.int64)).ravel()
    ds = _DS[e[blk] - k]
    d = nb[blk] - 4 * k
    dn = (d >= -8).astype(np.int64) + (d >= 4) + (d >= 24)
    return (_BAND[k] * 5 + ds) * 4 + dn


# Decoder-side lookup tables for _ac_contexts (same values, fewer numpy passes):
# _AC_BD[64 k + eob] = (band(k) * 5 + ds(eob - k)) * 4 and _AC_DN[d + 252] = dn(d) for the
# neighbour term d = nb - 4 k in [-252, 252] (nb is a sum of four eobs <= 63).
_AC_K, _AC_E = np.divmod(np.arange(64 * 64), 64)
_AC_BD = (_BAND[_AC_K] * 5 + _DS[np.maximum(_AC_E - _AC_K, 0)]) * 4
_AC_D = np.arange(-252, 253)
_AC_DN = (_AC_D >= -8).astype(np.int64) + (_AC_D >= 4) + (_AC_D >= 24)


def _ac_contexts_lut(eob: np.ndarray, blk: np.ndarray, k: np.ndarray, base: int) -> np.ndarray:
    """``base + _ac_contexts(eob, blk, k)`` by table lookups (decoder; equal by construction)."""
    e = eob.ravel().astype(np.int64)
    nb = _neighbour_sum(eob.astype(np.int64)).ravel()
    idx = k * 64
    idx += e[blk]
    out = (_AC_BD + base)[idx]
    idx = nb[blk]
    idx += 252
    idx -= 4 * k
    out += _AC_DN[idx]
    return out


class _Plane:
    """Per-plane symbol layout shared by encoder and decoder (decode order)."""

    def __init__(self, by: int, bx: int, cls: int) -> None:
        self.by, self.bx, self.cls = by, bx, cls
        self.black = _black_mask(by, bx)
        self.base = cls * _CTX_PER_CLASS

