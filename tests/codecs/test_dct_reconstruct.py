"""The compiled CPU reconstruction of ``qpyr.dct`` (``qpyr/_kernels/idct.py``) against the torch
reconstruction that other devices run (spec/codecs/dct.md §5): within one code on uint8 output,
within 1e-3 on float32 output in [0, 255], clamped, and the same bits in every process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from codec_kit import photo as _photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpyr.codecs.dct import DctCodec
from qpyr.codecs.dct._transform import _reconstruct_cpu, _reconstruct_torch

CPU = torch.device("cpu")


def _check(codec: DctCodec, x: np.ndarray) -> None:
    p = codec.decode_coefficients(codec.encode(x), x.shape)
    f = _reconstruct_cpu(p, False)  # type: ignore[arg-type]
    u = _reconstruct_cpu(p, True)  # type: ignore[arg-type]
    assert f.shape == u.shape == x.shape and f.dtype == np.float32 and u.dtype == np.uint8
    assert f.flags.c_contiguous and u.flags.c_contiguous
    assert f.min() >= 0.0 and f.max() <= 255.0
    ref_f = _reconstruct_torch(p, CPU, torch.float32).numpy()  # type: ignore[arg-type]
    ref_u = _reconstruct_torch(p, CPU, torch.uint8).numpy()  # type: ignore[arg-type]
    np.testing.assert_allclose(f, ref_f, rtol=0, atol=1e-3)
    assert np.abs(u.astype(np.int16) - ref_u).max() <= 1
    # uint8 is the float reconstruction rounded half up, up to the float32 ulp at a tie
    assert np.abs(u.astype(np.float32) - np.floor(f + 0.5)).max() <= 1


@pytest.mark.parametrize("chroma", ["420", "444"])
@pytest.mark.parametrize("entropy", ["ctx", "fast"])
@pytest.mark.parametrize("shape", [(512, 512), (333, 517), (64, 48)])
def test_kernel_matches_torch_on_photos(chroma: str, entropy: str, shape: tuple[int, int]) -> None:
    x = _photo(*shape)
    for q in (30, 85, 100):
        _check(DctCodec(quality=q, chroma=chroma, entropy=entropy, family="ssim"), x)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(c=st.sampled_from([1, 2, 3, 4]), h=st.integers(1, 40), w=st.integers(1, 40),
       chroma=st.sampled_from(["420", "444"]), q=st.integers(1, 100), seed=st.integers(0, 2**32 - 1))
def test_kernel_matches_torch_any_shape(c: int, h: int, w: int, chroma: str, q: int, seed: int) -> None:
    x = np.random.default_rng(seed).integers(0, 256, (c, h, w), dtype=np.uint8)
    _check(DctCodec(quality=q, chroma=chroma), x)  # type: ignore[arg-type]


def test_kernel_is_the_cpu_path_of_decode_and_simulate() -> None:
    x = _photo(40, 56)
    codec = DctCodec(quality=70)
    enc = codec.encode(x)
    want = _reconstruct_cpu(codec.decode_coefficients(enc, x.shape), True)  # type: ignore[arg-type]
    np.testing.assert_array_equal(codec.decode(enc, x.shape), want)
    np.testing.assert_array_equal(codec.simulate(x), want)


def test_kernel_bits_are_the_same_in_another_process() -> None:
    code = ("import sys, numpy as np; from qpyr.codecs.dct import DctCodec; "
            "x = np.random.default_rng(8).integers(0, 256, (3, 72, 88), dtype=np.uint8); c = DctCodec(quality=55); "
            "p = c.decode_coefficients(c.encode(x), x.shape); "
            "sys.stdout.write(c.reconstruct(p).numpy().tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")).stdout
    x = np.random.default_rng(8).integers(0, 256, (3, 72, 88), dtype=np.uint8)
    c = DctCodec(quality=55)
    assert bytes.fromhex(out) == c.reconstruct(c.decode_coefficients(c.encode(x), x.shape)).numpy().tobytes()
