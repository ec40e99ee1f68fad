"""Quantizer property tests: reconstruction error <= half a step; lossless paths bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from codec_kit import check_config
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qpyr.codecs.quant import Quantizer, StoredType, bf16_decode, bf16_encode, pack_nibbles, unpack_nibbles
from qpyr.errors import PolicyError, RangeError

INT_CONFIGS = [
    dict(dtype="uint8"), dict(dtype="uint8", granularity="channel"), dict(dtype="uint8", granularity="block", block=4),
    dict(dtype="int8", scheme="symmetric"), dict(dtype="int8", scheme="symmetric", granularity="channel"),
    dict(dtype="int8"), dict(dtype="uint4"), dict(dtype="uint4", granularity="block"),
    dict(dtype="int4", scheme="symmetric", granularity="channel"), dict(dtype="int4", scheme="symmetric", granularity="block", block=3),
]

images = st.integers(1, 3).flatmap(lambda c: st.tuples(st.integers(1, 19), st.integers(1, 19)).flatmap(
    lambda hw: arrays(np.float32, (c, *hw), elements=st.floats(-1e3, 1e3, width=32, allow_nan=False))))


def _roundtrip(q: Quantizer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    stored, params = q.quantize(x, np.dtype(np.float32))
    xh = q.dequantize(torch.from_numpy(stored.astype(np.int32) if stored.dtype == np.uint16 else stored),
                      torch.from_numpy(params) if params is not None else None, value_scale=1.0)
    return stored, params, xh.numpy()


def _expand_scale(q: Quantizer, params: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    return q._expand(params[0], shape)


@pytest.mark.parametrize("cfg", INT_CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
@settings(max_examples=60, deadline=None)
@given(x=images)
def test_int_error_at_most_half_step(cfg, x):
    q = Quantizer(**cfg)
    stored, params, xh = _roundtrip(q, x)
    qmin, qmax = q.qrange
    assert stored.min() >= qmin and stored.max() <= qmax
    step = _expand_scale(q, params, x.shape)
    # half a step, plus float32 rounding of the decode (relative to the group's magnitude)
    tol = step / 2 * (1 + 1e-5) + 2.0**-20 * float(np.abs(x).max()) + 1e-30
    assert np.all(np.abs(xh - x) <= tol)


@settings(max_examples=80, deadline=None)
@given(x=arrays(np.float32, (2, 5, 7), elements=st.floats(-6e4, 6e4, width=32, allow_nan=False)))
def test_float16_and_bfloat16_error_half_ulp(x):
    _, _, xh16 = _roundtrip(Quantizer(dtype="float16"), x)
    # half an ulp of float16 relative error (normal range), or half the subnormal step
    assert np.all(np.abs(xh16 - x) <= np.maximum(np.abs(x) * 2.0**-11, 2.0**-25) * (1 + 1e-6))
    _, _, xhb = _roundtrip(Quantizer(dtype="bfloat16"), x)
    assert np.all(np.abs(xhb - x) <= np.abs(x) * 2.0**-8 * (1 + 1e-6) + 1e-38)
    _, _, xh32 = _roundtrip(Quantizer(dtype="float32"), x)
    assert np.array_equal(xh32, x)


def test_bf16_rounding_ties_to_even():
    # 1 + 2^-8 is exactly halfway between bf16 neighbours 1 and 1 + 2^-7 → rounds to even (1.0)
    x = np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -2.5], np.float32)
    bits = bf16_encode(x)
    assert bits.dtype == np.dtype("<u2")
    assert list(bits) == [0x3F80, 0x3F82, 0xC020]
    np.testing.assert_array_equal(bf16_decode(torch.from_numpy(bits.astype(np.int32))).numpy(), [1.0, 1.0 + 2**-6, -2.5])


def test_int4_nibble_order_golden():
    # element 2j → low nibble, 2j+1 → high nibble; odd width padded with 0; two's complement
    assert pack_nibbles(np.array([1, 2, 3], np.uint8)).tolist() == [0x21, 0x03]
    assert pack_nibbles(np.array([-1, 7, -8], np.int8)).tolist() == [0x7F, 0x08]
    t = unpack_nibbles(torch.tensor([0x7F, 0x08], dtype=torch.uint8), 3, signed=True)
    assert t.tolist() == [-1, 7, -8]
    assert unpack_nibbles(torch.tensor([0x21, 0x03], dtype=torch.uint8), 3, signed=False).tolist() == [1, 2, 3]


@settings(max_examples=50, deadline=None)
@given(arrays(np.int8, st.tuples(st.integers(1, 3), st.integers(1, 9)), elements=st.integers(-8, 7)))
def test_nibble_pack_roundtrip(q):
    p = pack_nibbles(q)
    assert p.shape[-1] == (q.shape[-1] + 1) // 2
    assert np.array_equal(unpack_nibbles(torch.from_numpy(p), q.shape[-1], signed=True).numpy(), q)


@pytest.mark.parametrize("cfg", INT_CONFIGS[:3] + [dict(dtype="uint4")], ids=str)
def test_constant_image_exact_affine(cfg):
    x = np.full((3, 5, 6), 0.3, np.float32)
    _, _, xh = _roundtrip(Quantizer(**cfg), x)
    assert np.array_equal(xh, x)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int16])
def test_source_quantizer_is_bit_exact(dtype):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    x = (rng.integers(info.min, info.max, (2, 4, 5), endpoint=True) if info else rng.normal(size=(2, 4, 5))).astype(dtype)
    q = Quantizer(dtype="source")
    stored, params = q.quantize(x, np.dtype(dtype))
    assert params is None and stored.dtype == np.dtype(dtype).newbyteorder("<") and np.array_equal(stored, x)


def test_fixed_range_out_of_range_is_error_unless_clamp():
    x = np.array([[[0.0, 0.5, 1.2]]], np.float32)
    with pytest.raises(RangeError, match=r"outside the quantizer range \[0, 1\]"):
        Quantizer(dtype="uint8", range=(0.0, 1.0)).quantize(x, np.dtype(np.float32))
    stored, params = Quantizer(dtype="uint8", range=(0.0, 1.0), clamp=True).quantize(x, np.dtype(np.float32))
    assert stored[0, 0, 0] == 0 and stored[0, 0, 2] == 255 and stored[0, 0, 1] in (127, 128)
    with pytest.raises(RangeError, match="overflow float16"):
        Quantizer(dtype="float16").quantize(np.array([[[7e4]]], np.float32), np.dtype(np.float32))
    s16, _ = Quantizer(dtype="float16", clamp=True).quantize(np.array([[[7e4]]], np.float32), np.dtype(np.float32))
    assert float(s16[0, 0, 0]) == 65504.0


@pytest.mark.parametrize("cfg", INT_CONFIGS + [dict(dtype="float16"), dict(dtype="source"), dict(dtype="uint8", range=(0.0, 1.0), clamp=True)], ids=str)
def test_config_round_trip(cfg):
    q = Quantizer(**cfg)
    d = check_config(q, codec_document=False)
    assert Quantizer.from_dict(d) == q
    assert "scheme" not in d or d["scheme"] != "affine"  # defaults are left out


def test_invalid_configs():
    with pytest.raises(PolicyError, match="signed dtype"):
        Quantizer(dtype="uint8", scheme="symmetric")
    with pytest.raises(PolicyError, match="block in 2..256"):
        Quantizer(dtype="uint8", granularity="block", block=1)
    with pytest.raises(PolicyError, match="integer dtypes"):
        Quantizer(dtype="float16", granularity="channel")
    with pytest.raises(PolicyError, match="Unknown quantizer field"):
        Quantizer.from_dict({"dtype": "uint8", "bits": 3})
    with pytest.raises(PolicyError):
        Quantizer(dtype="uint7")
    with pytest.raises(PolicyError, match="lo < hi"):
        Quantizer(dtype="uint8", range=(1.0, 0.0))


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (64, 33, 4), (512, 512, 3), (3, 1, 2)])
def test_interleaved_uint8_dequantizes_to_the_same_bits_as_torch(shape):
    """A JPEG decoder's [H, W, C] memory viewed as [C, H, W] takes a compiled planar pass;
    its values equal torch's conversion and multiply bit for bit."""
    hwc = np.random.default_rng(sum(shape)).integers(0, 256, shape).astype(np.uint8)
    view = torch.from_numpy(hwc).permute(2, 0, 1)
    q = Quantizer(dtype=StoredType.UINT8, range=(0.0, 1.0), clamp=True)
    params = torch.tensor([[1 / 255], [0.0]], dtype=torch.float32)
    got = q.dequantize(view, params, value_scale=1.0)
    want = view.to(torch.float32).mul_(params[0, 0])
    assert got.is_contiguous() and got.dtype == torch.float32 and torch.equal(got, want)
