"""YCbCr colour conversion and 4:2:0 chroma resampling, written once in torch.

Every function takes and returns ``float32`` tensors laid out ``[N, C, H, W]`` and runs on
whatever device its input lives on, so the encoder (CPU) and the decoder (CPU or CUDA) share
one definition of the maths. The specification is ``spec/codecs/ycbcr420.md``.

Value ranges
    RGB samples are in ``[0, 255]``. Y is in ``[0, 255]``; Cb and Cr are in ``[0, 255]`` with
    neutral chroma at 128 (JFIF / BT.601 full range). Nothing here rounds or clamps, except
    :func:`ycbcr_to_rgb`, which does not clamp either: callers clamp once, at the very end.

Chroma siting
    JPEG/JFIF "centred" siting: a 4:2:0 chroma sample sits at the centre of its 2x2 block of
    luma samples, i.e. at half-sample offset (0.5, 0.5) in luma coordinates.

Downsampling filter
    Separable 4-tap triangle ``[1, 3, 3, 1] / 8`` centred on that siting, edges replicated.
    It is the adjoint of the upsampler below (libjpeg's "fancy" upsampling), so a flat or
    linear ramp survives a down/up round trip unchanged, and it aliases less than a 2x2 box.

Upsampling filter
    libjpeg's "fancy" (triangle) h2v2 upsampling, separable: the output sample at luma
    position ``2i`` is ``0.75 c[i] + 0.25 c[i-1]`` and at ``2i + 1`` it is
    ``0.75 c[i] + 0.25 c[i+1]``, with ``c`` edge-replicated. Never nearest-neighbour.
"""

from __future__ import annotations

import torch

from qpyr.errors import CodecError

__all__ = [
    "RGB_TO_YCBCR",
    "YCBCR_TO_RGB",
    "downsample_420",
    "rgb_to_ycbcr",
    "upsample_420",
    "ycbcr_to_rgb",
]

# JFIF (BT.601 full range) matrices; rows give Y, Cb, Cr (resp. R, G, B).
RGB_TO_YCBCR: tuple[tuple[float, float, float], ...] = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)
YCBCR_TO_RGB: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136286, -0.714136286),
    (1.0, 1.772, 0.0),
)
_CHROMA_OFFSET = 128.0


def _check(x: torch.Tensor, channels: int | None = None) -> None:
    if x.dim() != 4:
        raise CodecError(f"Expected a tensor [N, C, H, W]. Got shape {tuple(x.shape)}.")
    if channels is not None and x.shape[1] != channels:
        raise CodecError(f"Expected {channels} channels. Got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise CodecError(f"Expected a floating-point tensor. Got {x.dtype}.")


def _mix(
    x: torch.Tensor,
    matrix: tuple[tuple[float, float, float], ...],
    bias: tuple[float, float, float],
) -> torch.Tensor:
    """``out[o] = ((matrix[o][0] * x[0] + matrix[o][1] * x[1]) + matrix[o][2] * x[2]) + bias[o]``
    per pixel, in that order, in ``x``'s dtype.

    Elementwise, so the result does not depend on the thread count (a 1x1 ``conv2d`` gave
    values one ulp apart at 1 and 2 torch threads for some image widths, which moved a
    quantised coefficient now and then)."""
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    out = []
    for row, b in zip(matrix, bias, strict=True):
        out.append(((x0 * row[0] + x1 * row[1]) + x2 * row[2]) + b)
    return torch.stack(out, dim=1)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """RGB ``Tensor[N, 3, H, W]`` in [0, 255] -> YCbCr in [0, 255] (chroma centred on 128)."""
    _check(rgb, 3)
    return _mix(rgb, RGB_TO_YCBCR, (0.0, _CHROMA_OFFSET, _CHROMA_OFFSET))


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """YCbCr ``Tensor[N, 3, H, W]`` (chroma centred on 128) -> RGB, nominally [0, 255], unclamped."""
    _check(ycc, 3)
    # Fold the -128 chroma offset into the bias: bias = -M @ (0, 128, 128).
    r0, r1, r2 = (-_CHROMA_OFFSET * (row[1] + row[2]) for row in YCBCR_TO_RGB)
    return _mix(ycc, YCBCR_TO_RGB, (r0, r1, r2))


def downsample_420(x: torch.Tensor) -> torch.Tensor:
    """Halve ``Tensor[N, C, H, W]`` in both axes with the [1, 3, 3, 1]/8 filter.

    H and W must be even. Output is ``[N, C, H/2, W/2]``, sample ``(i, j)`` centred on luma
    position ``(2i + 0.5, 2j + 0.5)``.
    """
    _check(x)
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        raise CodecError(f"Expected even height and width. Got {h}x{w}.")
    return _down_axis(_down_axis(x, 2), 3)


def _down_axis(x: torch.Tensor, axis: int) -> torch.Tensor:
    n = x.shape[axis]
    first = x.narrow(axis, 0, 1)
    last = x.narrow(axis, n - 1, 1)
    p = torch.cat([first, x, last], dim=axis)  # p[k + 1] = x[k], edge replicated
    # output i uses x[2i-1], x[2i], x[2i+1], x[2i+2] = p[2i], p[2i+1], p[2i+2], p[2i+3]
    a = p.narrow(axis, 0, n).unflatten(axis, (n // 2, 2))
    b = p.narrow(axis, 2, n).unflatten(axis, (n // 2, 2))
    ax = axis + 1
    return (a.select(ax, 0) + 3.0 * a.select(ax, 1) + 3.0 * b.select(ax, 0) + b.select(ax, 1)) * 0.125


def upsample_420(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Double ``Tensor[N, C, h, w]`` with libjpeg's fancy (triangle) upsampling, crop to H x W.

    ``height`` must be ``2h - 1`` or ``2h`` and ``width`` ``2w - 1`` or ``2w``.
    """
    _check(x)
    h, w = x.shape[-2:]
    if not (2 * h - 1 <= height <= 2 * h and 2 * w - 1 <= width <= 2 * w):
        raise CodecError(f"Expected output size within one sample of {2 * h}x{2 * w}. Got {height}x{width}.")
    # Bilinear 2x with align_corners=False is exactly the triangle filter above: output 2i
    # samples input coordinate i - 1/4, output 2i + 1 samples i + 1/4, edges clamped.
    y = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return y[..., :height, :width]
