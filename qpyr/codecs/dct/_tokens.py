"""Token alphabet of the ``ctx`` entropy mode: a magnitude is a token plus extra bits, written
(with a sign bit for signed values) to the raw bit stream (spec/codecs/dct.md §6.1, §6.3)."""

from __future__ import annotations

import numpy as np

from qpyr.codecs.dct._bitio import _BitReader, _BitWriter

_NT = 17  # tokens 0..16: t < 8 is the magnitude; t >= 8 is bit length t - 4, with t - 5 extra bits


def _tokens(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Magnitudes -> (token, extra value, extra bit count)."""
    m = m.astype(np.int64)
    bl = np.frexp(np.maximum(m, 1).astype(np.float64))[1].astype(np.int64)
    big = m >= 8
    tok = np.where(big, bl + 4, m)
    nx = np.where(big, bl - 1, 0)
    extra = np.where(big, m - (np.int64(1) << np.maximum(bl - 1, 0)), 0)
    return tok, extra, nx


def _write_fields(raw: _BitWriter, signed: np.ndarray | None, extra: np.ndarray, nx: np.ndarray) -> None:
    """Per symbol: extra bits (if any), then a sign bit for nonzero signed values."""
    if signed is None:
        sel = nx > 0
        raw.write(extra[sel], nx[sel])
        return
    sbit = (signed < 0).astype(np.int64)
    has_sign = (signed != 0).astype(np.int64)
    w = nx + has_sign
    sel = w > 0
    raw.write(((extra << has_sign) | sbit)[sel], w[sel])


_TOK = np.arange(_NT, dtype=np.int64)
_TOK_NX = np.where(_TOK >= 8, _TOK - 5, 0)  # token -> extra bit count
_TOK_BASE = np.where(_TOK >= 8, np.int64(1) << _TOK_NX, _TOK)  # token -> magnitude sans extra bits
_TOK_SIGNED_W = np.where(_TOK > 0, _TOK_NX + 1, 0)  # token -> extra bits + sign bit


def _read_fields(raw: _BitReader, tok: np.ndarray, signed: bool) -> np.ndarray:
    """Per token, its extra bits then (``signed``, non-zero tokens) a sign bit: one read of
    every symbol's field, zero-width fields included (they read as 0), no index selection."""
    tok = tok.astype(np.intp, copy=False)  # tokens are < _NT (the models' alphabets)
    out = _TOK_BASE[tok]  # magnitude without its extra bits
    if signed:
        f = raw.read(_TOK_SIGNED_W[tok])
        out += f >> 1
        f &= 1
        np.negative(out, out=out, where=f.astype(bool))
        return out
    out += raw.read(_TOK_NX[tok])
    return out
