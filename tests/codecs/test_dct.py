"""Tests for the qpyr.dct codec (qpyr/codecs/dct.py) and its colour maths (qpyr/codecs/color.py)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
import torch
from codec_kit import VECTORS, check_config, check_golden, check_hostile, check_round_trip, golden_cases
from codec_kit import photo as _photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpyr.codecs import DctChunkCodec, color
from qpyr.codecs.dct import ZIGZAG, DctCodec, DctCoefficients, JfifStream, ijg_tables
from qpyr.errors import CodecError

# -- round trips -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    c=st.integers(1, 4),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    chroma=st.sampled_from(["420", "444"]),
    seed=st.integers(0, 2**32 - 1),
    entropy=st.sampled_from(["ctx", "fast"]),
)
def test_round_trip_any_shape(c: int, h: int, w: int, chroma: str, seed: int, entropy: str) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (c, h, w), dtype=np.uint8)
    if chroma == "420" and c == 3:
        x[1] = x[2] = x[0]  # grey: no chroma for 4:2:0 to lose
    codec = DctCodec(quality=100, chroma=chroma, entropy=entropy)  # type: ignore[arg-type]
    (data,) = check_round_trip(codec, [x], exact=False, atol=8)
    y = codec.decode(data, x.shape)
    assert bool(data[5] & 8) == (entropy == "fast")
    assert y.dtype == np.uint8 and y.shape == x.shape
    err = np.abs(y.astype(np.int64) - x)
    # all quantisation steps are 1: each coefficient is off by <= 1/2 (a little more after RDO)
    assert err.max() <= 8
    assert err.mean() <= 1.5


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 50), w=st.integers(1, 50), chroma=st.sampled_from(["420", "444"]))
def test_smooth_image_bounded_error_with_edges(h: int, w: int, chroma: str) -> None:
    yy, xx = np.mgrid[0:h, 0:w]
    x = np.stack([(2 * yy + 3 * xx) % 256, 128 + 0 * xx, (255 - 3 * yy) % 256]).astype(np.uint8)
    x = np.clip(x, 0, 255).astype(np.uint8)
    smooth = np.stack([np.full((h, w), v, np.uint8) for v in (30, 140, 220)])
    codec = DctCodec(quality=90, chroma=chroma)  # type: ignore[arg-type]
    y = codec.decode(codec.encode(smooth), smooth.shape)
    assert np.abs(y.astype(int) - smooth).max() <= 2  # padding leaves no edge artefacts
    assert codec.decode(codec.encode(x), x.shape).shape == x.shape


def test_quality_monotone_on_photo() -> None:
    from skimage.metrics import structural_similarity

    x = _photo()
    sizes, ssims = [], []
    for q in (20, 40, 60, 80, 95):
        codec = DctCodec(quality=q)
        b = codec.encode(x)
        y = codec.decode(b, x.shape)
        sizes.append(len(b))
        ssims.append(
            structural_similarity(
                x.transpose(1, 2, 0),
                y.transpose(1, 2, 0),
                channel_axis=-1,
                data_range=255,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
        )
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert ssims == sorted(ssims)
    assert ssims[-1] > 0.97


def _numpy_reconstruct(p: DctCoefficients) -> np.ndarray:
    """Independent float64 numpy reference of the torch half (spec/codecs/dct.md §5)."""
    n = np.arange(8)
    d = np.cos((2 * n[None, :] + 1) * n[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    planes = []
    for coef, t in zip(p.planes, p.plane_table, strict=False):
        by, bx, _ = coef.shape
        blocks = (coef.astype(np.float64) * p.tables[t]).reshape(by, bx, 8, 8)
        pix = np.einsum("ku,yxkl,lv->yxuv", d, blocks, d) + 128
        planes.append(pix.transpose(0, 2, 1, 3).reshape(by * 8, bx * 8))
    c, h, w = p.shape
    if not p.ycbcr:
        return np.clip(np.stack(planes)[:, :h, :w], 0, 255)
    y, cb, cr = planes
    if p.chroma420:

        def up(a: np.ndarray, axis: int) -> np.ndarray:
            a = np.moveaxis(a, axis, 0)
            prev = np.concatenate([a[:1], a[:-1]])
            nxt = np.concatenate([a[1:], a[-1:]])
            out = np.stack([0.75 * a + 0.25 * prev, 0.75 * a + 0.25 * nxt], 1)
            return np.moveaxis(out.reshape(-1, *a.shape[1:]), 0, axis)

        cb, cr = (up(up(ch, 0), 1) for ch in (cb, cr))
    rgb = np.stack(
        [
            y + 1.402 * (cr - 128),
            y - 0.344136286 * (cb - 128) - 0.714136286 * (cr - 128),
            y + 1.772 * (cb - 128),
        ]
    )
    return np.clip(rgb[:, :h, :w], 0, 255)


@pytest.mark.parametrize("chroma", ["420", "444"])
@pytest.mark.parametrize("shape", [(3, 37, 45), (1, 20, 9), (4, 8, 8)])
def test_torch_reconstruct_matches_numpy_reference(chroma: str, shape: tuple[int, int, int]) -> None:
    x = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    x[:, : shape[1] // 2] = _photo(shape[1], shape[2])[: shape[0], : shape[1] // 2] if shape[0] <= 3 else 7
    codec = DctCodec(quality=70, chroma=chroma)  # type: ignore[arg-type]
    data = codec.encode(x)
    payload = codec.decode_coefficients(data, shape)
    ref = _numpy_reconstruct(payload)
    got = codec.reconstruct(payload, "cpu")
    assert got.dtype == torch.float32 and tuple(got.shape) == shape
    np.testing.assert_allclose(got.numpy(), ref, atol=2e-3)
    dec = codec.decode(data, shape)
    np.testing.assert_array_equal(dec, torch.floor(got + 0.5).to(torch.uint8).numpy())  # half up
    np.testing.assert_array_equal(dec, codec.reconstruct(payload, "cpu", torch.uint8).numpy())
    assert np.abs(dec.astype(int) - np.round(ref)).max() <= 1


@pytest.mark.parametrize("quality", [5, 75, 100])
def test_fast_entropy_gives_the_same_coefficients(quality: int) -> None:
    x = _photo(40, 56)
    x[:, :8, :8] = 0  # strong edges: large coefficients exercise the escape list
    x[:, 8:16, :8] = 255
    a, b = DctCodec(quality=quality), DctCodec(quality=quality, entropy="fast")
    pa = a.decode_coefficients(a.encode(x), x.shape)
    pb = b.decode_coefficients(b.encode(x), x.shape)
    for qa, qb in zip(pa.planes, pb.planes, strict=True):
        np.testing.assert_array_equal(qa, qb)
    np.testing.assert_array_equal(a.decode(a.encode(x), x.shape), b.decode(b.encode(x), x.shape))


def test_fast_entropy_escapes() -> None:
    x = np.zeros((1, 16, 16), np.uint8)
    x[0, ::2] = 255  # alternating rows: large high-frequency coefficients at quality 100
    codec = DctCodec(quality=100, entropy="fast", rdo=False)
    p = codec.decode_coefficients(codec.encode(x), x.shape)
    assert np.abs(p.planes[0][..., 1:]).max() > 127
    assert np.abs(codec.decode(codec.encode(x), x.shape).astype(int) - x).max() <= 1


def test_default_models_for_small_chunks() -> None:
    x = _photo(32, 32)
    small = DctCodec(quality=75).encode(x)
    assert small[4] == 4 and small[5] & 16  # stream version 4, default models: no model header
    assert len(small) < 300
    noise = np.random.default_rng(3).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    own = DctCodec(quality=90, chroma="444").encode(noise)
    assert not own[5] & 16
    with pytest.raises(CodecError, match="flags"):  # version 4 is ctx only: no fast bit
        DctCodec().decode(small[:5] + bytes([small[5] | 8]) + small[6:], x.shape)
    with pytest.raises(CodecError, match="flags"):  # version 1 has no default models
        DctCodec().decode(small[:4] + b"\x01" + small[5:], x.shape)


def test_payload_is_compact_int16() -> None:
    x = _photo(32, 48)
    codec = DctCodec(quality=50)
    p = codec.decode_coefficients(codec.encode(x), x.shape)
    assert [q.shape for q in p.planes] == [(4, 6, 64), (2, 3, 64), (2, 3, 64)]
    assert all(q.dtype == np.int16 for q in p.planes)
    np.testing.assert_array_equal(p.tables, ijg_tables(50))


def test_color_round_trip_and_filters() -> None:
    rgb = torch.rand(2, 3, 6, 10) * 255
    torch.testing.assert_close(color.ycbcr_to_rgb(color.rgb_to_ycbcr(rgb)), rgb, atol=1e-3, rtol=0)
    ramp = torch.arange(16.0).repeat(1, 1, 8, 1)  # linear ramp along W survives down/up
    back = color.upsample_420(color.downsample_420(ramp), 8, 16)
    torch.testing.assert_close(back[..., 3:-3], ramp[..., 3:-3])  # edges are replicated
    grey = torch.full((1, 3, 2, 2), 77.0)
    torch.testing.assert_close(color.rgb_to_ycbcr(grey)[0, :, 0, 0], torch.tensor([77.0, 128, 128]))


def test_zigzag_is_jpeg_order() -> None:
    assert ZIGZAG[:10].tolist() == [0, 1, 8, 16, 9, 2, 3, 10, 17, 24]
    assert sorted(ZIGZAG.tolist()) == list(range(64)) and ZIGZAG[-1] == 63


# -- validation, config ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"quality": 1.5}, "quality"),
        ({"quality": True}, "quality"),
        ({"chroma": "422"}, "chroma"),
        ({"tables": [[1] * 63]}, "tables"),
        ({"tables": [[1] * 64] * 3}, "tables"),
        ({"tables": [[0] * 64]}, "tables"),
        ({"tables": [[65536] * 64]}, "tables"),
        ({"tables": [[1.5] * 64]}, "tables"),
        ({"rdo": "yes"}, "rdo"),
        ({"entropy": "zstd"}, "entropy"),
        ({"entropy": "jfif", "tables": [[256] * 64]}, "1..255"),
    ],
)
def test_constructor_rejects(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        DctCodec(**kwargs)


def test_constructor_is_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        DctCodec(90)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DctCodec().quality = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "codec",
    [
        DctCodec(),
        DctCodec(quality=33, chroma="444", rdo=False),
        DctCodec(tables=[list(range(1, 65))]),
        DctCodec(entropy="fast"),
        DctCodec(entropy="jfif", chroma="444", family="ssim", quality=60),
        DctCodec(tables=np.stack([np.arange(1, 65), np.arange(64, 0, -1)])),
    ],
)
def test_config_round_trip(codec: DctCodec) -> None:
    d = check_config(codec)
    assert d["name"] == "qpyr.dct"
    assert DctCodec.from_dict(json.loads(json.dumps(d))) == codec
    check_config(DctChunkCodec(codec))


def test_config_defaults_left_out_and_unknown_rejected() -> None:
    assert DctCodec().to_dict() == {"name": "qpyr.dct", "configuration": {}}
    with pytest.raises(ValueError, match="level"):
        DctCodec.from_dict({"name": "qpyr.dct", "configuration": {"level": 3}})
    with pytest.raises(ValueError):
        DctCodec.from_dict({"name": "qpyr.zstd", "configuration": {}})


def test_explicit_tables_used() -> None:
    x = _photo(16, 16)
    coarse = DctCodec(tables=[[200] * 64])
    fine = DctCodec(tables=[[1] * 64, [2] * 64])
    assert len(coarse.encode(x)) < len(fine.encode(x))
    p = fine.decode_coefficients(fine.encode(x), x.shape)
    assert p.tables.tolist() == [[1] * 64, [2] * 64]


def test_encode_rejects_bad_input() -> None:
    codec = DctCodec()
    for bad in (np.zeros((3, 4, 4), np.float32), np.zeros((4, 4), np.uint8), np.zeros((3, 0, 4), np.uint8)):
        with pytest.raises(ValueError):
            codec.encode(bad)


# -- corrupt input ---------------------------------------------------------------------------


def test_shape_mismatch_raises_before_decoding() -> None:
    x = _photo(16, 24)
    data = DctCodec().encode(x)
    with pytest.raises(CodecError, match="shape"):
        DctCodec().decode(data, (3, 16, 25))
    with pytest.raises(CodecError):
        DctCodec().decode(data, (3, 100000, 100000))


_FUZZ_BASE = [
    DctCodec(quality=q, chroma=ch).encode(np.random.default_rng(q).integers(0, 256, s, dtype=np.uint8))  # type: ignore[arg-type]
    for q, ch, s in ((50, "420", (3, 16, 16)), (90, "444", (1, 9, 13)), (75, "420", (4, 8, 20)))
] + [
    DctCodec(quality=100, entropy="fast").encode(np.random.default_rng(7).integers(0, 256, (3, 16, 24), dtype=np.uint8))
] + [
    DctCodec(quality=q, chroma=ch, entropy="jfif").encode(np.random.default_rng(q).integers(0, 256, s, dtype=np.uint8))  # type: ignore[arg-type]
    for q, ch, s in ((60, "420", (3, 16, 16)), (90, "444", (1, 9, 13)), (100, "444", (3, 32, 32)))
]
_FUZZ_SHAPES = [(3, 16, 16), (1, 9, 13), (4, 8, 20), (3, 16, 24), (3, 16, 16), (1, 9, 13), (3, 32, 32)]


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=300), which=st.integers(0, 6))
def test_fuzz_random_bytes(data: bytes, which: int) -> None:
    check_hostile(DctCodec(), [data, b"QDCT" + data], _FUZZ_SHAPES[which], np.uint8)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    which=st.integers(0, 6),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 10**6),
)
def test_fuzz_mutated_streams(which: int, edits: list[tuple[int, int]], cut: int) -> None:
    buf = bytearray(_FUZZ_BASE[which])
    for pos, val in edits:
        buf[pos % len(buf)] = val
    if cut % 3 == 0:
        buf = buf[: cut % len(buf)]
    check_hostile(DctCodec(), [bytes(buf)], _FUZZ_SHAPES[which], np.uint8)


_JFIF_PHOTO = DctCodec(quality=85, chroma="420", entropy="jfif").encode(_photo(48, 64))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.integers(0, 10**6))
def test_fuzz_jpeg_entropy_data(edits: list[tuple[int, int]], cut: int) -> None:
    """Corruption inside the Huffman-coded scan of a JPEG-stream chunk (past every header check,
    so libjpeg-turbo itself meets it): a CodecError or a decoded chunk, never a crash."""
    buf = bytearray(_JFIF_PHOTO)
    scan = buf.index(b"\xff\xda") + 14  # SOS segment of a 3-component scan is 12 bytes + marker
    for pos, val in edits:
        buf[scan + pos % (len(buf) - scan - 2)] = val
    if cut % 4 == 0:
        buf = buf[: scan + cut % (len(buf) - scan)]
    check_hostile(DctCodec(), [bytes(buf)], (3, 48, 64), np.uint8)


# -- golden vectors --------------------------------------------------------------------------

GOLDEN = golden_cases("dct")


def test_golden_vectors_exist() -> None:
    assert len(GOLDEN) >= 3


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_vector(name: str) -> None:
    check_golden(DctCodec, VECTORS / "dct" / name)


def test_pad_for_dct_keeps_the_image_and_makes_padding_nearly_free() -> None:
    from qpyr.codecs.dct import pad_for_dct

    img = _photo(200, 232)  # [3, 200, 232]
    c, h, w = img.shape
    H, W = 256, 320
    p = pad_for_dct(img, H, W)
    assert p.shape == (c, H, W) and p.dtype == img.dtype
    np.testing.assert_array_equal(p[:, :h, :w], img)
    # whole 16-px blocks past the 16-aligned extent are constant
    assert (p[:, 208:, :] == p[:, 208:209, :1]).all()
    for y0 in range(0, 208, 16):
        blk = p[:, y0:y0 + 16, 240:]
        assert (blk == blk[:, :1, :1]).all()
    edge = np.pad(img, ((0, 0), (0, H - h), (0, W - w)), mode="edge")
    for chroma in ("444", "420"):
        codec = DctCodec(quality=80, chroma=chroma)
        nb_fill, nb_edge = len(codec.encode(p)), len(codec.encode(edge))
        nb_tight = len(codec.encode(np.pad(img, ((0, 0), (0, 8), (0, 8)), mode="edge")))
        assert nb_fill < nb_edge
        assert nb_fill <= 1.10 * nb_tight, (chroma, nb_fill, nb_tight)  # 60 % more area here
        # the visible region decodes the same way whatever the padding rule
        assert codec.decode(codec.encode(p), p.shape)[:, :h, :w].shape == img.shape
    with pytest.raises(ValueError, match="smaller"):
        pad_for_dct(img, h - 1, w)


@settings(max_examples=12, deadline=None)
@given(c=st.sampled_from([1, 3, 4]), h=st.integers(1, 40), w=st.integers(1, 40), q=st.integers(1, 100),
       chroma=st.sampled_from(["420", "444"]), family=st.sampled_from(["annexk", "ssim"]), seed=st.integers(0, 2**16))
def test_simulate_is_bit_exact_with_the_round_trip(c: int, h: int, w: int, q: int, chroma: str, family: str, seed: int) -> None:
    x = np.random.default_rng(seed).integers(0, 256, (c, h, w), dtype=np.uint8)
    codec = DctCodec(quality=q, chroma=chroma, family=family)
    np.testing.assert_array_equal(codec.simulate(x), codec.decode(codec.encode(x), x.shape))


def test_simulate_matches_on_a_photo() -> None:
    x = _photo(96, 128)
    for codec in (DctCodec(quality=75), DctCodec(quality=85, chroma="444", family="ssim", entropy="fast")):
        np.testing.assert_array_equal(codec.simulate(x), codec.decode(codec.encode(x), x.shape))


# -- decode-speed rewrites stay exact (tools/bench_decode.py) ---------------------------------


@pytest.mark.parametrize("chroma", ["420", "444"])
@pytest.mark.parametrize("c", [1, 3, 4])
def test_reconstruct_same_for_frequency_major_and_block_major_planes(chroma: str, c: int) -> None:
    """The fast-mode layout (views of [64, by, bx]) takes another GEMM operand path; it must
    give the very same floats as contiguous [by, bx, 64] planes."""
    x = _photo(75, 101)[np.arange(c) % 3]
    codec = DctCodec(quality=80, chroma=chroma)
    p = codec.decode_coefficients(codec.encode(x), x.shape)
    fm = tuple(np.ascontiguousarray(q.transpose(2, 0, 1)).transpose(1, 2, 0) for q in p.planes)
    bm = tuple(np.ascontiguousarray(q) for q in p.planes)
    for dtype in (torch.float32, torch.uint8):
        a = codec.reconstruct(dataclasses.replace(p, planes=fm), "cpu", dtype)
        b = codec.reconstruct(dataclasses.replace(p, planes=bm), "cpu", dtype)
        assert a.dtype == b.dtype == dtype
        assert torch.equal(a, b)
    fast = DctCodec(quality=80, chroma=chroma, entropy="fast")
    np.testing.assert_array_equal(fast.decode(fast.encode(x), x.shape), codec.decode(codec.encode(x), x.shape))


def test_uint8_reconstruct_is_floor_of_shifted_float() -> None:
    x = _photo(40, 56)
    codec = DctCodec(quality=60)
    p = codec.decode_coefficients(codec.encode(x), x.shape)
    f = codec.reconstruct(p, "cpu", torch.float32)
    u = codec.reconstruct(p, "cpu", torch.uint8)
    assert u.dtype == torch.uint8 and u.shape == f.shape
    # uint8 path: floor(x + 0.5) with the 0.5 in the level shift; at most 1 off the float path
    assert (u.float() - torch.floor(f.clamp(0, 255) + 0.5)).abs().max() <= 1


def test_decoder_lookup_tables_match_the_shared_definitions() -> None:
    from qpyr.codecs import dct

    rng = np.random.default_rng(7)
    for t in range(60):
        by, bx = (int(v) for v in rng.integers(1, 24, 2))
        eob = rng.integers(0, 64, (by, bx)) if t % 2 else np.minimum(rng.geometric(0.15, (by, bx)), 63)
        blk, k = dct._ac_positions(eob)
        np.testing.assert_array_equal(dct._ac_contexts_lut(eob, blk, k, 17), 17 + dct._ac_contexts(eob, blk, k))
    # _read_fields against the straightforward definition (token -> magnitude + extra bits + sign)
    tok = rng.integers(0, 17, 5000)
    nx = np.where(tok >= 8, tok - 5, 0)
    extra = rng.integers(0, 1 << 11, tok.size) & ((1 << nx) - 1)
    mag = np.where(tok >= 8, (1 << nx) + extra, tok)
    sign = rng.integers(0, 2, tok.size) * (tok > 0)
    w = dct._BitWriter()
    w.write((extra << 1 | sign)[tok > 0], (nx + 1)[tok > 0])
    w.write(extra[nx > 0], nx[nx > 0])
    r = dct._BitReader(w.getvalue())
    np.testing.assert_array_equal(dct._read_fields(r, tok, True), np.where(sign == 1, -mag, mag))
    np.testing.assert_array_equal(dct._read_fields(r, tok, False), mag)


def test_fast_decode_recovers_after_a_corrupt_frame() -> None:
    x = _photo(32, 48)
    codec = DctCodec(quality=70, entropy="fast")
    data = codec.encode(x)
    good = codec.decode(data, x.shape)
    bad = bytearray(data)
    bad[len(bad) // 2 :] = bytes(len(bad) - len(bad) // 2)
    with pytest.raises(CodecError):
        codec.decode(bytes(bad), x.shape)
    np.testing.assert_array_equal(codec.decode(data, x.shape), good)


def test_context_functions_match_their_np_pad_definitions() -> None:
    """The context functions encoder and decoder share (fast padding) against their definitions
    written with np.pad (spec/codecs/dct.md §6.3)."""
    from qpyr.codecs import dct

    def neighbour_sum(e: np.ndarray) -> np.ndarray:
        p = np.pad(e, 1, mode="edge")
        return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]

    def eob_contexts_black(dc: np.ndarray) -> np.ndarray:
        p = np.pad(dc.astype(np.int64), 1, mode="edge")
        g = np.abs(p[:-2, 1:-1] - dc) + np.abs(p[2:, 1:-1] - dc) + np.abs(p[1:-1, :-2] - dc) + np.abs(p[1:-1, 2:] - dc)
        return np.minimum(np.frexp(g.astype(np.float64))[1], 7)

    def eob_contexts_white(e: np.ndarray, black: np.ndarray) -> np.ndarray:
        ep = np.pad(e.astype(np.int64) * black, 1)
        bp = np.pad(black.astype(np.int64), 1)
        s = ep[:-2, 1:-1] + ep[2:, 1:-1] + ep[1:-1, :-2] + ep[1:-1, 2:]
        n = bp[:-2, 1:-1] + bp[2:, 1:-1] + bp[1:-1, :-2] + bp[1:-1, 2:]
        mean = (2 * s + np.maximum(n, 1)) // (2 * np.maximum(n, 1))
        return np.searchsorted(dct._NB_EDGES, mean, side="right") - 1

    rng = np.random.default_rng(11)
    for t in range(120):
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        e = rng.integers(0, 64, (h, w))
        dc = rng.integers(-2047, 2048, (h, w)) if t % 2 else rng.integers(-3, 3, (h, w))
        black = dct._black_mask(h, w)
        for edge in (True, False):
            np.testing.assert_array_equal(dct._pad1(e, edge), np.pad(e, 1, mode="edge" if edge else "constant"))
        np.testing.assert_array_equal(dct._neighbour_sum(e), neighbour_sum(e))
        np.testing.assert_array_equal(dct._eob_contexts_black(dc), eob_contexts_black(dc))
        eb = np.where(black, e, 0)
        np.testing.assert_array_equal(dct._eob_contexts_white(eb, black), eob_contexts_white(eb, black))


# -- entropy="jfif": a baseline JPEG stream (spec/codecs/dct.md §6.6) --------------------------


@settings(max_examples=40, deadline=None)
@given(c=st.sampled_from([1, 3]), h=st.integers(1, 40), w=st.integers(1, 40), chroma=st.sampled_from(["420", "444"]),
       seed=st.integers(0, 2**32 - 1))
def test_jfif_round_trip_any_shape(c: int, h: int, w: int, chroma: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (c, h, w), dtype=np.uint8)
    if chroma == "420" and c == 3:
        x[1] = x[2] = x[0]
    codec = DctCodec(quality=100, chroma=chroma, entropy="jfif")  # type: ignore[arg-type]
    (data,) = check_round_trip(codec, [x], exact=False, atol=8)
    assert data[4] == 3 and data[5] & 64 and b"\xff\xe0" not in data[17:21]  # version 3, flag bit 6, no APP0
    y = codec.decode(data, x.shape)
    # [C, H, W] over the decoder's interleaved memory (a view, as torchvision's decode_jpeg)
    assert y.dtype == np.uint8 and y.shape == x.shape and y.strides == (1, w * c, c)
    err = np.abs(y.astype(np.int64) - x)
    assert err.max() <= 8 and err.mean() <= 1.5
    np.testing.assert_array_equal(codec.simulate(x), y)  # simulate = the real libjpeg-turbo round trip


def test_jfif_is_a_jpeg_any_decoder_reads() -> None:
    """The body after the qpyr header is a JPEG: Pillow decodes it to what qpyr decodes."""
    import io

    from PIL import Image

    x = _photo(96, 128)
    for chroma in ("420", "444"):
        codec = DctCodec(quality=80, chroma=chroma, entropy="jfif", family="ssim")  # type: ignore[arg-type]
        data = codec.encode(x)
        payload = codec.decode_coefficients(data, x.shape)
        assert isinstance(payload, JfifStream) and payload.chroma420 == (chroma == "420")
        # small chunk: written abbreviated (no DQT/DHT, flags bit 7); the payload is the completed JPEG
        assert data[5] & 128 and len(payload.data) > len(data) - 17
        with Image.open(io.BytesIO(payload.data)) as im:
            assert im.size == (128, 96) and im.mode == "RGB"
            pil = np.asarray(im).transpose(2, 0, 1)
            tabs = ijg_tables(80, "ssim")
            assert [list(t) for t in im.quantization.values()] == [list(tabs[0]), list(tabs[1])]
        ours = codec.decode(data, x.shape)
        assert np.abs(pil.astype(int) - ours).max() <= 2  # same libjpeg family; T.81 allows small differences
        f = codec.reconstruct(payload, "cpu", torch.float32)
        assert f.dtype == torch.float32 and torch.equal(f, torch.from_numpy(ours).float())
    from qpyr.codecs.dct import chunk_quality

    assert chunk_quality(data) == 80


def test_jfif_rejects_what_it_cannot_code() -> None:
    with pytest.raises(ValueError, match="1- or 3-channel"):
        DctCodec(entropy="jfif").encode(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="65500"):
        DctCodec(entropy="jfif").simulate(np.zeros((1, 1, 70000), np.uint8))


def _with_body(data: bytes, body: bytes) -> bytes:
    return data[:17] + body


def test_jfif_stream_checked_before_decoding() -> None:
    x = _photo(16, 24)
    codec = DctCodec(quality=70, entropy="jfif")
    data = codec.encode(x)
    js = data[17:]
    with pytest.raises(CodecError, match="shape"):
        codec.decode(data, (3, 16, 25))
    with pytest.raises(CodecError, match="SOI/EOI"):
        codec.decode(data[:-2], x.shape)  # truncated: no EOI
    # a frame header claiming another size (a decoder would allocate from it) is refused
    i = js.index(b"\xff\xc0")
    big = bytearray(js)
    big[i + 5:i + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    with pytest.raises(CodecError, match="does not match"):
        codec.decode(_with_body(data, bytes(big)), x.shape)
    prog = bytearray(js)
    prog[i + 1] = 0xC2  # progressive
    with pytest.raises(CodecError, match="baseline"):
        codec.decode(_with_body(data, bytes(prog)), x.shape)
    samp = bytearray(js)
    samp[i + 11] = 0x11  # luma 1x1 while the header says 4:2:0
    with pytest.raises(CodecError, match="sampling"):
        codec.decode(_with_body(data, bytes(samp)), x.shape)
    with pytest.raises(CodecError, match="flags"):  # jfif with the fast-mode bit
        codec.decode(data[:5] + bytes([data[5] | 8]) + data[6:], x.shape)
    with pytest.raises(CodecError, match="version"):
        codec.decode(data[:4] + bytes([4]) + data[5:], x.shape)


def test_jfif_abbreviated_streams_restore_the_standard_tables() -> None:
    """Flags bit 7: DQT and DHT left out and restored by the decoder; the restored DHT is exactly
    the Annex K tables libjpeg writes, the restored DQT the header's tables."""
    import io

    from PIL import Image

    from qpyr.codecs.dct import _STD_DHT, _segments

    b = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(b, "JPEG", quality=75, optimize=False, subsampling=0)
    js = b.getvalue()
    libjpeg = b"".join(js[a + 4:e] for m, a, e in _segments(js) if m == 0xC4)
    assert libjpeg == _STD_DHT
    x = _photo(40, 56)
    for c in (1, 3):
        codec = DctCodec(quality=60, entropy="jfif", family="ssim", chroma="444")
        data = codec.encode(x[:c].copy())
        assert data[5] & 128  # small: abbreviated is the smaller choice
        body = data[17:]
        assert not any(m in (0xDB, 0xC4) for m, _, _ in _segments(body))
        full = codec.decode_coefficients(data, (c, 40, 56)).data
        with Image.open(io.BytesIO(full)) as im:
            tabs = ijg_tables(60, "ssim")
            assert [list(t) for t in im.quantization.values()] == [list(tabs[i]) for i in range(1 if c == 1 else 2)]
        # a stream claiming to be abbreviated that still carries tables is refused
        with pytest.raises(CodecError, match="abbreviated"):
            codec.decode(data[:17] + full, (c, 40, 56))
    big = np.random.default_rng(5).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    data = DctCodec(quality=100, entropy="jfif", chroma="444").encode(big)
    assert not data[5] & 128  # large or noisy: optimised Huffman tables win, the stream is complete
    with pytest.raises(CodecError, match="flags"):  # bit 7 without bit 6
        DctCodec().decode(data[:5] + bytes([(data[5] & ~64) | 128]) + data[6:], big.shape)


def test_jfif_cuda_path_hands_the_completed_stream_to_the_gpu_decoder(monkeypatch) -> None:
    """No GPU here: a stand-in for ``torchvision.io.decode_jpeg(data, device=...)`` checks the
    glue (a 1-D uint8 tensor holding the complete JPEG; ``[C, H, W]`` uint8 back; shape check)."""
    import io

    from PIL import Image

    from qpyr.codecs import dct

    seen = []

    def fake_decode_jpeg(data: torch.Tensor, device: torch.device) -> torch.Tensor:
        assert data.dtype == torch.uint8 and data.dim() == 1 and device.type == "cuda"
        seen.append(bytes(data.numpy()))
        with Image.open(io.BytesIO(seen[-1])) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()

    monkeypatch.setattr(dct._jfif, "_NVJPEG", [fake_decode_jpeg])
    x = _photo(40, 56)
    codec = DctCodec(quality=70, entropy="jfif", chroma="420")
    data = codec.encode(x)
    payload = codec.decode_coefficients(data, x.shape)
    out = codec.reconstruct(payload, torch.device("cuda"), torch.float32)
    assert seen == [payload.data] and seen[0][:2] == b"\xff\xd8" and b"\xff\xc4" in seen[0]  # tables restored
    assert out.dtype == torch.float32 and tuple(out.shape) == x.shape
    assert (out - torch.from_numpy(codec.decode(data, x.shape)).float()).abs().max() <= 2
    bad = dataclasses.replace(payload, shape=(3, 40, 57))
    with pytest.raises(CodecError, match="nvJPEG"):
        codec.reconstruct(bad, torch.device("cuda"), torch.uint8)


def test_jfif_batch_decode_on_cuda_is_one_decoder_call(monkeypatch) -> None:
    """No GPU here: a stand-in for batched ``torchvision.io.decode_jpeg(list, device=...)``
    checks that a batch of JPEG chunks is one call, and that an old torchvision without
    list input (TypeError) falls back to per-chunk decoding (None)."""
    import io

    from PIL import Image

    from qpyr.codecs import dct
    from qpyr.codecs.quant import Quantizer, StoredType
    from qpyr.read.payload import LevelPayload, _batched_codes

    calls = []

    def fake_decode_jpeg(data: Any, device: torch.device) -> Any:
        if not isinstance(data, list):
            raise TypeError("single tensors only in this stand-in")
        calls.append(len(data))
        return [torch.from_numpy(np.array(Image.open(io.BytesIO(bytes(d.numpy()))).convert("RGB"))).permute(2, 0, 1)
                for d in data]

    monkeypatch.setattr(dct._jfif, "_NVJPEG", [fake_decode_jpeg])
    codec = DctCodec(quality=70, entropy="jfif", chroma="444")
    xs = [_photo(40, 56), _photo(48, 32)]
    payloads = [codec.decode_coefficients(codec.encode(x), x.shape) for x in xs]
    out = codec.reconstruct_batch(payloads, torch.device("cuda"))
    assert calls == [2] and out is not None and [tuple(t.shape) for t in out] == [x.shape for x in xs]
    assert codec.reconstruct_batch(payloads, torch.device("cpu")) is None  # CPU: libjpeg-turbo per chunk
    q = Quantizer(dtype=StoredType.UINT8, range=(0.0, 1.0), clamp=True)
    items = [LevelPayload(quantizer=q, value_scale=1 / 255, height=x.shape[1] - 3, width=x.shape[2], origin=(0, 0),
                          stored_dtype="uint8", channels=3, codec=codec, tiles=((0, 0, p),), tile_shape=x.shape)
             for x, p in zip(xs, payloads, strict=True)]
    codes = _batched_codes(items, {}, torch.device("cuda"))
    assert calls == [2, 2] and sorted(codes) == [0, 1] and tuple(codes[0].shape) == (3, 37, 56)
    monkeypatch.setattr(dct._jfif, "_NVJPEG", [lambda data, device: (_ for _ in ()).throw(TypeError("old"))])
    assert codec.reconstruct_batch(payloads, torch.device("cuda")) is None and _batched_codes(items, {}, torch.device("cuda")) == {}
