"""The ``ctx`` entropy coder of ``qpyr.dct`` stream version 4 (``qpyr/_kernels/rans.py``,
``qpyr/codecs/dct/_ctx.py``): integer models, encode/decode round trips on arbitrary
coefficients, the version-2 streams it replaced, and a fuzz of the compiled decoder."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from codec_kit import VECTORS, check_golden, check_hostile, golden_cases
from codec_kit import photo as _photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpyr.codecs.dct import VERSION_CTX, DctCodec
from qpyr.codecs.dct._ctx import _ctx_decode, _entropy_encode
from qpyr.codecs.dct._header import _parse_header
from qpyr.codecs.dct._models import RANS_BITS, default_levels, rans_tables
from qpyr.errors import CodecError

# -- models ----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(st.integers(0, 31), min_size=17, max_size=17), min_size=1, max_size=8))
def test_rans_tables_sum_to_the_precision_and_keep_every_present_token(rows: list[list[int]]) -> None:
    lv = np.array(rows, dtype=np.int64)
    start, freq, cum = rans_tables(lv)
    used = (lv > 0).any(axis=1)
    assert (freq.sum(axis=1)[used] == 1 << RANS_BITS).all()
    assert (freq[~used] == 0).all() and (cum[~used] == 0).all()
    assert ((freq > 0) == (lv > 0)).all()  # present tokens >= 1, absent ones 0
    np.testing.assert_array_equal(start, cum[:, :-1])
    np.testing.assert_array_equal(np.diff(cum, axis=1), freq)


def test_rans_tables_follow_the_level_weights() -> None:
    """A level step of 2 halves the frequency (p ~ 2^(L/2)), up to the rounding of one unit."""
    _, freq, _ = rans_tables(np.array([[31, 29, 27, 25] + [0] * 13]))
    f = freq[0, :4]
    assert f.sum() == 1 << RANS_BITS
    np.testing.assert_allclose(f[1:] / f[:-1], 0.5, atol=2e-3)
    _, one, _ = rans_tables(np.array([[7] + [0] * 16]))  # one token: all of the range
    assert one[0, 0] == 1 << RANS_BITS
    assert (rans_tables(default_levels())[1] >= 1).all()  # default models: every token possible


# -- round trips -----------------------------------------------------------------------------


@st.composite
def _planes(draw: st.DrawFn) -> tuple[list[np.ndarray], list[int]]:
    """1-3 planes of random sparse coefficients (|v| <= 2047, any EOB), natural order."""
    n = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([0.0, 0.02, 0.2, 1.0]))
    big = draw(st.booleans())
    planes = []
    for _ in range(n):
        by, bx = draw(st.integers(1, 24)), draw(st.integers(1, 24))
        q = rng.integers(-2047 if big else -40, 2048 if big else 41, (by, bx, 64))
        q[rng.random((by, bx, 64)) > density] = 0
        q[..., 0] = rng.integers(-300, 300, (by, bx))
        planes.append(q.astype(np.int16))
    classes = [draw(st.integers(0, 1)) for _ in range(n)]
    return planes, classes


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=_planes())
def test_entropy_round_trip_of_arbitrary_coefficients(case: tuple[list[np.ndarray], list[int]]) -> None:
    planes, classes = case
    body, default = _entropy_encode(planes, classes)
    got = _ctx_decode(b"\0" + body, 1, default, [q.shape[:2] for q in planes], classes)
    for a, b in zip(got, planes, strict=True):
        np.testing.assert_array_equal(a, b)


def test_both_state_counts_round_trip_on_a_photo() -> None:
    """Chunks of < 256 blocks use one rANS state, larger ones two (spec/codecs/dct.md §6.4)."""
    for h, w in ((24, 40), (128, 160), (256, 256)):
        x = _photo(h, w)
        for kw in ({"quality": 75}, {"quality": 95, "chroma": "444"}):
            codec = DctCodec(**kw)  # type: ignore[arg-type]
            enc = codec.encode(x)
            assert enc[4] == VERSION_CTX
            got = codec.decode_coefficients(enc, x.shape)
            want, _ = codec._coefficients(x)
            for a, b in zip(got.planes, want, strict=True):  # type: ignore[union-attr]
                np.testing.assert_array_equal(a, b)


def test_encoder_bytes_are_the_same_in_another_process() -> None:
    code = ("import sys, numpy as np; from qpyr.codecs.dct import DctCodec; "
            "x = np.random.default_rng(4).integers(0, 256, (3, 96, 80), dtype=np.uint8); "
            "sys.stdout.write(DctCodec(quality=60).encode(x).hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, NUMBA_NUM_THREADS="1")).stdout
    x = np.random.default_rng(4).integers(0, 256, (3, 96, 80), dtype=np.uint8)
    assert bytes.fromhex(out) == DctCodec(quality=60).encode(x)


# -- version 2 streams -----------------------------------------------------------------------

LEGACY = golden_cases("dct-v2")


def test_version_2_vectors_are_kept() -> None:
    assert len(LEGACY) >= 6
    assert all((VECTORS / "dct-v2" / n / "encoded.bin").read_bytes()[4] == 2 for n in LEGACY)


@pytest.mark.parametrize("name", LEGACY)
def test_version_2_vector_decodes_bit_exactly(name: str) -> None:
    check_golden(DctCodec, VECTORS / "dct-v2" / name, reencode=False)


def test_version_1_stream_decodes_like_its_version_2_twin() -> None:
    """Version 1 is the version-2 layout without flags bits 3 and 4 (an own-models stream)."""
    d = VECTORS / "dct-v2" / "05-noise-444-own-models"
    v2 = (d / "encoded.bin").read_bytes()
    shape = np.load(d / "input.npy").shape
    assert not v2[5] & 24
    v1 = v2[:4] + b"\x01" + v2[5:]
    np.testing.assert_array_equal(DctCodec().decode(v1, shape), DctCodec().decode(v2, shape))


# -- hostile streams -------------------------------------------------------------------------


def test_kernel_reports_a_context_without_a_model() -> None:
    from qpyr._kernels import rans

    cum, lut = rans.decoder_tables(np.zeros((202, 18), np.int64))  # no context has a model
    words = rans.padded_words(np.array([rans.RANS_L, 0], "<u4").tobytes(), 0)
    _, err = rans.decode_plane(words, rans.padded(b""), cum, lut, 0, 2, 2, rans.new_state(words, 1))
    assert rans.ERRORS[err] == "a token of a context that has no model"


def test_streams_that_do_not_end_where_their_symbols_do_are_refused() -> None:
    x = _photo(40, 48)
    enc = DctCodec(quality=80).encode(x)
    pos = _parse_header(enc)[5]
    nh, nr, na = struct.unpack_from("<III", enc, pos)
    longer = enc[:pos] + struct.pack("<III", nh, nr, na + 4) + enc[pos + 12:] + b"\0\0\0\0"
    with pytest.raises(CodecError, match="does not end"):
        DctCodec().decode(longer, x.shape)
    raw_longer = enc[:pos] + struct.pack("<III", nh, nr + 1, na) + enc[pos + 12 : pos + 12 + nh + nr] + b"\0" + \
        enc[pos + 12 + nh + nr:]
    with pytest.raises(CodecError, match="does not end"):
        DctCodec().decode(raw_longer, x.shape)


_HOSTILE_BASE = [
    (DctCodec(quality=75), _photo(24, 40)),  # default models, one state
    (DctCodec(quality=90, chroma="444"), _photo(96, 64)),  # own models, two states
    (DctCodec(quality=40), np.random.default_rng(9).integers(0, 256, (1, 136, 120), dtype=np.uint8)),  # grey
]
_HOSTILE = [(c.encode(x), x.shape) for c, x in _HOSTILE_BASE]


@settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck))
@given(which=st.integers(0, 2), where=st.sampled_from(["any", "entropy", "words"]),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.integers(0, 10**6))
def test_fuzz_compiled_decoder(which: int, where: str, edits: list[tuple[int, int]], cut: int) -> None:
    """1,200 corrupted version-4 streams: a CodecError or a chunk of the right shape, never a
    crash or a hang (the decoder's loops are bounded by the plane geometry)."""
    enc, shape = _HOSTILE[which]
    buf = bytearray(enc)
    lo = {"any": 0, "entropy": 17 + 12, "words": len(enc) - max(4, (len(enc) - 29) // 3)}[where]
    for pos, val in edits:
        buf[lo + pos % (len(buf) - lo)] = val
    if cut % 5 == 0:
        buf = buf[: cut % len(buf)]
    check_hostile(DctCodec(), [bytes(buf)], shape, np.uint8)
