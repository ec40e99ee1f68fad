"""The compiled CPU reconstruction of ``qpyr.dct`` (``qpyr/_kernels/idct.py``) against the torch
reconstruction that other devices run (spec/codecs/dct.md §5): within one code on uint8 output,
within 1e-3 on float32 output in [0, 255], clamped, and the same bits in every process."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from codec_kit import photo as _photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpyr.codecs.dct import DctCodec, DctCoefficients, reconstruct
from qpyr.codecs.dct._transform import _reconstruct_cpu, _reconstruct_torch
from qpyr.samples import random_crops, sample_photo

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[2]


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


# -- more photos, shapes, layouts, processes ------------------------------------------------


def _payload(arr: np.ndarray, chroma: str = "420", entropy: str = "ctx", quality: int = 75) -> DctCoefficients:
    codec = DctCodec(quality=quality, chroma=chroma, entropy=entropy)  # type: ignore[arg-type]
    p = codec.decode_coefficients(codec.encode(arr), arr.shape)
    assert isinstance(p, DctCoefficients)
    return p


def _check_payload(p: DctCoefficients) -> None:
    """Kernel vs torch path, both dtypes: shape, tolerance, range."""
    c, h, w = p.shape
    for dtype, tol in ((torch.uint8, 1.0), (torch.float32, 0.05)):
        k = reconstruct(p, "cpu", dtype)
        t = _reconstruct_torch(p, CPU, dtype)
        assert k.dtype == dtype and k.shape == (c, h, w) and k.is_contiguous()
        diff = (k.double() - t.double()).abs().max().item()
        assert diff <= tol, (p.shape, p.chroma420, dtype, diff)
        if dtype == torch.float32:
            assert k.min().item() >= 0.0 and k.max().item() <= 255.0


def _chw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
@pytest.mark.parametrize("chroma", ["420", "444"])
@pytest.mark.parametrize("entropy", ["ctx", "fast"])
def test_photos_match_torch(name: str, chroma: str, entropy: str) -> None:
    img = _chw(sample_photo(name)[:256, :320])
    _check_payload(_payload(img, chroma, entropy))


def test_full_photo_uint8_mostly_identical() -> None:
    """On a whole photo the two differ by at most 1 code, and only on a handful of samples."""
    p = _payload(_chw(sample_photo("astronaut")), "420")
    k = reconstruct(p, "cpu", torch.uint8).numpy().astype(np.int16)
    t = _reconstruct_torch(p, CPU, torch.uint8).numpy().astype(np.int16)
    d = np.abs(k - t)
    assert d.max() <= 1 and (d > 0).mean() < 1e-3


@pytest.mark.parametrize(
    "shape", [(3, 1, 1), (3, 1, 37), (3, 29, 1), (3, 17, 33), (3, 15, 16), (3, 16, 15), (1, 1, 1), (1, 23, 9),
              (2, 13, 30), (4, 31, 7), (4, 1, 1)]
)
@pytest.mark.parametrize("chroma", ["420", "444"])
@pytest.mark.parametrize("entropy", ["ctx", "fast"])
def test_odd_sizes_and_channel_counts(shape: tuple[int, int, int], chroma: str, entropy: str) -> None:
    c, h, w = shape
    img = _photo(h, w)
    img = np.ascontiguousarray(np.concatenate([img, img[::-1]])[:c])
    _check_payload(_payload(img, chroma, entropy))


def test_random_crops() -> None:
    photos = [sample_photo(n) for n in ("astronaut", "coffee", "chelsea")]
    rng = np.random.default_rng(1)
    for i, crop in enumerate(random_crops(photos, 12, 1, 90, seed=3)):
        chroma = ("420", "444")[i % 2]
        entropy = ("ctx", "fast")[(i // 2) % 2]
        q = int(rng.integers(10, 100))
        img = _chw(crop)
        if i % 3 == 0:
            img = img[:1].copy()  # grey
        _check_payload(_payload(img, chroma, entropy, q))


@pytest.mark.parametrize("chroma", ["420", "444"])
def test_clamped(chroma: str) -> None:
    """Noise at a low quality rings past 0 and 255: both ends are hit and nothing is beyond."""
    rng = np.random.default_rng(0)
    img = (rng.integers(0, 2, (3, 40, 48)) * 255).astype(np.uint8)
    p = _payload(img, chroma, quality=20)
    f = reconstruct(p, "cpu", torch.float32)
    assert f.min().item() == 0.0 and f.max().item() == 255.0
    u = reconstruct(p, "cpu", torch.uint8)
    assert u.min().item() == 0 and u.max().item() == 255
    _check_payload(p)


def test_any_plane_layout() -> None:
    """Planes that are neither C-contiguous nor frequency-major views give the same pixels."""
    p = _payload(_photo(40, 56), "444")
    odd = tuple(np.asfortranarray(pl) for pl in p.planes)
    q = dataclasses.replace(p, planes=odd)
    for dtype in (torch.uint8, torch.float32):
        assert torch.equal(reconstruct(p, "cpu", dtype), reconstruct(q, "cpu", dtype))


@pytest.mark.parametrize("chroma", ["420", "444"])
def test_fast_and_ctx_planes_same_pixels(chroma: str) -> None:
    """The frequency-major planes of ``entropy="fast"`` and the C-contiguous ones of ``ctx``
    hold the same coefficients: the kernel gives them the same bits."""
    img = _photo(72, 88)
    a, b = _payload(img, chroma, "ctx"), _payload(img, chroma, "fast")
    assert not b.planes[0].flags.c_contiguous
    for dtype in (torch.uint8, torch.float32):
        assert torch.equal(reconstruct(a, "cpu", dtype), reconstruct(b, "cpu", dtype))


_SCRIPT = """
import hashlib, sys
import numpy as np, torch
sys.path.insert(0, {tests!r})
from codec_kit import photo
from qpyr.codecs.dct import DctCodec, reconstruct
torch.set_num_threads({threads})
h = hashlib.sha256()
for chroma in ("420", "444"):
    img = photo(61, 77)
    for c in (1, 3, 4):
        a = np.ascontiguousarray(np.concatenate([img, img])[:c])
        codec = DctCodec(quality=70, chroma=chroma)
        p = codec.decode_coefficients(codec.encode(a), a.shape)
        for dt in (torch.float32, torch.uint8):
            h.update(reconstruct(p, "cpu", dt).numpy().tobytes())
print(h.hexdigest())
"""


def _digest_here() -> str:
    h = hashlib.sha256()
    img = _photo(61, 77)
    for chroma in ("420", "444"):
        for c in (1, 3, 4):
            a = np.ascontiguousarray(np.concatenate([img, img])[:c])
            p = _payload(a, chroma, quality=70)
            for dt in (torch.float32, torch.uint8):
                h.update(reconstruct(p, "cpu", dt).numpy().tobytes())
    return h.hexdigest()


def test_deterministic_across_calls_and_processes() -> None:
    here = _digest_here()
    assert here == _digest_here()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    for threads in (1, 2):
        code = _SCRIPT.format(tests=str(ROOT / "tests"), threads=threads)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
        assert out.strip() == here


def test_kernel_imported_lazily() -> None:
    code = "import sys, qpyr, qpyr.codecs.dct; print('qpyr._kernels.idct' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "False"
