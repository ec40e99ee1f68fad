"""Tests for the qpyr.lossless codec (qpyr/codecs/lossless.py, spec/codecs/lossless.md).

The golden vectors are written by ``tools/make_golden.py lossless`` (only when the format changes
on purpose, with a version bump).
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import zlib

import numpy as np
import pytest
from codec_kit import (
    VECTORS,
    check_config,
    check_golden,
    check_hostile,
    check_round_trip,
    golden_cases,
    make_golden,
    photo,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpyr.codecs.lossless import COLORS, HEADER_SIZE, MAGIC, NAME, PREDICTORS, LosslessCodec, read_header
from qpyr.errors import CodecError

DTYPES = ("uint8", "uint16", "int8", "int16")
FAST = 3  # zstd level for the grad/left/none predictors: keeps property tests quick


def _binned16(a: np.ndarray) -> np.ndarray:
    """2x2 sums of a uint8 [C, H, W] photo: real 10-bit content in uint16."""
    c, h, w = a.shape
    b = a[:, : h // 2 * 2, : w // 2 * 2].astype(np.uint16)
    return np.ascontiguousarray(b[:, 0::2, 0::2] + b[:, 1::2, 0::2] + b[:, 0::2, 1::2] + b[:, 1::2, 1::2])


def _content(kind: str, shape: tuple[int, int, int], dtype: str, seed: int) -> np.ndarray:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    if kind == "const":
        return np.full(shape, rng.integers(info.min, info.max, endpoint=True), dtype=dtype)
    if kind == "extremes":
        return rng.choice(np.array([info.min, info.max, 0], dtype=dtype), size=shape)
    if kind == "small":  # fits in 8 bits after the sign flip / as is
        lo = info.min if info.min < 0 else 0
        return rng.integers(lo, lo + 255, size=shape, endpoint=True).astype(dtype)
    # "smooth": ramps plus a little noise, wrapping around the dtype range
    c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(yy * (3 + k) + xx * (5 - k)) * (info.max // 97 + 1) for k in range(c)])
    v = base + rng.integers(-2, 3, size=shape) + info.min
    return (v.astype(np.int64) - info.min) % (int(info.max) - info.min + 1) + info.min


def _round_trip(codec: LosslessCodec, a: np.ndarray) -> bytes:
    (data,) = check_round_trip(codec, [a], contiguous=True)
    return data


# -- round trips -----------------------------------------------------------------------------


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(DTYPES),
    c=st.integers(1, 4),
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    kind=st.sampled_from(["noise", "const", "extremes", "small", "smooth"]),
    predictor=st.sampled_from(sorted(PREDICTORS)),
    color=st.sampled_from(["auto", *COLORS]),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_property(dtype: str, c: int, h: int, w: int, kind: str, predictor: str, color: str, seed: int) -> None:
    a = _content(kind, (c, h, w), dtype, seed).astype(dtype)
    data = _round_trip(LosslessCodec(predictor=predictor, color=color, level=FAST), a)
    hd = read_header(data)
    assert hd["shape"] == (c, h, w) and hd["dtype"] == np.dtype(dtype)
    assert hd["predictor"] == PREDICTORS[predictor]
    if c < 3:
        assert hd["color"] == 0
    elif color != "auto":
        assert hd["color"] == COLORS[color]


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 1), (4, 1, 1), (1, 1, 9), (3, 1, 257), (2, 301, 1), (4, 17, 13),
                                   (3, 33, 65)])
@pytest.mark.parametrize("predictor", sorted(PREDICTORS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_edge_shapes(shape: tuple[int, int, int], predictor: str, dtype: str) -> None:
    for kind in ("noise", "smooth"):
        _round_trip(LosslessCodec(predictor=predictor, level=FAST), _content(kind, shape, dtype, 7).astype(dtype))


def test_round_trip_non_native_and_non_contiguous_input() -> None:
    a = _binned16(photo(64, 96))
    codec = LosslessCodec()
    big = a.astype(">u2")
    assert codec.encode(big) == codec.encode(a)
    np.testing.assert_array_equal(codec.decode(codec.encode(big), a.shape, ">u2"), a)
    view = photo(40, 60)[:, ::2, ::3]
    assert not view.flags.c_contiguous
    _round_trip(codec, view)


def test_oversize_jpegls_dimensions_use_lse() -> None:
    """C·H > 65535 stacked rows: JPEG-LS needs its LSE oversize-dimension segment."""
    a = (np.arange(3 * 22000 * 2, dtype=np.int64) % 251).astype(np.uint8).reshape(3, 22000, 2)
    _round_trip(LosslessCodec(color="none"), a)
    w = np.zeros((1, 2, 70000), np.uint16)
    w[0, 1, ::7] = 1000
    _round_trip(LosslessCodec(), w)


def test_incompressible_input_fits() -> None:
    rng = np.random.default_rng(1)
    for dt in ("uint8", "uint16"):
        a = rng.integers(0, np.iinfo(dt).max, size=(3, 128, 128), endpoint=True, dtype=dt)
        data = _round_trip(LosslessCodec(), a)
        assert len(data) < 1.2 * a.nbytes


# -- real photos -----------------------------------------------------------------------------


def _png_size(hwc: np.ndarray) -> int:
    from PIL import Image

    bio = io.BytesIO()
    Image.fromarray(hwc).save(bio, "PNG", optimize=True)
    return len(bio.getvalue())


def test_photos_round_trip_and_beat_png_and_zstd(photos: dict[str, np.ndarray]) -> None:
    import zstandard

    codec = LosslessCodec()
    for name, hwc in photos.items():
        a = np.ascontiguousarray(hwc.transpose(2, 0, 1))
        n = len(_round_trip(codec, a))
        png = _png_size(hwc)
        zst = len(zstandard.ZstdCompressor(level=19).compress(a.tobytes()))
        # measured (tools/bench_lossless.py): 0.71..0.83 of PNG, 0.53..0.65 of zstd-19
        assert n < 0.9 * png, (name, n, png)
        assert n < 0.75 * zst, (name, n, zst)


def test_photo_crops_all_predictors(small_photos: dict[str, np.ndarray]) -> None:
    sizes = {}
    for pred in PREDICTORS:
        codec = LosslessCodec(predictor=pred, level=FAST)
        sizes[pred] = sum(len(_round_trip(codec, np.ascontiguousarray(a.transpose(2, 0, 1))))
                          for a in small_photos.values())
    assert sizes["med"] < sizes["grad"] < sizes["none"]


def test_auto_color_is_smallest_for_med() -> None:
    a = photo(48, 64)
    auto = len(LosslessCodec().encode(a))
    fixed = {c: len(LosslessCodec(color=c).encode(a)) for c in COLORS}
    assert auto == min(fixed.values())
    assert min(fixed["hp1"], fixed["hp2"], fixed["rct"]) < fixed["none"]


def test_16bit_photos() -> None:
    import zstandard

    a = _binned16(photo(128, 192))
    assert a.max() > 255
    for pred in ("med", "grad"):
        data = _round_trip(LosslessCodec(predictor=pred, level=FAST), a)
        assert read_header(data)["bits"] == 16
        assert len(data) < len(zstandard.ZstdCompressor(level=19).compress(a.tobytes()))
    # RGBA with an alpha plane; signed
    rgba = np.concatenate([a, np.full((1, *a.shape[1:]), 65535, np.uint16)])
    _round_trip(LosslessCodec(), rgba)
    _round_trip(LosslessCodec(), (a.astype(np.int32) - 600).astype(np.int16))


def test_16bit_with_8bit_range_is_coded_at_8_bits() -> None:
    a = photo(32, 32).astype(np.uint16)
    data = _round_trip(LosslessCodec(), a)
    assert read_header(data)["bits"] == 8
    assert len(data) == len(LosslessCodec().encode(a.astype(np.uint8)))


# -- configuration ---------------------------------------------------------------------------


def test_config_defaults_and_round_trip() -> None:
    assert LosslessCodec().to_dict() == {"name": NAME, "configuration": {}}
    assert LosslessCodec.name == NAME
    for pred in PREDICTORS:
        for color in ["auto", *COLORS]:
            for level in (1, 19, 22):
                c = LosslessCodec(predictor=pred, color=color, level=level)
                d = check_config(c)
                assert set(d["configuration"]) <= {"predictor", "color", "level"}
                assert json.loads(json.dumps(d)) == d
                assert LosslessCodec.from_dict(d) == c
    assert LosslessCodec(level=5).to_dict() == {"name": NAME, "configuration": {"level": 5}}
    assert LosslessCodec.from_dict({"name": NAME}) == LosslessCodec()
    assert LosslessCodec().zarr_chain(np.dtype("uint8")) == [{"name": NAME, "configuration": {}}]


def test_config_rejects_unknown_and_bad_values() -> None:
    with pytest.raises(CodecError, match="quality"):
        LosslessCodec.from_dict({"name": NAME, "configuration": {"quality": 3, "level": 2}})
    with pytest.raises(CodecError, match="extra_field"):
        LosslessCodec.from_dict({"name": NAME, "configuration": {}, "extra_field": 1})
    with pytest.raises(CodecError, match="qpyr.lossless"):
        LosslessCodec.from_dict({"name": "zstd", "configuration": {}})
    with pytest.raises(CodecError):
        LosslessCodec.from_dict({"name": NAME, "configuration": [1]})
    for bad in ({"predictor": "paeth"}, {"predictor": 3}, {"color": "ycbcr"}, {"level": 0}, {"level": 23},
                {"level": True}, {"level": "3"}, {"level": 2.0}):
        with pytest.raises(CodecError):
            LosslessCodec(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        LosslessCodec("med")  # type: ignore[misc]  # keyword-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        LosslessCodec().level = 3  # type: ignore[misc]
    assert isinstance(CodecError("x"), ValueError)


def test_encode_rejects_bad_input() -> None:
    codec = LosslessCodec()
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((5, 2, 2), np.uint8), np.zeros((0, 2, 2), np.uint8),
                np.zeros((1, 0, 2), np.uint8), np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 2), np.uint32),
                np.zeros((1, 2, 2), bool)):
        with pytest.raises(CodecError):
            codec.encode(bad)


# -- decode validation and robustness --------------------------------------------------------


def _fix_crc(data: bytes) -> bytes:
    crc = zlib.crc32(data[HEADER_SIZE:], zlib.crc32(data[: HEADER_SIZE - 4]))
    return data[: HEADER_SIZE - 4] + struct.pack("<I", crc) + data[HEADER_SIZE:]


_SAMPLES = {
    "med8": (LosslessCodec(), photo(12, 10)),
    "med16": (LosslessCodec(), _binned16(photo(24, 20))),
    "grad8": (LosslessCodec(predictor="grad", level=FAST), photo(12, 10)),
    "left16": (LosslessCodec(predictor="left", color="rct", level=FAST), _binned16(photo(24, 20)).astype(np.int16)),
    "none1": (LosslessCodec(predictor="none", level=FAST), photo(5, 7)[:1].copy()),
}
_ENCODED = {k: (c.encode(a), a) for k, (c, a) in _SAMPLES.items()}


def test_decode_checks_shape_and_dtype_before_anything() -> None:
    data, a = _ENCODED["med8"]
    codec = LosslessCodec()
    for shape, dtype in (((3, 12, 11), "uint8"), ((3, 11, 10), "uint8"), ((1, 12, 10), "uint8"),
                         ((3, 12, 10), "uint16"), ((3, 12, 10), "int8"), ((3, 120, 10), "uint8")):
        with pytest.raises(CodecError, match="expected"):
            codec.decode(data, shape, dtype)
    with pytest.raises(CodecError):
        codec.decode(data, (3, 12), "uint8")
    with pytest.raises(CodecError):
        codec.decode(data, a.shape, "float32")


def test_decode_rejects_hostile_header_before_allocating() -> None:
    data, a = _ENCODED["med8"]
    # a header that declares a gigantic chunk: rejected against the expected shape, no allocation
    huge = bytearray(data)
    struct.pack_into("<II", huge, 12, 2**31, 2**31)
    with pytest.raises(CodecError, match="expected"):
        LosslessCodec().decode(_fix_crc(bytes(huge)), a.shape, a.dtype)
    # a JPEG-LS frame bigger than the header: rejected before CharLS decodes it
    big = LosslessCodec().encode(photo(48, 40))
    spliced = bytearray(data[:HEADER_SIZE] + big[HEADER_SIZE:])
    struct.pack_into("<I", spliced, 20, len(big) - HEADER_SIZE)
    with pytest.raises(CodecError, match="JPEG-LS frame"):
        LosslessCodec().decode(_fix_crc(bytes(spliced)), a.shape, a.dtype)
    # a zstd frame that declares more content than the header's shape
    zdata, za = _ENCODED["grad8"]
    zbig = LosslessCodec(predictor="grad", level=FAST).encode(photo(48, 40))
    spliced = bytearray(zdata[:HEADER_SIZE] + zbig[HEADER_SIZE:])
    struct.pack_into("<I", spliced, 20, len(zbig) - HEADER_SIZE)
    with pytest.raises(CodecError, match="zstd"):
        LosslessCodec().decode(_fix_crc(bytes(spliced)), za.shape, za.dtype)


def test_decode_rejects_each_header_field() -> None:
    data, a = _ENCODED["med8"]
    for off, val in ((0, ord("X")), (4, 2), (5, 9), (6, 7), (7, 0), (7, 9), (8, 0), (8, 5), (9, 12), (9, 16),
                     (10, 1), (11, 1)):
        bad = bytearray(data)
        bad[off] = val
        with pytest.raises(CodecError):
            LosslessCodec().decode(_fix_crc(bytes(bad)), a.shape, a.dtype)
    # a colour transform on a 1-channel chunk is invalid
    g, ga = _ENCODED["none1"]
    bad = bytearray(g)
    bad[6] = 1
    with pytest.raises(CodecError):
        LosslessCodec().decode(_fix_crc(bytes(bad)), ga.shape, ga.dtype)
    with pytest.raises(CodecError, match="CRC"):
        LosslessCodec().decode(data[:-1] + bytes([data[-1] ^ 1]), a.shape, a.dtype)
    assert data[:4] == MAGIC


def _restamp(blob: bytes) -> bytes:
    """Make the header's payload length and CRC agree with a tampered payload."""
    return _fix_crc(blob[:20] + struct.pack("<I", len(blob) - HEADER_SIZE) + blob[24:])


def test_truncated_jpegls_payload_fails_fast(monkeypatch) -> None:
    """CharLS 2.4 spends seconds on some streams that end mid-scan (this one: ~3 s); the
    decoder requires the EOI marker at the end, so a CRC-valid truncation is rejected before
    CharLS ever sees it. (How long rejections take is measured by tools/bench_lossless.py
    --hostile, not asserted here: timings on shared machines are noise.)"""
    import imagecodecs

    calls: list[int] = []
    real = imagecodecs.jpegls_decode

    def spy(data, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(imagecodecs, "jpegls_decode", spy)
    good, a = _ENCODED["med8"]
    for blob in (good[:118], good[: HEADER_SIZE + 40]):
        with pytest.raises(CodecError, match="does not end with EOI"):
            LosslessCodec().decode(_restamp(blob), a.shape, a.dtype)
    assert calls == []  # rejected on the marker check, CharLS never ran
    # ending in EOI, the truncated scan reaches CharLS, which fails at the marker
    with pytest.raises(CodecError):
        LosslessCodec().decode(_restamp(good[:118] + b"\xff\xd9"), a.shape, a.dtype)
    assert len(calls) == 1


def test_zstd_payload_must_be_exactly_one_frame() -> None:
    good, a = _ENCODED["grad8"]
    for blob in (good + b"\x00", good + good[HEADER_SIZE:], good[:-1]):
        with pytest.raises(CodecError, match="zstd"):
            LosslessCodec().decode(_restamp(blob), a.shape, a.dtype)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=200), prefix=st.booleans(), which=st.sampled_from(sorted(_SAMPLES)))
def test_fuzz_random_bytes(data: bytes, prefix: bool, which: str) -> None:
    good, a = _ENCODED[which]
    blob = good[:HEADER_SIZE] + data if prefix else data
    if blob == good:
        return
    check_hostile(LosslessCodec(), [blob], a.shape, a.dtype, must_raise=True)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    which=st.sampled_from(sorted(_SAMPLES)),
    op=st.sampled_from(["flip", "byte", "truncate", "extend", "splice"]),
    pos=st.integers(0, 10**6),
    val=st.integers(0, 255),
    fix_crc=st.booleans(),
)
def test_fuzz_corrupted_encodings(which: str, op: str, pos: int, val: int, fix_crc: bool) -> None:
    """Corrupt, truncated or extended encodings raise CodecError; with the CRC re-stamped the
    damage reaches CharLS / zstd, which must still raise or return a chunk of the right shape."""
    good, a = _ENCODED[which]
    b = bytearray(good)
    i = pos % len(b)
    if op == "flip":
        b[i] ^= 1 << (val % 8)
    elif op == "byte":
        b[i] = val if b[i] != val else val ^ 0xFF
    elif op == "truncate":
        b = b[:i]
    elif op == "extend":
        b += bytes([val]) * (1 + pos % 7)
    else:
        b = b[:i] + b[i + 1 + val % 16 :] + b[i : i + 1 + val % 16]  # move a run to the end
        if bytes(b) == good:
            return
    blob = bytes(b)
    if fix_crc and len(blob) >= HEADER_SIZE and blob[:4] == MAGIC:
        if len(blob) - HEADER_SIZE != struct.unpack_from("<I", blob, 20)[0]:
            blob = blob[:20] + struct.pack("<I", len(blob) - HEADER_SIZE) + blob[24:]
        check_hostile(LosslessCodec(), [_fix_crc(blob)], a.shape, a.dtype)
        return
    check_hostile(LosslessCodec(), [blob], a.shape, a.dtype, must_raise=True)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(CodecError):
        LosslessCodec().decode("QPLL", (1, 1, 1), "uint8")  # type: ignore[arg-type]


# -- golden vectors --------------------------------------------------------------------------

GOLDEN = golden_cases("lossless")


def test_golden_vectors_exist() -> None:
    assert GOLDEN == sorted(make_golden().CODEC_SETS["lossless"].cases())


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_vector(name: str) -> None:
    # re-encoding reproduces the committed bytes (for "med" this pins the CharLS output too:
    # a CharLS upgrade that changes its bytes fails here while decoding still passes)
    check_golden(LosslessCodec, VECTORS / "lossless" / name)


# -- decode-speed rewrite of the colour inverse stays exact ---------------------------------


def _inverse_color_reference(p: np.ndarray, cid: int, bits: int) -> np.ndarray:
    """The colour inverses written out plainly (one temporary per operator)."""
    ut = {8: np.uint8, 16: np.uint16}[bits]
    st_ = {8: np.int8, 16: np.int16}[bits]
    half = ut(1 << (bits - 1))
    p = p.copy()
    p0, p1, p2 = p[0].copy(), p[1] - half, p[2] - half
    if cid == 1:
        p[0], p[1], p[2] = p1 + p0, p0, p2 + p0
    elif cid == 2:
        r = p1 + p0
        p[0], p[1], p[2] = r, p0, p2 + ((r >> 1) + (p0 >> 1) + (r & p0 & 1))
    elif cid == 3:
        q = (p1.view(st_).astype(np.int32) + p2.view(st_)) >> 2
        g = p0 - q.astype(st_).view(ut)
        p[0], p[1], p[2] = p2 + g, g, p1 + g
    return p


@pytest.mark.parametrize("bits", [8, 16])
def test_inverse_color_matches_plain_reference(bits: int) -> None:
    from qpyr.codecs import lossless

    ut = np.uint8 if bits == 8 else np.uint16
    rng = np.random.default_rng(bits)
    top = (1 << bits) - 1
    for c in (3, 4):
        for t in range(6):
            shape = (c, int(rng.integers(1, 40)), int(rng.integers(1, 40)))
            p = rng.integers(0, top + 1, shape).astype(ut)
            if t % 2:
                p = rng.choice(np.array([0, 1, top, top // 2, top // 2 + 1], dtype=ut), shape)
            for cid in COLORS.values():
                got = lossless._inverse_color(p.copy(), cid, bits)
                np.testing.assert_array_equal(got, _inverse_color_reference(p, cid, bits))
                np.testing.assert_array_equal(lossless._inverse_color(lossless._forward_color(p, cid, bits).copy(), cid, bits), p)
