"""The ``ctx`` entropy mode of ``qpyr.dct`` (the default): tokens under context-dependent
models, coded with rANS (``constriction``), extra bits and signs in a raw bit stream; a
per-chunk model header or the built-in default models (spec/codecs/dct.md §6.1-§6.4)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from qpyr.codecs.dct._bitio import _BitReader, _BitWriter, _gather_bits, _IntBitReader
from qpyr.codecs.dct._contexts import (
    _CTX_AC,
    _CTX_DC,
    _CTX_EB,
    _CTX_EW,
    _NCTX,
    _ac_contexts,
    _ac_contexts_lut,
    _ac_positions,
    _dc_residual,
    _dc_undo,
    _eob_contexts_black,
    _eob_contexts_white,
    _Plane,
)
from qpyr.codecs.dct._header import NAME
from qpyr.codecs.dct._models import _default_models, _histogram, _model, _models, _quantise_histogram
from qpyr.codecs.dct._tables import _MAXC, ZIGZAG
from qpyr.codecs.dct._tokens import _NT, _read_fields, _tokens, _write_fields
from qpyr.errors import CodecError


def _symbols(coefs: list[np.ndarray], classes: list[int]) -> tuple[list[tuple[np.ndarray, np.ndarray]], bytes]:
    """Per phase (decode order): (global context per symbol, token); and the raw bit stream."""
    segments: list[tuple[np.ndarray, np.ndarray]] = []
    raw = _BitWriter()
    for q, cls in zip(coefs, classes, strict=False):
        by, bx, _ = q.shape
        pl = _Plane(by, bx, cls)
        qz = q.reshape(by, bx, 64)[..., ZIGZAG].astype(np.int64)
        dc = qz[..., 0]
        r = _dc_residual(dc).ravel()
        tok, extra, nx = _tokens(np.abs(r))
        segments.append((np.full(r.size, pl.base + _CTX_DC), tok))
        _write_fields(raw, r, extra, nx)
        nzpos = np.where(qz[..., 1:] != 0, np.arange(1, 64), 0)
        eob = nzpos.max(axis=-1)
        for sel, ctx in (
            (pl.black, pl.base + _CTX_EB + _eob_contexts_black(dc)),
            (~pl.black, pl.base + _CTX_EW + _eob_contexts_white(eob, pl.black)),
        ):
            tok, extra, nx = _tokens(eob[sel])
            segments.append((ctx[sel], tok))
            _write_fields(raw, None, extra, nx)
        blk, k = _ac_positions(eob)
        ctx = pl.base + _CTX_AC + _ac_contexts(eob, blk, k)
        v = qz.reshape(-1, 64)[blk, k]
        tok, extra, nx = _tokens(np.abs(v))
        segments.append((ctx, tok))
        _write_fields(raw, v, extra, nx)
    return segments, raw.getvalue()


def _pack(segments: list[tuple[np.ndarray, np.ndarray]], rb: bytes, models: Mapping[int, Any], hb: bytes) -> bytes:
    import constriction

    groups: list[tuple[int, np.ndarray]] = []
    for ctx, tok in segments:
        order = np.argsort(ctx.astype(np.int16), kind="stable")
        cs, ts = ctx[order], tok[order]
        bounds = np.flatnonzero(np.diff(cs)) + 1
        for a, b in zip(np.r_[0, bounds], np.r_[bounds, cs.size], strict=False):
            if b > a:
                groups.append((int(cs[a]), ts[a:b].astype(np.int32)))
    coder = constriction.stream.stack.AnsCoder()
    for c, ts in reversed(groups):
        coder.encode_reverse(ts, models[c])
    ans = coder.get_compressed().astype("<u4").tobytes()
    return struct.pack("<III", len(hb), len(rb), len(ans)) + hb + rb + ans


_TRY_DEFAULT_BLOCKS = 8192  # chunks up to this many blocks (512x512 4:2:0) also try the default models


def _entropy_encode(coefs: list[np.ndarray], classes: list[int]) -> tuple[bytes, bool]:
    """Entropy section; True when it uses the default models (no model header)."""
    segments, rb = _symbols(coefs, classes)
    hist = _histogram(segments)
    hw = _BitWriter()
    levels = np.zeros_like(hist)
    for c in range(_NCTX):
        if hist[c].any():
            levels[c] = _quantise_histogram(hist[c])
            t = int(np.nonzero(levels[c])[0].max())
            hw.write(np.array([1, t]), np.array([1, 5]))
            hw.write(levels[c, : t + 1], 5)
        else:
            hw.write(np.array([0]), 1)
    models = {c: _model(levels[c]) for c in range(_NCTX) if hist[c].any()}
    own = _pack(segments, rb, models, hw.getvalue())
    if sum(q.shape[0] * q.shape[1] for q in coefs) > _TRY_DEFAULT_BLOCKS:
        return own, False
    default = _pack(segments, rb, _default_models(), b"")
    return (default, True) if len(default) < len(own) else (own, False)


def _ctx_decode(data: bytes, pos: int, default_models: bool, dims: list[tuple[int, int]],
                classes: list[int]) -> tuple[np.ndarray, ...]:
    """The entropy section from byte ``pos`` on -> ``int16 [by, bx, 64]`` planes (natural
    order) of the block grids ``dims``, whose context classes are ``classes``."""
    import constriction

    if len(data) < pos + 12:
        raise CodecError(f"Corrupt {NAME} data: truncated before the entropy section.")
    nh, nr, na = struct.unpack_from("<III", data, pos)
    pos += 12
    if nh + nr + na != len(data) - pos or na % 4:
        raise CodecError(f"Corrupt {NAME} data: section lengths do not add up.")
    if default_models and nh:
        raise CodecError(f"Corrupt {NAME} data: default models but a model header.")
    hr = _IntBitReader(data[pos : pos + nh])
    raw = _BitReader(data[pos + nh : pos + nh + nr])
    ans = np.frombuffer(data, dtype="<u4", offset=pos + nh + nr).astype(np.uint32)
    # presence bits and alphabet sizes with the scalar reader; all 5-bit levels in one gather
    present: list[tuple[int, int, int]] = []  # (context, T, bit offset of L[0])
    for ci in range(0 if default_models else _NCTX):
        if hr.read(1):
            t = hr.read(5)
            if t >= _NT:
                raise CodecError(f"Corrupt {NAME} data: token alphabet {t + 1} > {_NT}.")
            if 5 * (t + 1) > hr.left:
                raise CodecError(f"Corrupt {NAME} data: model header is truncated.")
            present.append((ci, t, 8 * nh - hr.left))
            hr.left -= 5 * (t + 1)
    models: dict[int, Any] = _default_models() if default_models else {}
    if present:
        sizes = np.array([t + 1 for _, t, _ in present])
        starts = np.repeat(np.array([o for _, _, o in present]), sizes)
        starts += 5 * (np.arange(starts.size) - np.repeat(np.cumsum(sizes) - sizes, sizes))
        hb = _BitReader(data[pos : pos + nh])
        hb.pos = 0
        lv = _gather_bits(hb, starts, 5)
        if (lv[np.cumsum(sizes) - 1] == 0).any():
            raise CodecError(f"Corrupt {NAME} data: empty model.")
        models = _models(lv, sizes, [ci for ci, _, _ in present])
    coder = constriction.stream.stack.AnsCoder(ans)

    def tokens(ctx: np.ndarray) -> np.ndarray:
        out = np.empty(ctx.size, dtype=np.int64)
        if ctx.size == 0:
            return out
        order = np.argsort(ctx.astype(np.int16), kind="stable")  # radix sort
        counts = np.bincount(ctx, minlength=_NCTX)
        parts = []
        for ci in np.flatnonzero(counts):
            if int(ci) not in models:
                raise CodecError(f"Corrupt {NAME} data: context {ci} has no model.")
            parts.append(coder.decode(models[int(ci)], int(counts[ci])))
        out[order] = np.concatenate(parts)
        return out

    out_planes: list[np.ndarray] = []
    for (by, bx), cls in zip(dims, classes, strict=False):
        pl = _Plane(by, bx, cls)
        r = _read_fields(raw, tokens(np.full(by * bx, pl.base + _CTX_DC)), True)
        dc = _dc_undo(r.reshape(by, bx))
        if np.abs(dc).max() > _MAXC:
            raise CodecError(f"Corrupt {NAME} data: DC coefficient out of range.")
        eob = np.zeros((by, bx), dtype=np.int64)
        ctx = pl.base + _CTX_EB + _eob_contexts_black(dc)
        eob[pl.black] = _read_fields(raw, tokens(ctx[pl.black]), False)
        if eob.max() > 63:
            raise CodecError(f"Corrupt {NAME} data: end-of-block position out of range.")
        ctx = pl.base + _CTX_EW + _eob_contexts_white(eob, pl.black)
        eob[~pl.black] = _read_fields(raw, tokens(ctx[~pl.black]), False)
        if eob.max() > 63:
            raise CodecError(f"Corrupt {NAME} data: end-of-block position out of range.")
        blk, k = _ac_positions(eob)
        v = _read_fields(raw, tokens(_ac_contexts_lut(eob, blk, k, pl.base + _CTX_AC)), True)
        if v.size and np.abs(v).max() > _MAXC:
            raise CodecError(f"Corrupt {NAME} data: AC coefficient out of range.")
        qz = np.zeros((by * bx, 64), dtype=np.int16)  # natural order
        qz[:, 0] = dc.ravel()
        blk *= 64
        blk += ZIGZAG[k]
        qz.reshape(-1)[blk] = v  # flat scatter: one index array instead of two
        out_planes.append(qz.reshape(by, bx, 64))
    return tuple(out_planes)
