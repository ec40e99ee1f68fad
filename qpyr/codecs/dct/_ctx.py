"""The ``ctx`` entropy mode of ``qpyr.dct``, stream version 4: tokens under context-dependent
models, coded with a compiled rANS coder symbol by symbol in decode order
(:mod:`qpyr._kernels.rans`), extra bits and signs in a raw bit stream; a per-chunk model header
or the built-in default models (spec/codecs/dct.md §6.1-§6.4). Streams of versions 1 and 2
decode with :mod:`qpyr.codecs.dct._ctx_v2`."""

from __future__ import annotations

import struct

import numpy as np

from qpyr.codecs.dct._bitio import _BitWriter
from qpyr.codecs.dct._contexts import (
    _CTX_AC,
    _CTX_DC,
    _CTX_EB,
    _CTX_EW,
    _CTX_PER_CLASS,
    _NCTX,
    _ac_contexts,
    _ac_positions,
    _dc_residual,
    _eob_contexts_black,
    _eob_contexts_white,
    _Plane,
)
from qpyr.codecs.dct._ctx_v2 import ctx_decode_v2
from qpyr.codecs.dct._header import NAME, VERSION_CTX
from qpyr.codecs.dct._models import _histogram, _quantise_histogram, default_rans_tables, rans_tables
from qpyr.codecs.dct._sections import entropy_sections, read_model_header
from qpyr.codecs.dct._tables import ZIGZAG
from qpyr.codecs.dct._tokens import _tokens, _write_fields
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


def _model_header(hist: np.ndarray) -> tuple[bytes, np.ndarray]:
    """A chunk's own models: ``(model header bytes, levels int64 [contexts, 17])``."""
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
    return hw.getvalue(), levels


def _pack(ctx: np.ndarray, tok: np.ndarray, rb: bytes, levels: np.ndarray, hb: bytes, nstates: int) -> bytes:
    from qpyr._kernels.rans import encode_words

    start, freq, _ = rans_tables(levels) if hb else default_rans_tables()
    ans = encode_words(ctx, tok, start, freq, nstates).astype("<u4").tobytes()
    return struct.pack("<III", len(hb), len(rb), len(ans)) + hb + rb + ans


_TRY_DEFAULT_BLOCKS = 8192  # chunks up to this many blocks (512x512 4:2:0) also try the default models


def _entropy_encode(coefs: list[np.ndarray], classes: list[int]) -> tuple[bytes, bool]:
    """Entropy section (version 4); True when it uses the default models (no model header)."""
    segments, rb = _symbols(coefs, classes)
    ctx = np.concatenate([c for c, _ in segments]).astype(np.int64)
    tok = np.concatenate([t for _, t in segments]).astype(np.int64)
    from qpyr._kernels.rans import states_for

    hb, levels = _model_header(_histogram(segments))
    blocks = sum(q.shape[0] * q.shape[1] for q in coefs)
    own = _pack(ctx, tok, rb, levels, hb, states_for(blocks))
    if blocks > _TRY_DEFAULT_BLOCKS:
        return own, False
    default = _pack(ctx, tok, rb, levels, b"", states_for(blocks))
    return (default, True) if len(default) < len(own) else (own, False)


_DEFAULT_DECODER: list[tuple[np.ndarray, np.ndarray]] = []  # the default models' decoder tables, built once


def _ctx_decode(data: bytes, pos: int, default_models: bool, dims: list[tuple[int, int]],
                classes: list[int], version: int = VERSION_CTX) -> tuple[np.ndarray, ...]:
    """The entropy section from byte ``pos`` on -> ``int16 [by, bx, 64]`` planes (natural
    order) of the block grids ``dims``, whose context classes are ``classes``. ``version`` is
    the stream's: 4 decodes here, 1 and 2 with :func:`ctx_decode_v2`."""
    if version != VERSION_CTX:
        return ctx_decode_v2(data, pos, default_models, dims, classes)
    from qpyr._kernels import rans

    hb, rb, wpos = entropy_sections(data, pos, default_models)
    if default_models:
        if not _DEFAULT_DECODER:
            _DEFAULT_DECODER.append(rans.decoder_tables(default_rans_tables()[2]))
        cum, lut = _DEFAULT_DECODER[0]
    else:
        cum, lut = rans.decoder_tables(rans_tables(read_model_header(hb))[2])
    words = rans.padded_words(data, wpos)
    nstates = rans.states_for(sum(by * bx for by, bx in dims))
    if words.size <= 2 * nstates:
        raise CodecError(f"Corrupt {NAME} data: the rANS words hold no state.")
    raw = rans.padded(rb)
    state = rans.new_state(words, nstates)
    planes: list[np.ndarray] = []
    for (by, bx), cls in zip(dims, classes, strict=True):
        plane, err = rans.decode_plane(words, raw, cum, lut, cls * _CTX_PER_CLASS, by, bx, state)
        if err:
            raise CodecError(f"Corrupt {NAME} data: {rans.ERRORS[err]} (plane {len(planes)}).")
        planes.append(plane)
    if not rans.finished(state, words[:-1], len(rb)):
        raise CodecError(f"Corrupt {NAME} data: the entropy section does not end where its symbols do.")
    return tuple(planes)

