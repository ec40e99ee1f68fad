"""Tests for qpyr.metrics: PSNR / SSIM / MS-SSIM / luma SSIM against scikit-image and scipy."""

from __future__ import annotations

import io
import math
from functools import cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from qpyr import __file__ as qpyr_file
from qpyr.errors import InputError, QpyrError
from qpyr.metrics import (
    BT601_LUMA,
    MS_SSIM_WEIGHTS,
    ms_ssim,
    psnr,
    ssim,
    y_ssim,
)
from qpyr.samples import sample_photo

TOL = 1e-4  # required agreement with scikit-image
TIGHT = 1e-10  # agreement between our own code paths (all float64)

# --------------------------------------------------------------------------------------------
# fixtures / helpers
# --------------------------------------------------------------------------------------------

# crop (top, left, height, width) per photo; crops are <= 256x256 for speed and deliberately
# non-square for some images to catch H/W mix-ups.
_PHOTOS = {
    "astronaut": (0, 128, 256, 256),
    "chelsea": (50, 100, 192, 256),
    "coffee": (80, 150, 256, 200),
    "rocket": (150, 200, 160, 240),
    "camera": (64, 128, 256, 256),
    "motorcycle": (150, 250, 224, 256),
}


@cache
def photo(name: str) -> np.ndarray:
    """uint8 [H, W] (gray) or [H, W, 3] crop of a skimage sample photo."""
    top, left, h, w = _PHOTOS[name]
    im = np.ascontiguousarray(sample_photo(name)[top : top + h, left : left + w])
    assert im.shape[:2] == (h, w)
    return im


def jpeg_roundtrip(im: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("L" if im.ndim == 2 else "RGB"))
    assert out.shape == im.shape
    return out


def degrade(im: np.ndarray, kind: str, level: float, seed: int = 0) -> np.ndarray:
    """Float64 in [0, 1], same shape as ``im``."""
    if kind == "jpeg":
        return jpeg_roundtrip(im, int(level)).astype(np.float64) / 255.0
    rng = np.random.default_rng(seed)
    x = im.astype(np.float64) / 255.0
    return np.clip(x + rng.normal(0.0, level, x.shape), 0.0, 1.0)


def hwc(im: np.ndarray) -> np.ndarray:
    return im[..., None] if im.ndim == 2 else im


def to_t(im: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[H, W] or [H, W, C] numpy -> Tensor[C, H, W]."""
    return torch.from_numpy(np.ascontiguousarray(hwc(im).transpose(2, 0, 1))).to(dtype)


def sk_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    return float(
        structural_similarity(
            hwc(a),
            hwc(b),
            channel_axis=-1,
            data_range=data_range,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def ref_ssim_terms(
    x: np.ndarray, y: np.ndarray, radius: int, r: float = 1.0
) -> tuple[float, float]:
    """Independent numpy/scipy reference for one 2-D channel: (mean SSIM, mean cs).

    Same algorithm as scikit-image (scipy gaussian_filter, mode='reflect', crop ``radius``) but
    with an explicit filter radius, so it also covers our small-window fallback.
    """

    def filt(z: np.ndarray) -> np.ndarray:
        return gaussian_filter(z, sigma=1.5, mode="reflect", radius=radius)

    ux, uy = filt(x), filt(y)
    vx = filt(x * x) - ux * ux
    vy = filt(y * y) - uy * uy
    vxy = filt(x * y) - ux * uy
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    cs = (2 * vxy + c2) / (vx + vy + c2)
    s = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1) * cs
    sl = (slice(radius, x.shape[0] - radius), slice(radius, x.shape[1] - radius))
    return float(s[sl].mean()), float(cs[sl].mean())


def ref_ms_ssim(a: np.ndarray, b: np.ndarray, weights=MS_SSIM_WEIGHTS) -> float:
    """numpy reference MS-SSIM for [H, W, C] float images in [0, 1]."""
    a, b = hwc(a), hwc(b)
    h, w = a.shape[:2]
    scales = 1
    while scales < len(weights) and min(h >> scales, w >> scales) >= 11:
        scales += 1
    wts = np.asarray(weights[:scales], dtype=np.float64)
    wts = wts / wts.sum()
    per_channel = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        val = 1.0
        for j in range(scales):
            radius = (min(min(x.shape), 11) - 1) // 2
            s, cs = ref_ssim_terms(x, y, radius)
            val *= max(s if j == scales - 1 else cs, 0.0) ** wts[j]
            hh, ww = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
            x = x[:hh, :ww].reshape(hh // 2, 2, ww // 2, 2).mean(axis=(1, 3))
            y = y[:hh, :ww].reshape(hh // 2, 2, ww // 2, 2).mean(axis=(1, 3))
        per_channel.append(val)
    return float(np.mean(per_channel))


DEGRADATIONS = [("jpeg", 10), ("jpeg", 50), ("jpeg", 90)] + [
    ("noise", s) for s in (0.005, 0.03, 0.1, 0.3)
]


# --------------------------------------------------------------------------------------------
# agreement with scikit-image on real photos
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(_PHOTOS))
@pytest.mark.parametrize("kind,level", DEGRADATIONS)
def test_ssim_and_psnr_match_skimage(name: str, kind: str, level: float) -> None:
    ref = photo(name).astype(np.float64) / 255.0
    deg = degrade(photo(name), kind, level)
    got = ssim(to_t(ref), to_t(deg))
    assert got.shape == () and got.dtype == torch.float64
    assert abs(float(got) - sk_ssim(ref, deg)) < TOL
    p = psnr(to_t(ref), to_t(deg))
    assert p.shape == ()
    assert abs(float(p) - peak_signal_noise_ratio(ref, deg, data_range=1.0)) < TOL


def test_ssim_matches_skimage_full_size_photo() -> None:
    im = sample_photo("astronaut")
    ref = im.astype(np.float64) / 255.0
    deg = jpeg_roundtrip(im, 30).astype(np.float64) / 255.0
    assert abs(float(ssim(to_t(ref), to_t(deg))) - sk_ssim(ref, deg)) < TOL


def test_ssim_per_channel_matches_skimage_gray() -> None:
    ref = photo("astronaut").astype(np.float64) / 255.0
    deg = degrade(photo("astronaut"), "jpeg", 20)
    per = ssim(to_t(ref), to_t(deg), channel_mean=False)
    assert per.shape == (3,)
    for c in range(3):
        assert abs(float(per[c]) - sk_ssim(ref[..., c], deg[..., c])) < TOL
    assert float(per.mean()) == pytest.approx(
        float(ssim(to_t(ref), to_t(deg))), abs=TIGHT
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lower_precision_inputs(dtype: torch.dtype) -> None:
    ref = photo("chelsea").astype(np.float64) / 255.0
    deg = degrade(photo("chelsea"), "jpeg", 40)
    got = ssim(to_t(ref, dtype), to_t(deg, dtype))
    assert got.dtype == torch.float64
    # uint8-valued images are exact in float32; half types round them, so loosen there.
    tol = TOL if dtype == torch.float32 else 1e-2
    assert abs(float(got) - sk_ssim(ref, deg)) < tol


def test_ssim_at_minimum_skimage_size() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((11, 11, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert abs(float(ssim(to_t(a), to_t(b))) - sk_ssim(a, b)) < TOL


# --------------------------------------------------------------------------------------------
# batching, identity, data_range
# --------------------------------------------------------------------------------------------


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    im = photo("coffee")
    ref = to_t(im.astype(np.float64) / 255.0)
    degs = [degrade(im, k, lv, seed=i) for i, (k, lv) in enumerate(DEGRADATIONS[:4])]
    a = ref.unsqueeze(0).expand(len(degs), -1, -1, -1)
    b = torch.stack([to_t(d) for d in degs])
    return a, b


@pytest.mark.parametrize("fn", [psnr, ssim, ms_ssim, y_ssim])
def test_batched_equals_per_image(fn) -> None:
    a, b = _batch()
    batched = fn(a, b)
    assert batched.shape == (a.shape[0],)
    single = torch.stack([fn(a[i], b[i]) for i in range(a.shape[0])])
    torch.testing.assert_close(batched, single, rtol=0, atol=TIGHT)


def test_ssim_channel_mean_false_batched() -> None:
    a, b = _batch()
    per = ssim(a, b, channel_mean=False)
    assert per.shape == (a.shape[0], 3)
    torch.testing.assert_close(per.mean(dim=1), ssim(a, b), rtol=0, atol=TIGHT)


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_identical_images(name: str) -> None:
    x = to_t(photo(name).astype(np.float64) / 255.0)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(float(psnr(x, x))) and float(psnr(x, x)) > 0
    if x.shape[0] == 3:
        assert float(y_ssim(x, x)) == pytest.approx(1.0, abs=1e-12)
    xb = torch.stack([x, x])
    assert torch.isinf(psnr(xb, xb.clone())).all()


@pytest.mark.parametrize("fn", [psnr, ssim, ms_ssim, y_ssim])
def test_data_range_255_equals_unit_range(fn) -> None:
    im = photo("rocket")
    deg = jpeg_roundtrip(im, 25)
    a255, b255 = to_t(im.astype(np.float64)), to_t(deg.astype(np.float64))
    got255 = fn(a255, b255, data_range=255)
    got1 = fn(a255 / 255.0, b255 / 255.0, data_range=1.0)
    assert abs(float(got255) - float(got1)) < TIGHT
    if fn is ssim:
        ref = sk_ssim(im.astype(np.float64), deg.astype(np.float64), data_range=255)
        assert abs(float(got255) - ref) < TOL


# --------------------------------------------------------------------------------------------
# small images never crash (fallback window)
# --------------------------------------------------------------------------------------------

TINY_SHAPES = [
    (1, 1),
    (1, 7),
    (2, 2),
    (3, 5),
    (5, 3),
    (4, 40),
    (10, 10),
    (11, 11),
    (12, 30),
]


@pytest.mark.parametrize("hw", TINY_SHAPES)
@pytest.mark.parametrize("channels", [1, 3])
def test_tiny_images_never_crash(hw: tuple[int, int], channels: int) -> None:
    g = torch.Generator().manual_seed(hw[0] * 100 + hw[1])
    a = torch.rand(2, channels, *hw, generator=g, dtype=torch.float64)
    b = torch.rand(2, channels, *hw, generator=g, dtype=torch.float64)
    for fn in (ssim, ms_ssim, psnr):
        same = fn(a, a.clone())
        diff = fn(a, b)
        assert same.shape == diff.shape == (2,)
        assert torch.isfinite(diff).all()
        if fn is psnr:
            assert torch.isinf(same).all()
        else:
            torch.testing.assert_close(
                same, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12
            )
            assert (diff <= 1 + 1e-12).all() and (diff >= -1 - 1e-12).all()
    if channels == 3:
        assert torch.isfinite(y_ssim(a, b)).all()
        torch.testing.assert_close(
            y_ssim(a, a.clone()), torch.ones(2, dtype=torch.float64)
        )


@pytest.mark.parametrize("hw", TINY_SHAPES)
def test_small_window_fallback_matches_reference(hw: tuple[int, int]) -> None:
    """The shrunken window is the sigma-1.5 Gaussian truncated to the largest odd size <= min(H, W)."""
    rng = np.random.default_rng(hw[0] * 31 + hw[1])
    a = rng.random(hw)
    b = np.clip(a + rng.normal(0, 0.2, hw), 0, 1)
    m = min(min(hw), 11)
    win = m if m % 2 else m - 1
    ref, _ = ref_ssim_terms(a, b, (win - 1) // 2)
    assert abs(float(ssim(to_t(a), to_t(b))) - ref) < TOL


def test_one_pixel_is_luminance_only() -> None:
    a = torch.tensor([[[0.2]], [[0.9]]], dtype=torch.float64)  # [C=2, 1, 1]
    b = torch.tensor([[[0.4]], [[0.9]]], dtype=torch.float64)
    c1 = 0.01**2
    expected = ((2 * 0.2 * 0.4 + c1) / (0.2**2 + 0.4**2 + c1) + 1.0) / 2
    assert float(ssim(a, b)) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------------------------
# MS-SSIM
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kind,level",
    [("astronaut", "jpeg", 10), ("camera", "noise", 0.1), ("rocket", "jpeg", 60)],
)
def test_ms_ssim_matches_numpy_reference(name: str, kind: str, level: float) -> None:
    ref = photo(name).astype(np.float64) / 255.0
    deg = degrade(photo(name), kind, level)
    got = float(ms_ssim(to_t(ref), to_t(deg)))
    assert abs(got - ref_ms_ssim(ref, deg)) < TOL
    assert 0.0 <= got <= 1.0


@pytest.mark.parametrize("hw", [(10, 10), (22, 40), (64, 64), (100, 47), (200, 180)])
def test_ms_ssim_uses_as_many_scales_as_fit(hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    a = rng.random((*hw, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert abs(float(ms_ssim(to_t(a), to_t(b))) - ref_ms_ssim(a, b)) < TOL


def test_ms_ssim_single_weight_is_ssim() -> None:
    ref = photo("chelsea").astype(np.float64) / 255.0
    deg = degrade(photo("chelsea"), "jpeg", 30)
    x, y = to_t(ref), to_t(deg)
    assert float(ms_ssim(x, y, weights=[1.0])) == pytest.approx(
        float(ssim(x, y, channel_mean=False).clamp_min(0).mean()), abs=TIGHT
    )
    # a 10x10 image gets one scale: plain ssim with the small-window fallback
    assert float(ms_ssim(x[:, :10, :10], y[:, :10, :10])) == pytest.approx(
        float(
            ssim(x[:, :10, :10], y[:, :10, :10], channel_mean=False).clamp_min(0).mean()
        ),
        abs=TIGHT,
    )


def test_ms_ssim_custom_weights_and_monotone_in_noise() -> None:
    x = to_t(photo("astronaut").astype(np.float64) / 255.0)
    vals = [
        float(ms_ssim(x, to_t(degrade(photo("astronaut"), "noise", s))))
        for s in (0.01, 0.05, 0.2)
    ]
    assert vals[0] > vals[1] > vals[2]
    y = to_t(degrade(photo("astronaut"), "noise", 0.05))
    # weights are renormalised: scaling them all changes nothing
    a = ms_ssim(x, y, weights=[2 * w for w in MS_SSIM_WEIGHTS])
    assert float(a) == pytest.approx(vals[1], abs=TIGHT)
    assert float(
        ms_ssim(x, y, weights=torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64))
    ) == pytest.approx(vals[1], abs=TIGHT)


# --------------------------------------------------------------------------------------------
# luma SSIM
# --------------------------------------------------------------------------------------------


def test_y_ssim_matches_skimage_on_luma() -> None:
    im = photo("motorcycle")
    ref = im.astype(np.float64) / 255.0
    deg = degrade(im, "jpeg", 20)
    coef = np.asarray(BT601_LUMA)
    assert (
        abs(float(y_ssim(to_t(ref), to_t(deg))) - sk_ssim(ref @ coef, deg @ coef)) < TOL
    )


def test_y_ssim_requires_rgb() -> None:
    x = torch.rand(1, 16, 16, dtype=torch.float64)
    with pytest.raises(InputError, match="3 channels"):
        y_ssim(x, x)


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------

_X = torch.rand(3, 16, 16)


@pytest.mark.parametrize("fn", [psnr, ssim, ms_ssim, y_ssim])
@pytest.mark.parametrize(
    "a,b,match",
    [
        (_X, torch.rand(3, 16, 15), "same shape"),
        (torch.rand(16, 16), torch.rand(16, 16), "3 dims"),
        (torch.rand(1, 1, 3, 16, 16), torch.rand(1, 1, 3, 16, 16), "3 dims"),
        ((_X * 255).to(torch.uint8), (_X * 255).to(torch.uint8), "floating dtype"),
        (_X, _X.to(torch.int64), "floating dtype"),
        (_X.numpy(), _X, "torch.Tensor"),
        (torch.rand(3, 0, 16), torch.rand(3, 0, 16), "non-empty"),
    ],
)
def test_bad_inputs_raise(fn, a, b, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        fn(a, b)
    assert isinstance(info.value, ValueError) and isinstance(info.value, QpyrError)
    assert "Expected" in str(info.value) and "Got" in str(info.value)


@pytest.mark.parametrize("fn", [psnr, ssim, ms_ssim, y_ssim])
@pytest.mark.parametrize("dr", [0, -1.0, float("nan"), float("inf"), True, "1", None])
def test_bad_data_range_raises(fn, dr) -> None:
    with pytest.raises(InputError, match="data_range"):
        fn(_X, _X, data_range=dr)


@pytest.mark.parametrize(
    "weights", [[], [-1.0, 1.0], [0.0, 0.0], [float("nan")], "ab", 3]
)
def test_bad_ms_ssim_weights_raise(weights) -> None:
    with pytest.raises(InputError, match="weights"):
        ms_ssim(_X, _X, weights=weights)


# --------------------------------------------------------------------------------------------
# autograd and devices
# --------------------------------------------------------------------------------------------


def test_differentiable() -> None:
    x = torch.rand(1, 3, 24, 24, dtype=torch.float32)
    y = torch.rand(1, 3, 24, 24, dtype=torch.float32, requires_grad=True)
    (ssim(x, y) + ms_ssim(x, y) + psnr(x, y)).sum().backward()
    assert (
        y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    )


_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _DEVICES)
def test_result_on_input_device(device: str) -> None:
    x = torch.rand(2, 3, 32, 32, device=device)
    y = torch.rand(2, 3, 32, 32, device=device)
    for fn in (psnr, ssim, ms_ssim, y_ssim):
        out = fn(x, y)
        assert out.device == x.device and out.dtype == torch.float64
        torch.testing.assert_close(out.cpu(), fn(x.cpu(), y.cpu()), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------


@st.composite
def image_pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    elems = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False, width=64)
    a = draw(hnp.arrays(np.float64, (c, h, w), elements=elems))
    b = draw(hnp.arrays(np.float64, (c, h, w), elements=elems))
    return torch.from_numpy(a), torch.from_numpy(b)


@settings(max_examples=60, deadline=None)
@given(image_pairs())
def test_properties_symmetry_and_bounds(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    a, b = pair
    s_ab, s_ba = float(ssim(a, b)), float(ssim(b, a))
    assert s_ab == pytest.approx(s_ba, abs=1e-12)
    assert -1.0 - 1e-12 <= s_ab <= 1.0 + 1e-12
    m_ab, m_ba = float(ms_ssim(a, b)), float(ms_ssim(b, a))
    assert m_ab == pytest.approx(m_ba, abs=1e-12)
    assert 0.0 <= m_ab <= 1.0 + 1e-12
    assert float(psnr(a, b)) == float(psnr(b, a))
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------------------------
# compiled CPU kernel: agreement, determinism, lazy import
# --------------------------------------------------------------------------------------------


def _photo_crops() -> list[np.ndarray]:
    """uint8 [H, W, 3] crops of real photos, several sizes and aspect ratios."""
    from qpyr.samples import random_crops

    photos = [sample_photo(n) for n in ("astronaut", "coffee", "chelsea")]
    return list(random_crops(photos, 6, 16, 160, seed=3))


@pytest.mark.parametrize("fast", [False, True])
def test_compiled_ssim_matches_skimage_on_photo_crops(fast: bool) -> None:
    for i, im in enumerate(_photo_crops()):
        ref = im.astype(np.float64) / 255.0
        deg = degrade(im, "jpeg", 20 + 10 * i)
        got = ssim(to_t(ref), to_t(deg), fast=fast)
        assert got.dtype == (torch.float32 if fast else torch.float64)
        assert abs(float(got) - sk_ssim(ref, deg)) < TOL
        # data range 255 on uint8-valued floats
        got255 = ssim(to_t(ref * 255), to_t(deg * 255), data_range=255, fast=fast)
        assert abs(float(got255) - sk_ssim(ref * 255, deg * 255, data_range=255)) < TOL


@pytest.mark.parametrize("fast", [False, True])
def test_compiled_ssim_matches_torch_path(fast: bool) -> None:
    """The kernel and the torch implementation agree (also below the 11 px window).

    In float32 both round differently (the kernel filters moments of ``x - R/2``, folds the
    symmetric taps), so each is held against the float64 value instead of against the other.
    """
    im = photo("coffee")
    ref = to_t(im.astype(np.float64) / 255.0)
    deg = to_t(degrade(im, "noise", 0.05))
    for h, w in [(256, 200), (11, 40), (7, 9), (2, 5), (1, 1)]:
        a, b = ref[:, :h, :w], deg[:, :h, :w]
        got = ssim(a, b, fast=fast, channel_mean=False)
        want = ssim(a, b, fast=fast, channel_mean=False, backend="torch")
        assert got.dtype == want.dtype
        if fast:
            exact = ssim(a, b, channel_mean=False, backend="torch")
            torch.testing.assert_close(got.double(), exact, rtol=0, atol=1e-5)
            torch.testing.assert_close(want.double(), exact, rtol=0, atol=3e-5)
        else:
            torch.testing.assert_close(got, want, rtol=0, atol=TIGHT)


@st.composite
def photo_crops(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A crop of a real photo (uint8 ``[h, w, 3]``, sides 11..96, any offset) and its JPEG."""
    im = sample_photo(draw(st.sampled_from(["astronaut", "coffee", "chelsea", "rocket"])))
    h = draw(st.integers(11, 96))
    w = draw(st.integers(11, 96))
    top = draw(st.integers(0, im.shape[0] - h))
    left = draw(st.integers(0, im.shape[1] - w))
    crop = np.ascontiguousarray(im[top : top + h, left : left + w])
    return crop, jpeg_roundtrip(crop, draw(st.integers(5, 95)))


@settings(max_examples=60, deadline=None)
@given(photo_crops())
def test_compiled_ssim_matches_skimage_on_random_crops(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    """Every crop size (so every count of 4-row blocks and leftover rows) is within 1e-4 of
    scikit-image in both precisions, at data range 1 and 255."""
    a, b = (p.astype(np.float64) / 255.0 for p in pair)
    want = sk_ssim(a, b)
    for fast in (False, True):
        assert abs(float(ssim(to_t(a), to_t(b), fast=fast)) - want) < TOL
    want255 = sk_ssim(a * 255, b * 255, data_range=255)
    got255 = ssim(to_t(a * 255), to_t(b * 255), data_range=255, fast=True)
    assert abs(float(got255) - want255) < TOL


@pytest.mark.parametrize("hw", [(11, 11), (14, 30), (15, 23), (64, 64), (1, 1), (3, 9)])
def test_compiled_ssim_of_identical_images_is_exactly_one(hw: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(hw[0] * hw[1]))
    for fast in (False, True):
        assert (ssim(x, x.clone(), fast=fast, channel_mean=False) == 1.0).all()


def test_compiled_ssim_edge_cases_match_skimage() -> None:
    rng = np.random.default_rng(5)
    const = np.full((40, 30, 3), 0.5)
    noisy = np.clip(const + rng.normal(0, 0.05, const.shape), 0, 1)
    gray = photo("camera").astype(np.float64) / 255.0
    cases = [
        (const, const),  # constant images: identical
        (const, np.full_like(const, 0.25)),  # constant images: different levels
        (const, noisy),
        (gray, degrade(photo("camera"), "jpeg", 30)),  # 1 channel
        (rng.random((11, 11)), rng.random((11, 11))),  # the smallest skimage accepts
    ]
    for a, b in cases:
        for fast in (False, True):
            assert abs(float(ssim(to_t(a), to_t(b), fast=fast)) - sk_ssim(a, b)) < TOL


def test_ssim_backend_is_checked() -> None:
    with pytest.raises(InputError, match="backend"):
        ssim(_X, _X, backend="numpy")  # type: ignore[arg-type]


_DETERMINISM_SCRIPT = """
import numpy as np
import torch
torch.set_num_threads(1)
from qpyr.metrics import ms_ssim, ssim
from qpyr.samples import random_crops, sample_photo
photos = [sample_photo(n) for n in ("astronaut", "coffee", "chelsea")]
rng = np.random.default_rng(11)
for im in random_crops(photos, 5, 12, 200, seed=9):
    a = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).float() / 255
    b = (a + torch.from_numpy(rng.normal(0, 0.03, a.shape)).float()).clamp(0, 1)
    vals = [ssim(a, b, fast=True), ssim(a, b), ssim(a, b, channel_mean=False), ms_ssim(a, b)]
    print(" ".join(float(v).hex() for t in vals for v in t.reshape(-1)))
"""


def test_compiled_ssim_is_deterministic_across_processes() -> None:
    """Same bits from a fresh single-thread subprocess as from this process (more threads)."""
    import contextlib
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(qpyr_file)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", PYTHONPATH=path)
    child = subprocess.run(
        [sys.executable, "-c", _DETERMINISM_SCRIPT],
        capture_output=True, text=True, check=True, env=env,
    ).stdout
    buf = io.StringIO()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(max(2, threads))
        with contextlib.redirect_stdout(buf):
            script = _DETERMINISM_SCRIPT.replace("torch.set_num_threads(1)", "")
            exec(compile(script, "<determinism>", "exec"), {})
    finally:
        torch.set_num_threads(threads)
    assert child.strip() and buf.getvalue() == child


def test_import_qpyr_does_not_import_numba() -> None:
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(qpyr_file)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    code = "import sys, qpyr, qpyr.metrics; print('numba' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env=dict(os.environ, PYTHONPATH=path),
    ).stdout
    assert out.strip() == "False"
