"""Image quality metrics in torch: PSNR, SSIM, MS-SSIM and luma SSIM.

All functions are pure torch (no numpy in the compute path), batched, differentiable and run on
whatever device the inputs live on. Every metric is computed in ``float64`` internally and
returned as a ``float64`` tensor on the inputs' device.

Layout and shapes
-----------------
Inputs are two tensors of identical shape, either a single image ``Tensor[C, H, W]`` (the result
is a 0-d tensor) or a batch ``Tensor[N, C, H, W]`` (the result is ``Tensor[N]``). They must have a
floating dtype (``float16``, ``bfloat16``, ``float32``, ``float64``) and live on the same device.
Values are expected in ``[0, data_range]`` (e.g. ``[0, 1]`` with the default ``data_range=1.0``,
or ``[0, 255]`` with ``data_range=255``); values outside that range are not clamped or rejected,
they simply enter the formulas. NaN in any input gives NaN in the result.

SSIM conventions (:func:`ssim`)
-------------------------------
Wang et al. 2004: 11x11 Gaussian window with sigma 1.5 (a 1-D Gaussian truncated at radius 5,
i.e. ``truncate=3.5``, normalised to sum 1, applied separably), ``K1=0.01``, ``K2=0.03``,
population (biased) variances and covariance, and the SSIM map averaged over the *valid* region
only (the ``(win-1)//2`` border strip is ignored), then averaged over channels. This reproduces
``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=data_range,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` to ~1e-12: scikit-image filters
with ``mode='reflect'`` but then crops exactly the pixels that the reflection touches, so a
"valid" convolution (no padding at all) gives the same numbers.

Backends
--------
On CPU tensors that do not require gradients, SSIM (and so MS-SSIM and luma SSIM) is computed by
a numba-compiled kernel (``qpyr._kernels.ssim``, compiled on first use and cached on disk):
separable sums in one fixed order, single-threaded, no ``fastmath``, so a value is bit-identical
across processes, thread counts and machines, which packing needs to decide an encoding the
same way everywhere. Tensors on other devices, or that require gradients, use the torch
implementation (differentiable, on the inputs' device); ``backend="torch"`` forces it.

Small images (fallback)
-----------------------
scikit-image raises for images smaller than 11 px on a side; :func:`ssim` does not. When
``min(H, W) < 11`` the window shrinks to the largest odd size ``win <= min(H, W)``
(so ``win`` is one of 9, 7, 5, 3, 1): the same sigma-1.5 Gaussian, truncated at radius
``(win-1)//2`` and renormalised to sum 1. The map is then averaged over its valid region of
``(H-win+1) x (W-win+1)`` pixels as usual. For ``win == 1`` (an image with a side of 1 or 2 px)
the window is a single pixel: local variances are 0, so SSIM reduces to the per-pixel luminance
term ``(2xy + C1) / (x^2 + y^2 + C1)`` averaged over all pixels. Identical inputs always give
exactly 1.0 and no size ever raises (only empty images, with a zero-size dimension, do).

MS-SSIM conventions (:func:`ms_ssim`)
-------------------------------------
Wang, Simoncelli & Bovik 2003 with weights ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``. At each
scale but the last the mean contrast-structure term ``cs`` is taken; at the last scale the full
mean SSIM. Between scales the images are downsampled by a 2x2 average pool with stride 2 (an odd
trailing row/column is dropped). The number of scales used is ``min(len(weights), S)`` where
``S`` is the number of scales at which the image still has ``min(H, W) >= 11`` (at least 1:
an image smaller than 11 px gets a single scale with the small-window fallback of :func:`ssim`);
the weights of the scales used are renormalised to sum 1. Per-scale terms are clamped at 0 before
exponentiation (negative ``cs`` would give NaN under a fractional power), the product over scales
is taken per channel and then averaged over channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from qpyr.errors import InputError

__all__ = [
    "BT601_LUMA",
    "MS_SSIM_WEIGHTS",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WIN_SIZE",
    "ms_ssim",
    "psnr",
    "ssim",
    "y_ssim",
]

#: Wang et al. 2004 constants.
SSIM_K1: float = 0.01
SSIM_K2: float = 0.03
SSIM_SIGMA: float = 1.5
#: 11-tap window: radius ``int(3.5 * 1.5 + 0.5) == 5`` as in scipy.ndimage / scikit-image.
SSIM_WIN_SIZE: int = 11
#: Standard MS-SSIM scale weights, finest scale first (Wang, Simoncelli & Bovik 2003).
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: ITU-R BT.601 luma coefficients for R, G, B.
BT601_LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_pair(
    a: object, b: object, fn: str, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor, bool]:
    """Validate a pair of images; return them as ``dtype [N, C, H, W]`` and whether batched."""
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tensor):
            raise InputError(
                f"{fn}: Expected `{name}` to be a torch.Tensor. Got {type(t).__name__}."
            )
        if t.ndim not in (3, 4):
            raise InputError(
                f"{fn}: Expected `{name}` to have 3 dims [C, H, W] or 4 dims [N, C, H, W]. "
                f"Got {t.ndim} dims with shape {tuple(t.shape)}."
            )
        if not t.is_floating_point():
            raise InputError(
                f"{fn}: Expected `{name}` to have a floating dtype (float16/bfloat16/float32/"
                f"float64); convert integer images with .float(). Got {t.dtype}."
            )
    assert isinstance(a, Tensor) and isinstance(b, Tensor)
    if a.shape != b.shape:
        raise InputError(
            f"{fn}: Expected `a` and `b` to have the same shape. "
            f"Got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if a.device != b.device:
        raise InputError(
            f"{fn}: Expected `a` and `b` on the same device. Got {a.device} and {b.device}."
        )
    if any(s == 0 for s in a.shape[-3:]):
        raise InputError(
            f"{fn}: Expected non-empty images (C, H, W all >= 1). Got shape {tuple(a.shape)}."
        )
    batched = a.ndim == 4
    if not batched:
        a = a.unsqueeze(0)
        b = b.unsqueeze(0)
    return a.to(dtype), b.to(dtype), batched


def _kernel_dtype(a: object, b: object) -> torch.dtype | None:
    """The dtype that CPU inputs keep for a compiled kernel (float32 and float64 pairs of one
    dtype that need no gradient: the kernel widens each sample itself), else None (convert to
    float64 first)."""
    if (isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype == b.dtype
            and a.dtype in (torch.float32, torch.float64) and a.device.type == "cpu"
            and not (a.requires_grad or b.requires_grad)):
        return a.dtype
    return None


def _check_backend(backend: object, fn: str) -> None:
    if backend not in ("auto", "torch"):
        raise InputError(f"{fn}: Expected `backend` to be 'auto' or 'torch'. Got {backend!r}.")


def _check_data_range(data_range: object, fn: str) -> float:
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)):
        raise InputError(
            f"{fn}: Expected `data_range` to be a positive finite number. "
            f"Got {type(data_range).__name__}."
        )
    value = float(data_range)
    if not math.isfinite(value) or value <= 0:
        raise InputError(
            f"{fn}: Expected `data_range` to be a positive finite number. Got {data_range!r}."
        )
    return value


def _unbatch(out: Tensor, batched: bool) -> Tensor:
    return out if batched else out[0]


# --------------------------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------------------------


def psnr(a: Tensor, b: Tensor, *, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB, ``10 * log10(data_range**2 / MSE)``.

    The MSE is taken over all channels and pixels of each image (matches
    ``skimage.metrics.peak_signal_noise_ratio``).

    Args:
        a: ``Tensor[C, H, W]`` or ``Tensor[N, C, H, W]``, floating dtype, values in
            ``[0, data_range]``.
        b: same shape, dtype kind and device as ``a``.
        data_range: peak value of the signal (``1.0`` for ``[0, 1]`` images, ``255`` for
            ``[0, 255]``).

    Returns:
        ``float64`` tensor on the inputs' device: 0-d for ``[C, H, W]`` inputs, ``[N]`` for
        ``[N, C, H, W]`` inputs. Identical images give ``+inf``.

    Raises:
        InputError (a ``ValueError``): wrong type/ndim, non-float dtype, mismatched shapes or
            devices, empty images, or a non-positive ``data_range``.
    """
    x, y, batched = _check_pair(a, b, "psnr", dtype=_kernel_dtype(a, b) or torch.float64)
    r = _check_data_range(data_range, "psnr")
    if _kernel_dtype(x, y) is not None:
        from qpyr._kernels.mse import mean_squared_error

        mse = torch.from_numpy(mean_squared_error(x.contiguous().numpy(), y.contiguous().numpy()))
    else:
        mse = (x - y).square().mean(dim=(1, 2, 3))
    out = 10.0 * torch.log10((r * r) / mse)  # mse == 0 -> r*r/0 == inf -> inf dB
    return _unbatch(out, batched)


# --------------------------------------------------------------------------------------------
# SSIM core
# --------------------------------------------------------------------------------------------


def _window_size(h: int, w: int) -> int:
    """Window side for an ``h x w`` image: 11, or the largest odd size <= min(h, w)."""
    m = min(h, w, SSIM_WIN_SIZE)
    return m if m % 2 == 1 else m - 1


def _gaussian_taps(win: int) -> list[float]:
    """Normalised 1-D Gaussian (sigma 1.5) truncated to ``win`` taps, as Python floats.

    Same taps as scipy.ndimage's ``_gaussian_kernel1d`` for radius ``(win-1)//2``.
    """
    radius = (win - 1) // 2
    g = [
        math.exp(-0.5 / (SSIM_SIGMA * SSIM_SIGMA) * i * i)
        for i in range(-radius, radius + 1)
    ]
    total = math.fsum(g)
    return [v / total for v in g]


def _filter_valid(x: Tensor, taps: list[float], dim: int) -> Tensor:
    """Valid (unpadded) 1-D correlation of ``x`` with ``taps`` along ``dim``.

    Implemented as a sum of shifted slices accumulated in place: pure elementwise torch ops,
    so it runs on any device, needs no im2col buffer (memory = one output tensor) and on CPU
    is faster than a grouped float64 ``conv2d``.
    """
    k = len(taps)
    n = x.shape[dim] - k + 1
    out = x.narrow(dim, 0, n) * taps[0]
    for i in range(1, k):
        out.add_(x.narrow(dim, i, n), alpha=taps[i])
    return out


def _ssim_maps(x: Tensor, y: Tensor, r: float, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Per-channel mean SSIM and mean contrast-structure term over the valid region.

    ``x``, ``y``: float ``[N, C, H, W]`` (float64, or float32 for the fast path). Returns two
    ``[N, C]`` tensors of that dtype. CPU tensors without autograd go to the compiled kernel
    unless ``backend == "torch"``.
    """
    if (
        backend == "auto"
        and x.device.type == "cpu"
        and not (x.requires_grad or y.requires_grad)
    ):
        return _ssim_maps_compiled(x, y, r)
    return _ssim_maps_torch(x, y, r)


def _ssim_maps_compiled(x: Tensor, y: Tensor, r: float) -> tuple[Tensor, Tensor]:
    """:func:`_ssim_maps` by the numba kernel (CPU, deterministic bits).

    All ``N * C`` planes go to the kernel in one call; the window of an ``h x w`` image is
    built once per size (``_compiled_taps``), so a call costs little more than the kernel.
    """
    from qpyr._kernels.ssim import ssim_plane_means

    n, c, h, w = x.shape
    planes = ssim_plane_means(
        x.detach().contiguous().view(n * c, h, w).numpy(),
        y.detach().contiguous().view(n * c, h, w).numpy(),
        _compiled_taps(_window_size(h, w)),
        (SSIM_K1 * r) ** 2,
        (SSIM_K2 * r) ** 2,
        0.5 * r,
    )
    out = torch.from_numpy(planes).to(x.dtype)  # [N * C, 2]
    return out[:, 0].view(n, c), out[:, 1].view(n, c)


@cache
def _compiled_taps(win: int) -> tuple[float, ...]:
    """:func:`_gaussian_taps` as a tuple, computed once per window size."""
    return tuple(_gaussian_taps(win))


def _ssim_maps_torch(x: Tensor, y: Tensor, r: float) -> tuple[Tensor, Tensor]:
    """:func:`_ssim_maps` in torch ops on the inputs' device (differentiable)."""
    _, c, h, w = x.shape
    win = _window_size(h, w)
    c1 = (SSIM_K1 * r) ** 2
    c2 = (SSIM_K2 * r) ** 2

    # Filter the five moment images together with a separable, "valid" Gaussian.
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # [N, 5C, H, W]
    if win > 1:
        taps = _gaussian_taps(win)
        if stack.dtype == torch.float32 and stack.device.type != "cpu":
            # float32 on an accelerator: grouped conv2d (two kernels instead of 22). On CPU the
            # shifted-slice sums below are faster than a grouped conv2d.
            g = stack.shape[1]
            t = torch.tensor(taps, dtype=stack.dtype, device=stack.device)
            stack = torch.nn.functional.conv2d(stack, t.view(1, 1, 1, win).expand(g, 1, 1, win).contiguous(), groups=g)
            stack = torch.nn.functional.conv2d(stack, t.view(1, 1, win, 1).expand(g, 1, win, 1).contiguous(), groups=g)
        else:
            stack = _filter_valid(_filter_valid(stack, taps, -1), taps, -2)
    ux, uy, uxx, uyy, uxy = torch.split(stack, c, dim=1)

    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy

    a1 = 2.0 * ux * uy + c1
    a2 = 2.0 * vxy + c2
    b1 = ux * ux + uy * uy + c1
    b2 = vx + vy + c2

    cs_map = a2 / b2
    ssim_map = (a1 * a2) / (b1 * b2)
    return ssim_map.mean(dim=(2, 3)), cs_map.mean(dim=(2, 3))


def ssim(
    a: Tensor,
    b: Tensor,
    *,
    data_range: float = 1.0,
    channel_mean: bool = True,
    fast: bool = False,
    backend: Literal["auto", "torch"] = "auto",
) -> Tensor:
    """Structural similarity (Wang et al. 2004), matching scikit-image's Wang settings.

    Equivalent to ``skimage.metrics.structural_similarity(a, b, channel_axis=-1,
    data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``
    on each image (11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03, population variances,
    mean over the valid region, then mean over channels). Images with a side < 11 px use a
    shrunken window instead of raising; see the module docstring ("Small images").

    Args:
        a: ``Tensor[C, H, W]`` or ``Tensor[N, C, H, W]``, floating dtype, values in
            ``[0, data_range]``.
        b: same shape, dtype kind and device as ``a``.
        data_range: peak-to-peak range of the signal (sets ``C1=(K1*R)**2``, ``C2=(K2*R)**2``).
        channel_mean: if True (default) average over channels (RGB-SSIM); if False return one
            value per channel.
        fast: compute the filter sums and the SSIM formula in float32 (the means are still
            summed in float64 on CPU); agrees with the float64 path to ~1e-6. Used when
            packing, where SSIM is measured per level and per candidate encoding.
        backend: ``"auto"`` (default): the compiled, deterministic kernel for CPU tensors that
            do not require gradients, torch ops otherwise; ``"torch"``: always torch ops (the
            differentiable implementation, kept as the reference for benchmarks).

    Returns:
        ``float64`` tensor (``float32`` with ``fast=True``) on the inputs' device, values in
        ``[-1, 1]`` (1 for identical images):
        with ``channel_mean=True`` 0-d for ``[C, H, W]`` and ``[N]`` for ``[N, C, H, W]``
        inputs; with ``channel_mean=False`` ``[C]`` resp. ``[N, C]``.

    Raises:
        InputError (a ``ValueError``): wrong type/ndim, non-float dtype, mismatched shapes or
            devices, empty images, a non-positive ``data_range`` or an unknown ``backend``.
    """
    x, y, batched = _check_pair(a, b, "ssim", torch.float32 if fast else torch.float64)
    r = _check_data_range(data_range, "ssim")
    _check_backend(backend, "ssim")
    per_channel, _ = _ssim_maps(x, y, r, backend)
    out = per_channel.mean(dim=1) if channel_mean else per_channel
    return _unbatch(out, batched)


def _check_weights(weights: Sequence[float] | Tensor | None) -> tuple[float, ...]:
    if weights is None:
        return MS_SSIM_WEIGHTS
    if isinstance(weights, Tensor):
        if weights.ndim != 1:
            raise InputError(
                f"ms_ssim: Expected `weights` to be a 1-D sequence of numbers. "
                f"Got a tensor of shape {tuple(weights.shape)}."
            )
        values = tuple(float(v) for v in weights.detach().cpu().tolist())
    else:
        try:
            values = tuple(float(v) for v in weights)
        except (TypeError, ValueError):
            raise InputError(
                f"ms_ssim: Expected `weights` to be a sequence of numbers. Got {weights!r}."
            ) from None
    if (
        not values
        or any(not math.isfinite(v) or v < 0 for v in values)
        or sum(values) <= 0
    ):
        raise InputError(
            "ms_ssim: Expected `weights` to be a non-empty sequence of finite, non-negative "
            f"numbers with a positive sum. Got {values!r}."
        )
    return values


def ms_ssim(
    a: Tensor,
    b: Tensor,
    *,
    data_range: float = 1.0,
    weights: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003).

    ``MS-SSIM = prod_{j < M} cs_j ** w_j * ssim_M ** w_M`` per channel, then the mean over
    channels. Scale 1 is the input; each next scale is a 2x2 average pool (stride 2, odd trailing
    row/column dropped). ``M = min(len(weights), S)`` where ``S`` is the number of scales at which
    ``min(H, W) >= 11`` (but at least 1); the first ``M`` weights are renormalised to sum 1, so a
    256x256 image uses all 5 scales, a 64x64 image 3, and a 10x10 image a single scale (which is
    exactly :func:`ssim` with its small-window fallback). Per-scale terms are clamped at 0 before
    exponentiation. ``weights=[1.0]`` gives plain :func:`ssim` (with ``channel_mean=True``)
    clamped at 0.

    Args:
        a: ``Tensor[C, H, W]`` or ``Tensor[N, C, H, W]``, floating dtype, values in
            ``[0, data_range]``.
        b: same shape, dtype kind and device as ``a``.
        data_range: peak-to-peak range of the signal.
        weights: per-scale exponents, finest first; default
            ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``. Finite, non-negative, positive sum.
            Should the weights of the scales actually used all be 0 (say ``(0, 0, 0, 0, 1)``
            on an image too small for 5 scales) those scales are weighted equally instead.

    Returns:
        ``float64`` tensor on the inputs' device, values in ``[0, 1]`` (1 for identical images):
        0-d for ``[C, H, W]`` inputs, ``[N]`` for ``[N, C, H, W]`` inputs.

    Raises:
        InputError (a ``ValueError``): wrong type/ndim, non-float dtype, mismatched shapes or
            devices, empty images, a non-positive ``data_range`` or invalid ``weights``.
    """
    x, y, batched = _check_pair(a, b, "ms_ssim")
    r = _check_data_range(data_range, "ms_ssim")
    w_all = _check_weights(weights)

    h, w = x.shape[-2:]
    scales = 1
    while scales < len(w_all) and min(h >> scales, w >> scales) >= SSIM_WIN_SIZE:
        scales += 1
    used = w_all[:scales]
    total = sum(used)
    if total <= 0:  # e.g. weights=(0, 1) on an image that allows only one scale
        used = (1.0,) * scales
        total = float(scales)
    norm = [v / total for v in used]

    result = torch.ones(x.shape[:2], dtype=torch.float64, device=x.device)  # [N, C]
    for j in range(scales):
        s, cs = _ssim_maps(x, y, r)
        term = s if j == scales - 1 else cs
        result = result * term.clamp_min(0.0).pow(norm[j])
        if j < scales - 1:
            x = F.avg_pool2d(x, kernel_size=2, stride=2)
            y = F.avg_pool2d(y, kernel_size=2, stride=2)
    return _unbatch(result.mean(dim=1), batched)


# --------------------------------------------------------------------------------------------
# Luma SSIM (extra)
# --------------------------------------------------------------------------------------------


def _luma(x: Tensor) -> Tensor:
    kr, kg, kb = BT601_LUMA
    return (kr * x[:, 0:1] + kg * x[:, 1:2] + kb * x[:, 2:3]).contiguous()


def y_ssim(a: Tensor, b: Tensor, *, data_range: float = 1.0) -> Tensor:
    """SSIM on the BT.601 luma channel of RGB images (extra metric).

    ``Y = 0.299 R + 0.587 G + 0.114 B`` (range-preserving: no 16..235 studio-swing offset, so
    ``Y`` stays in ``[0, data_range]``), then :func:`ssim` on the single ``Y`` channel.

    Args:
        a: ``Tensor[3, H, W]`` or ``Tensor[N, 3, H, W]`` RGB, floating dtype, values in
            ``[0, data_range]``.
        b: same shape, dtype kind and device as ``a``.
        data_range: peak-to-peak range of the signal.

    Returns:
        ``float64`` tensor on the inputs' device: 0-d for ``[3, H, W]``, ``[N]`` for
        ``[N, 3, H, W]`` inputs.

    Raises:
        InputError (a ``ValueError``): as :func:`ssim`, or if the channel count is not 3.
    """
    x, y, batched = _check_pair(a, b, "y_ssim")
    r = _check_data_range(data_range, "y_ssim")
    if x.shape[1] != 3:
        raise InputError(
            f"y_ssim: Expected RGB images with 3 channels. Got {x.shape[1]} channels "
            f"(shape {tuple(a.shape)})."
        )
    per_channel, _ = _ssim_maps(_luma(x), _luma(y), r)
    return _unbatch(per_channel[:, 0], batched)
