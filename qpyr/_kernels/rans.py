"""The ``ctx`` entropy coder of ``qpyr.dct`` stream version 4, compiled with numba.

Imported on first use by :mod:`qpyr.codecs.dct._ctx` (this module imports numba at its top).
spec/codecs/dct.md §6.4 is normative; in short:

- **rANS** with two interleaved 64-bit states in ``[L, 2^63)``, ``L = 2^31``, 32-bit words
  and ``P = 16``-bit frequencies; symbol ``i`` of the chunk (decode order) is coded on state
  ``i mod 2``, so the decoder's two dependency chains overlap. Encoding runs over the
  symbols last to first; the decoder reads the final states (two words each, low first) and
  then one word whenever the state in use drops below ``L``, and MUST end with both states
  at ``L`` having read every word.
- **Decode order**: one symbol after the other in phase order, each with its own context's
  model (version 2 grouped the symbols of a phase by context: that needs a sort and a
  scatter per phase, a per-symbol loop does not).
- **Raw bits**: an MSB-first bit stream of extra bits and signs, read right after each token.

The decoder is one loop per plane that computes every context on the fly (DC, EOB of black
then white blocks, AC values), so the whole entropy decode is a single pass over the symbols.
It never raises: corrupt input gives a non-zero error code (see :data:`ERRORS`) and the caller
raises :class:`~qpyr.errors.CodecError`; every loop is bounded by the plane geometry, so no
input can make it hang. Integer arithmetic only: the same bits everywhere.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["ERRORS", "PROB_BITS", "RANS_L", "decode_plane", "encode_words", "finished", "new_state", "padded", "padded_words", "decoder_tables", "states_for",
           "model_header", "MODEL_HEADER_ERRORS"]

PROB_BITS = 16
RANS_L = 1 << 31
_MAXC = 2047

ERRORS = {
    1: "the rANS words ran out",
    2: "the raw bit stream is truncated",
    3: "DC coefficient out of range",
    4: "end-of-block position out of range",
    5: "AC coefficient out of range",
    6: "a token of a context that has no model",
    7: "the rANS state is out of range",
}

# AC context tables (spec/codecs/dct.md §6.2): _BD[64 k + e] = (band(k) * 5 + ds(e - k)) * 4
_BAND = np.array([0] * 3 + [1] * 7 + [2] * 18 + [3] * 36, dtype=np.int64)
_DS = np.array([0, 1, 2, 2, 3, 3, 3, 3, 3, 3] + [4] * 54, dtype=np.int64)
_K, _E = np.divmod(np.arange(64 * 64), 64)
_BD = ((_BAND[_K] * 5 + _DS[np.maximum(_E - _K, 0)]) * 4).astype(np.int64)
_NB_EDGES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48], dtype=np.int64)
_WHITE_BUCKET = (np.searchsorted(_NB_EDGES, np.arange(64), side="right") - 1).astype(np.int64)
ZIGZAG = np.array([0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
                   13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
                   52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63], dtype=np.int64)
# context offsets inside a class (as in qpyr.codecs.dct._contexts)
_CTX_DC, _CTX_EB, _CTX_EW, _CTX_AC = 0, 1, 9, 21


def new_state(words: np.ndarray, nstates: int) -> np.ndarray:
    """Decoder state ``int64 [5]`` before the first plane: the ``nstates`` rANS states read
    from the first words (0, an invalid state, where one does not fit; a second state of ``L``
    when there is one state), the next word, raw bit position 0, ``nstates``."""
    xs = [int(words[k]) | (int(words[k + 1]) << 32) if words.size >= k + 2 else 0 for k in range(0, 2 * nstates, 2)]
    xs = [x if x < 1 << 63 else 0 for x in xs] + [RANS_L] * (2 - nstates)
    return np.array(xs + [2 * nstates, 0, nstates], dtype=np.int64)


def padded_words(data: bytes, offset: int) -> np.ndarray:
    """The rANS words of ``data`` from byte ``offset`` as ``uint32``, plus one zero pad word."""
    n = (len(data) - offset) // 4
    out = np.zeros(n + 1, dtype=np.uint32)
    out[:n] = np.frombuffer(data, dtype="<u4", count=n, offset=offset)
    return out


def padded(raw: bytes) -> np.ndarray:
    """The raw bit stream as ``uint8`` with the 3 zero bytes the decoder may read past its end."""
    out = np.zeros(len(raw) + 3, dtype=np.uint8)
    out[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def finished(state: np.ndarray, words: np.ndarray, raw_nbytes: int) -> bool:
    """True when a decode that returned 0 ended as the encoder began: state ``L``, every word
    read, and the raw bits used up to their last byte (the rest of it zero-padding)."""
    return (int(state[0]) == RANS_L and int(state[1]) == RANS_L and int(state[2]) == words.size
            and -(-int(state[3]) // 8) == raw_nbytes)


# -- encoder --------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _encode(ctx, tok, start, freq, nstates, out):  # type: ignore[no-untyped-def]
    """Push symbols last to first, symbol ``i`` on state ``i mod nstates`` (1 or 2); returns
    the index of the first word in ``out`` (the words from there on are in decode order: state
    0 low, high, [state 1 low, high,] then the renormalisation words newest first)."""
    n = ctx.shape[0]
    mask = nstates - 1
    xs = np.full(2, np.uint64(RANS_L), dtype=np.uint64)
    w = out.shape[0]  # words are written downwards from the end, so the buffer ends in decode order
    for i in range(n - 1, -1, -1):
        c = ctx[i]
        t = tok[i]
        x = xs[i & mask]
        f = np.uint64(freq[c, t])
        if x >= np.uint64((RANS_L >> PROB_BITS) << 32) * f:
            w -= 1
            out[w] = np.uint32(x & np.uint64(0xFFFFFFFF))
            x >>= np.uint64(32)
        xs[i & mask] = ((x // f) << np.uint64(PROB_BITS)) + (x % f) + np.uint64(start[c, t])
    for k in range(nstates - 1, -1, -1):
        out[w - 1] = np.uint32(xs[k] >> np.uint64(32))
        out[w - 2] = np.uint32(xs[k] & np.uint64(0xFFFFFFFF))
        w -= 2
    return w


def states_for(blocks: int) -> int:
    """How many interleaved rANS states a chunk of ``blocks`` blocks (all planes) uses: 2 from
    256 blocks on (two overlapping dependency chains decode faster), else 1 (8 bytes fewer)."""
    return 2 if blocks >= 256 else 1


def encode_words(ctx: np.ndarray, tok: np.ndarray, start: np.ndarray, freq: np.ndarray, nstates: int) -> np.ndarray:
    """rANS words (``uint32``, decode order) of the symbols ``(ctx[i], tok[i])`` under the
    models ``start``/``freq`` (``int64 [contexts, 17]``: cumulative start and frequency of each
    token, frequencies summing to ``2^16`` per used context). Every symbol's frequency must be
    non-zero."""
    ctx = np.ascontiguousarray(ctx, dtype=np.int64)
    tok = np.ascontiguousarray(tok, dtype=np.int64)
    out = np.empty(ctx.size + 2 * nstates, dtype=np.uint32)  # at most one word per symbol, plus the states
    w = _encode(ctx, tok, start, freq, nstates, out)
    return out[w:]


# -- decoder --------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _model_header(hb, levels):  # type: ignore[no-untyped-def]
    """Parse the model header (MSB-first bits: per context 1 bit present, then 5 bits ``T``
    and ``T + 1`` 5-bit levels) into ``levels`` (zeroed by the caller). Returns 0, or 1 for
    a truncated header, 2 for ``T >= 17``, 3 for ``L[T] = 0``."""
    nbits = hb.shape[0] * 8
    r = 0
    for c in range(levels.shape[0]):
        if r + 1 > nbits:
            return 1
        present = (hb[r >> 3] >> (7 - (r & 7))) & 1
        r += 1
        if not present:
            continue
        n = 0
        for _ in range(5):
            if r + 1 > nbits:
                return 1
            n = (n << 1) | ((hb[r >> 3] >> (7 - (r & 7))) & 1)
            r += 1
        if n >= levels.shape[1]:
            return 2
        if r + 5 * (n + 1) > nbits:
            return 1
        for t in range(n + 1):
            v = 0
            for _ in range(5):
                v = (v << 1) | ((hb[r >> 3] >> (7 - (r & 7))) & 1)
                r += 1
            levels[c, t] = v
        if levels[c, n] == 0:
            return 3
    return 0


MODEL_HEADER_ERRORS = {1: "model header is truncated", 2: "token alphabet > 17", 3: "empty model"}


def model_header(hb: bytes, contexts: int, tokens: int) -> tuple[np.ndarray, int]:
    """The model header -> ``(levels int64 [contexts, tokens], error code)`` (see
    :data:`MODEL_HEADER_ERRORS`)."""
    levels = np.zeros((contexts, tokens), dtype=np.int64)
    err = _model_header(np.frombuffer(hb, dtype=np.uint8), levels)
    return levels, int(err)


LUT_BITS = 8  # the decoder finds a token from the top 8 bits of its slot, then a step or two
_TOK = np.arange(17)
_TOK_NX = np.where(_TOK >= 8, _TOK - 5, 0).astype(np.int64)  # token -> extra bit count
_TOK_BASE = np.where(_TOK >= 8, 1 << _TOK_NX, _TOK).astype(np.int64)  # token -> magnitude sans extra bits
_TOK_SW = np.where(_TOK > 0, _TOK_NX + 1, 0).astype(np.int64)  # token -> extra bits + sign bit


@njit(cache=True, nogil=True)
def _build_lut(cum, lut):  # type: ignore[no-untyped-def]
    """``lut[c, b]`` = the token whose frequency range holds slot ``b << (16 - LUT_BITS)``."""
    shift = PROB_BITS - LUT_BITS
    for c in range(cum.shape[0]):
        t = 0
        for b in range(1 << LUT_BITS):
            lo = b << shift
            while lo >= cum[c, t + 1]:
                t += 1
            lut[c, b] = t


def decoder_tables(cum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decoder's form of the models ``cum`` (``int [contexts, 18]``, see
    :func:`qpyr.codecs.dct._models.rans_tables`): ``int32 [contexts, 19]`` cumulative
    frequencies with a pseudo-token 17 that holds the whole range of a context without a model
    (so decoding a symbol of it gives 17, which the decoder reports, with no test per symbol)
    and zero width elsewhere, and the token lookup table ``uint8 [contexts, 256]``."""
    c19 = np.full((cum.shape[0], 19), 1 << PROB_BITS, dtype=np.int32)
    c19[:, :18] = cum
    c19[cum[:, 17] == 0, :18] = 0
    lut = np.zeros((cum.shape[0], 1 << LUT_BITS), dtype=np.uint8)
    _build_lut(c19, lut)
    return c19, lut


@njit(cache=True, nogil=True, inline="always")
def _token(words, nw, cum, lut, c, x, p):  # type: ignore[no-untyped-def]
    """Pop one token of context ``c`` from state ``x`` (next word ``p``): ``(token, x, p)``;
    token 17 for a context without a model (see :func:`decoder_tables`). The
    renormalisation is branch-free: it reads ``words[min(p, nw)]`` (``words[nw]`` is a zero
    pad word) and the caller checks ``p <= nw`` at the end. (A test-and-return here instead
    of the pseudo-token made the decoder 2.5x slower.)"""
    slot = np.int64(x & np.uint64((1 << PROB_BITS) - 1))
    t = np.int64(lut[c, slot >> (PROB_BITS - LUT_BITS)])
    while slot >= cum[c, t + 1]:  # only where a token boundary falls inside the LUT cell
        t += 1
    s = np.int64(cum[c, t])
    x = np.uint64(cum[c, t + 1] - s) * (x >> np.uint64(PROB_BITS)) + np.uint64(slot - s)
    need = np.uint64(x < np.uint64(RANS_L))
    x = (x << (need << np.uint64(5))) | (np.uint64(words[min(p, nw)]) * need)
    return t, x, p + np.int64(need)


@njit(cache=True, nogil=True, inline="always")
def _value(raw, nbits, r, t, signed):  # type: ignore[no-untyped-def]
    """Token ``t`` -> ``(value, r)`` with its field read at raw bit ``r``: extra bits (tokens
    >= 8) then, for signed non-zero values, a sign bit; ``r`` = -1 when the bits ran out.
    ``raw`` carries 3 zero bytes past its ``nbits`` bits, so a field never reads past it.
    Branch-free but for the bounds check: a zero-width field reads as 0."""
    w = _TOK_SW[t] if signed else _TOK_NX[t]
    if r + w > nbits:
        return 0, -1
    i = r >> 3
    acc = (np.int64(raw[i]) << 16) | (np.int64(raw[i + 1]) << 8) | np.int64(raw[i + 2])
    f = (acc >> (24 - (r & 7) - w)) & ((np.int64(1) << w) - 1)
    if not signed:
        return _TOK_BASE[t] + f, r + w
    sgn = f & 1
    m = _TOK_BASE[t] + (f >> 1)
    return (m ^ -sgn) + sgn, r + w


@njit(cache=True, nogil=True)
def _decode_plane(words, nw, raw, nbits, cum, lut, base, out, eob, st):  # type: ignore[no-untyped-def]
    """One plane's symbols -> ``out`` (``int16 [by, bx, 64]``, natural order, zeroed by the
    caller) and ``eob`` (``int64 [by, bx]``). ``st`` = (the two rANS states, the next word,
    the raw bit position, the number of states) in and out; with two states the symbols
    alternate between them (``x`` decodes a symbol, then the two swap), so two dependency
    chains overlap. Returns the error code
    (0 = ok); running out of words is checked by the caller (``st[2] > nw``)."""
    by, bx = eob.shape
    x = np.uint64(st[0])
    y = np.uint64(st[1])
    p = st[2]
    r = st[3]
    two = st[4] == 2
    lim = np.uint64(1 << 63)
    if x < np.uint64(RANS_L) or x >= lim or y < np.uint64(RANS_L) or y >= lim:
        return 7
    # phase DC: residuals in raster order, undone as they come (column 0 from above)
    cdc = base + _CTX_DC
    for i in range(by):
        left = 0
        for j in range(bx):
            t, x, p = _token(words, nw, cum, lut, cdc, x, p)
            if t > 16:
                return 6
            if two:
                x, y = y, x
            v, r = _value(raw, nbits, r, t, True)
            if r < 0:
                return 2
            if j == 0:
                v += out[i - 1, 0, 0] if i > 0 else 0
            else:
                v += left
            if v > _MAXC or v < -_MAXC:
                return 3
            out[i, j, 0] = v
            left = v
    # phase EOB, black blocks ((i + j) even): context from the DC gradient
    for i in range(by):
        for j in range(i & 1, bx, 2):
            d = np.int64(out[i, j, 0])
            g = 0
            if i > 0:
                g += abs(np.int64(out[i - 1, j, 0]) - d)
            if i + 1 < by:
                g += abs(np.int64(out[i + 1, j, 0]) - d)
            if j > 0:
                g += abs(np.int64(out[i, j - 1, 0]) - d)
            if j + 1 < bx:
                g += abs(np.int64(out[i, j + 1, 0]) - d)
            b = 0
            while g > 0 and b < 7:
                g >>= 1
                b += 1
            t, x, p = _token(words, nw, cum, lut, base + _CTX_EB + b, x, p)
            if t > 16:
                return 6
            if two:
                x, y = y, x
            e, r = _value(raw, nbits, r, t, False)
            if r < 0:
                return 2
            if e > 63:
                return 4
            eob[i, j] = e
    # phase EOB, white blocks: context from the rounded mean of the black neighbours' EOB
    for i in range(by):
        for j in range(1 - (i & 1), bx, 2):
            s = 0
            n = 0
            if i > 0:
                s += eob[i - 1, j]
                n += 1
            if i + 1 < by:
                s += eob[i + 1, j]
                n += 1
            if j > 0:
                s += eob[i, j - 1]
                n += 1
            if j + 1 < bx:
                s += eob[i, j + 1]
                n += 1
            a = (2 * s + n) // (2 * n) if n else 0
            t, x, p = _token(words, nw, cum, lut, base + _CTX_EW + _WHITE_BUCKET[a], x, p)
            if t > 16:
                return 6
            if two:
                x, y = y, x
            e, r = _value(raw, nbits, r, t, False)
            if r < 0:
                return 2
            if e > 63:
                return 4
            eob[i, j] = e
    # phase AC: blocks in raster order, zigzag positions 1..eob
    cac = base + _CTX_AC
    for i in range(by):
        for j in range(bx):
            e = eob[i, j]
            if e == 0:
                continue
            nb = (eob[i - 1, j] if i > 0 else e) + (eob[i + 1, j] if i + 1 < by else e) \
                + (eob[i, j - 1] if j > 0 else e) + (eob[i, j + 1] if j + 1 < bx else e)
            blk = out[i, j]
            for k in range(1, e + 1):
                d = nb - 4 * k
                dn = (1 if d >= -8 else 0) + (1 if d >= 4 else 0) + (1 if d >= 24 else 0)
                t, x, p = _token(words, nw, cum, lut, cac + _BD[64 * k + e] + dn, x, p)
                if t > 16:
                    return 6
                if two:
                    x, y = y, x
                v, r = _value(raw, nbits, r, t, True)
                if r < 0:
                    return 2
                if v > _MAXC or v < -_MAXC:
                    return 5
                blk[ZIGZAG[k]] = v
    st[0] = np.int64(x)
    st[1] = np.int64(y)
    st[2] = p
    st[3] = r
    return 0


def decode_plane(words: np.ndarray, raw: np.ndarray, cum: np.ndarray, lut: np.ndarray, base: int, by: int,
                 bx: int, state: np.ndarray) -> tuple[np.ndarray, int]:
    """Decode one plane of ``by x bx`` blocks whose contexts start at ``base``: returns
    ``(int16 [by, bx, 64] natural-order coefficients, error code)``. ``words`` is ``uint32``
    followed by one zero pad word (see :func:`padded_words`),
    ``raw`` ``uint8`` followed by 3 zero bytes (see :func:`padded`), ``cum`` ``int64 [contexts, 18]`` cumulative frequencies (row ``c``: 0, ...,
    ``2^16``) and ``lut`` from :func:`decoder_tables`. ``state``
    (from :func:`new_state`, its first word set by the caller) carries over between planes."""
    out = np.zeros((by, bx, 64), dtype=np.int16)
    eob = np.zeros((by, bx), dtype=np.int64)
    nw = words.size - 1
    err = _decode_plane(words, nw, raw, 8 * (raw.size - 3), cum, lut, base, out, eob, state)
    if not err and state[2] > nw:
        err = 1
    return out, int(err)
