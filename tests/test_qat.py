"""fake_quantize: bit-exact with the real store round trip, straight-through gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qpyr
from qpyr.codecs.quant import normalize
from qpyr.io.pyramid import build_pyramid
from qpyr.policies import parse_policy
from qpyr.torch.qat import fake_quantize

SPECS = [
    "lossless", "lossless:codec=zstd", "fp32", "fp16", "bf16",
    "int8", "int8:granularity=channel", "int8:granularity=block,block=8", "int8:scheme=symmetric",
    "int4", "int4:granularity=channel", "int4:granularity=block,block=16", "int4:scheme=symmetric",
    "dct:quality=75", "dct:quality=50,chroma=444", "dct:quality=95",
]


@pytest.fixture(scope="module")
def photo(small_photos):
    return np.ascontiguousarray(small_photos["astronaut"][:72, :90])


@pytest.mark.parametrize("spec", SPECS)
def test_fake_quantize_equals_store_round_trip(spec, photo, tmp_path):
    s = qpyr.pack([photo], str(tmp_path / "s"), policy=spec, levels=2)
    levels = build_pyramid(np.moveaxis(photo, -1, 0), levels=2)
    encs = parse_policy(spec).plan(levels, np.dtype(np.uint8))
    got = s.read(0)
    for li in (0, 1):
        x = torch.from_numpy(normalize(levels[li], np.dtype(np.uint8)))
        fq = fake_quantize(x, encs[li], level=li)
        assert fq.dtype == torch.float32 and fq.shape == x.shape
        assert torch.equal(fq, got[li]), f"{spec} level {li}: max diff {(fq - got[li]).abs().max()}"


def test_batched_and_gradient_flows(photo):
    enc = parse_policy("int4").plan([np.zeros((3, 8, 8), np.uint8)], np.dtype(np.uint8))[0]
    x = torch.from_numpy(normalize(np.moveaxis(photo, -1, 0), np.dtype(np.uint8)))
    xb = torch.stack([x, x.flip(-1)]).requires_grad_(True)
    y = fake_quantize(xb, enc)
    assert torch.equal(y[0], fake_quantize(x, enc))  # each image is its own item
    assert not torch.equal(y[0], x)  # int4 is lossy
    w = torch.randn_like(y)
    (y * w).sum().backward()
    assert xb.grad is not None and torch.equal(xb.grad, w)  # straight-through


def test_encoding_dict_and_bad_shape(photo):
    enc = parse_policy("fp16").plan([np.zeros((3, 8, 8), np.uint8)], np.dtype(np.uint8))[0]
    x = torch.rand(3, 16, 16)
    assert torch.equal(fake_quantize(x, enc.to_dict()), x.half().float())
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        fake_quantize(torch.rand(16, 16), enc)


def test_fake_quantize_is_exported_by_qpyr_torch():
    import qpyr.torch

    assert qpyr.torch.fake_quantize is fake_quantize
