"""Pyramid build: any source array to a list of float32 levels.

Level 0 is the finest (the source size); level ``l`` has size ``ceil(H / 2**l) x ceil(W / 2**l)``.
Halving rounds *up*, so odd sizes keep every pixel: the last row/column of an odd-sized level
is averaged with its own replica (edge replication), i.e. area-weighted over the pixels that
exist. A 1x1 image stays 1x1 at every level.

Arrays here are numpy ``[C, H, W]``. Values are in *level units*: for uint8/uint16 sources
the canonical level is rounded back to the source's integer grid (so lossless storage of
coarse levels is exact and every lossy level is measured against that grid); for float
sources levels are float32.
"""

from __future__ import annotations

import enum
import math

import numpy as np

from qpyr.errors import InputError

__all__ = ["Filter", "DEFAULT_MIN_SIDE", "level_shape", "default_levels", "build_pyramid"]

#: Default floor for the automatic level count: levels are added while the short side of the
#: next level stays >= this many pixels (a 512x512 image gets 5 levels: 512 ... 32).
DEFAULT_MIN_SIDE = 32

#: Hard cap on the number of levels (a 2**31-pixel side needs 32).
MAX_LEVELS = 32


class Filter(str, enum.Enum):
    """Downsampling filter used between consecutive levels."""

    #: 2x2 box average (area interpolation); the default: no aliasing gain, no ringing.
    AREA = "area"
    #: Gaussian blur (sigma 1.0 in the finer level, 5 taps, reflect) then 2x2 area: softer,
    #: less aliasing on fine textures.
    GAUSSIAN = "gaussian"
    #: Top-left sample of each 2x2 block: sharp and aliased; cheap.
    NEAREST = "nearest"


def level_shape(height: int, width: int, level: int) -> tuple[int, int]:
    """Return ``(h, w)`` of ``level`` for a level-0 size ``height x width``."""
    f = 1 << level
    return (-(-height // f), -(-width // f))


def default_levels(height: int, width: int, min_side: int = DEFAULT_MIN_SIDE) -> int:
    """Number of levels (level 0 included) while the short side stays >= ``min_side``."""
    if min_side < 1:
        raise InputError(f"Expected min_side >= 1. Got {min_side}.")
    short = min(height, width)
    if short < 2 * min_side:
        return 1
    return min(MAX_LEVELS, 1 + int(math.floor(math.log2(short / min_side))))


def _halve(x: np.ndarray, filt: Filter) -> np.ndarray:
    c, h, w = x.shape
    if filt is Filter.NEAREST:
        return np.ascontiguousarray(x[:, ::2, ::2])
    if filt is Filter.GAUSSIAN:
        x = _gaussian_blur(x)
    ph, pw = h % 2, w % 2
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="edge")
    h2, w2 = x.shape[1] // 2, x.shape[2] // 2
    y = x.reshape(c, h2, 2, w2, 2).astype(np.float32, copy=False)
    out: np.ndarray = y.mean(axis=(2, 4), dtype=np.float32)
    return out


_GAUSS5 = np.array([0.05448868, 0.24420134, 0.40261995, 0.24420134, 0.05448868], np.float32)


def _gaussian_blur(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    for axis in (1, 2):
        if x.shape[axis] < 3:
            continue
        pad = [(0, 0)] * 3
        pad[axis] = (2, 2)
        xp = np.pad(x, pad, mode="reflect" if x.shape[axis] > 2 else "edge")
        n = x.shape[axis]
        acc = np.zeros_like(x)
        for k, wgt in enumerate(_GAUSS5):
            acc += wgt * np.take(xp, np.arange(k, k + n), axis=axis)
        x = acc
    return x


def build_pyramid(
    image: np.ndarray,
    levels: int | None = None,
    *,
    filter: Filter | str = Filter.AREA,
    min_side: int = DEFAULT_MIN_SIDE,
) -> list[np.ndarray]:
    """Build the pyramid of ``image``.

    Args:
        image: ``[C, H, W]`` array, any real dtype. Integer sources must be uint8/uint16/bool
            or another integer dtype; float sources must be finite (checked by the caller).
        levels: number of levels including level 0; ``None`` picks :func:`default_levels`.
        filter: downsampling filter (:class:`Filter`).
        min_side: floor used by the automatic level count.

    Returns:
        ``levels`` arrays ``[C, h_l, w_l]``. Level 0 is ``image`` itself (same dtype, not
        copied). Coarser levels are float32, rounded half-to-even and clipped to the source
        range for integer sources (so they hold integer values in float32).
    """
    if image.ndim != 3:
        raise InputError(f"Expected a [C, H, W] array. Got shape {image.shape}.")
    c, h, w = image.shape
    if c == 0 or h == 0 or w == 0:
        raise InputError(f"Expected a non-empty image. Got shape {image.shape}.")
    filt = Filter(filter)
    n = default_levels(h, w, min_side) if levels is None else int(levels)
    if not 1 <= n <= MAX_LEVELS:
        raise InputError(f"Expected levels in 1..{MAX_LEVELS}. Got {levels}.")
    integer = np.issubdtype(image.dtype, np.integer) or image.dtype == np.bool_
    lo = hi = 0.0
    if integer:
        info = np.iinfo(image.dtype) if image.dtype != np.bool_ else None
        lo = float(info.min) if info else 0.0
        hi = float(info.max) if info else 1.0
        # float32 rounds the bounds of 32/64-bit types outward (2**63 - 1 -> 2**63), and a
        # value past the bound wraps when stored in the source type: clip to the largest
        # float32 inside the range instead.
        if info is not None:
            f_lo, f_hi = np.float32(info.min), np.float32(info.max)  # compared as exact integers
            lo = float(f_lo if int(f_lo) >= info.min else np.nextafter(f_lo, np.float32(0)))
            hi = float(f_hi if int(f_hi) <= info.max else np.nextafter(f_hi, np.float32(0)))
    out: list[np.ndarray] = [image]
    cur = image.astype(np.float32)
    for _ in range(1, n):
        cur = _halve(cur, filt)
        if integer:
            cur = np.clip(np.rint(cur), lo, hi).astype(np.float32)
        out.append(cur)
    return out
