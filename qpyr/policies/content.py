"""Content measures that content-driven policies decide on (all on normalized values).

Every measure works on a level ``[C, h, w]`` in *normalized units* (``quant.normalize``: [0, 1]
for 8/16-bit sources) and is documented with its formula, so a threshold means the same thing
everywhere it is quoted (``adaptive`` and ``saliency`` policies, spec/format.md §plan).

- **gray**: mean over channels.
- **gradient magnitude**: Sobel, ``sqrt(gx^2 + gy^2) / 4`` with the 3x3 kernels
  ``[[-1,0,1],[-2,0,2],[-1,0,1]]`` (and transpose), edges replicated; a unit step between two
  pixels gives ~0.5, a linear ramp of slope ``s`` per pixel gives ``s / 2 * sqrt(...)`` ≈ ``s``.
- **edge density**: fraction of pixels whose gradient magnitude exceeds ``EDGE_T`` = 0.05.
- **texture entropy**: Shannon entropy (bits, 0..8) of the 256-bin histogram over [-0.5, 0.5]
  of the high-pass residual ``gray - box3x3(gray)``.
- **colour variance**: per tile, the standard deviation over pixels averaged over channels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qpyr.codecs.quant import normalize

__all__ = ["EDGE_T", "gray", "gradient", "edge_density", "texture_entropy", "level_measures", "tile_reduce"]

#: Gradient magnitude above which a pixel counts as an edge.
EDGE_T = 0.05


def gray(level: np.ndarray, source_dtype: np.dtype[Any]) -> np.ndarray:
    """Mean over channels of the normalized level, float32 ``[h, w]``."""
    x = normalize(level, source_dtype)
    return np.asarray(x.mean(axis=0), dtype=np.float32)


def gradient(g: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude ``sqrt(gx^2 + gy^2) / 4`` of ``g`` ``[h, w]`` (edges replicated)."""
    p = np.pad(g.astype(np.float32), 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.sqrt(gx * gx + gy * gy) / 4.0  # type: ignore[no-any-return]


def edge_density(g: np.ndarray) -> float:
    """Fraction of pixels of ``g`` whose gradient magnitude exceeds :data:`EDGE_T`."""
    return float((gradient(g) > EDGE_T).mean()) if g.size else 0.0


def texture_entropy(g: np.ndarray) -> float:
    """Entropy (bits) of the 256-bin histogram over [-0.5, 0.5] of ``g - box3x3(g)``."""
    if not g.size:
        return 0.0
    p = np.pad(g.astype(np.float32), 1, mode="edge")
    box = sum(p[i:i + g.shape[0], j:j + g.shape[1]] for i in range(3) for j in range(3)) / 9.0
    r = np.clip(g - box, -0.5, 0.5)
    hist = np.bincount(np.minimum(((r + 0.5) * 256).astype(np.int64), 255).ravel(), minlength=256)
    pr = hist[hist > 0] / r.size
    return float(-(pr * np.log2(pr)).sum())


def level_measures(level: np.ndarray, source_dtype: np.dtype[Any]) -> dict[str, float]:
    """``{"edge_density": ..., "texture_entropy": ...}`` of one level."""
    g = gray(level, source_dtype)
    return {"edge_density": edge_density(g), "texture_entropy": texture_entropy(g)}


def tile_reduce(a: np.ndarray, t: int, op: str = "mean") -> np.ndarray:
    """Reduce ``a`` ``[..., h, w]`` over ``t x t`` tiles (partial edge tiles use their own
    samples): ``[..., ceil(h/t), ceil(w/t)]``. ``op``: ``mean`` or ``std`` (population)."""
    h, w = a.shape[-2:]
    ny, nx = -(-h // t), -(-w // t)
    out = np.zeros(a.shape[:-2] + (ny, nx), np.float64)
    for i in range(ny):
        for j in range(nx):
            blk = a[..., i * t:(i + 1) * t, j * t:(j + 1) * t].astype(np.float64)
            blk = blk.reshape(blk.shape[:-2] + (-1,))
            out[..., i, j] = blk.mean(axis=-1) if op == "mean" else blk.std(axis=-1)
    return out
