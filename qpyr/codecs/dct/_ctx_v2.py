"""The ``ctx`` entropy decoder of ``qpyr.dct`` stream versions 1 and 2: tokens grouped by
context and coded with ``constriction``'s rANS (spec/codecs/dct.md §6.4, "versions 1 and 2").
Kept so that every stream ever written still decodes; new streams are version 4
(:mod:`qpyr.codecs.dct._ctx`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from qpyr.codecs.dct._bitio import _BitReader
from qpyr.codecs.dct._contexts import (
    _CTX_AC,
    _CTX_DC,
    _CTX_EB,
    _CTX_EW,
    _NCTX,
    _ac_contexts_lut,
    _ac_positions,
    _dc_undo,
    _eob_contexts_black,
    _eob_contexts_white,
    _Plane,
)
from qpyr.codecs.dct._header import NAME
from qpyr.codecs.dct._models import _default_models, _models
from qpyr.codecs.dct._sections import entropy_sections, read_model_header
from qpyr.codecs.dct._tables import _MAXC, ZIGZAG
from qpyr.codecs.dct._tokens import _read_fields
from qpyr.errors import CodecError


def ctx_decode_v2(data: bytes, pos: int, default_models: bool, dims: list[tuple[int, int]],
                classes: list[int]) -> tuple[np.ndarray, ...]:
    """The entropy section from byte ``pos`` on -> ``int16 [by, bx, 64]`` planes (natural
    order) of the block grids ``dims``, whose context classes are ``classes``."""
    import constriction

    hb, rb, wpos = entropy_sections(data, pos, default_models)
    raw = _BitReader(rb)
    ans = np.frombuffer(data, dtype="<u4", offset=wpos).astype(np.uint32)
    models: dict[int, Any] = _default_models() if default_models else {}
    if not default_models:
        levels = read_model_header(hb)
        sizes = np.count_nonzero(np.maximum.accumulate(levels[:, ::-1] > 0, axis=1), axis=1)
        ctxs = np.flatnonzero(sizes)
        if ctxs.size:
            lv = np.concatenate([levels[c, : sizes[c]] for c in ctxs])
            models = _models(lv, sizes[ctxs], [int(c) for c in ctxs])
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
