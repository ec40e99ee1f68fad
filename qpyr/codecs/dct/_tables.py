"""Quantisation tables of ``qpyr.dct``: the Annex K and ``"ssim"`` base tables, their IJG
scaling, and the zigzag scan order (spec/codecs/dct.md)."""

from __future__ import annotations

import numpy as np

_UV = np.add.outer(np.arange(8), np.arange(8)).ravel()
# qpyr "ssim" family base tables (natural order): linear in u + v, chroma 1.75x luma.
_LUMA_SSIM = np.floor(16 * (1 + 0.15 * _UV) + 0.5).astype(np.int64)
_CHROMA_SSIM = np.floor(28 * (1 + 0.15 * _UV) + 0.5).astype(np.int64)

# Annex K tables (natural row-major order).
_LUMA_K = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.int64,
)  # fmt: skip
_CHROMA_K = np.array(
    [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
     24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99]
    + [99] * 32,
    dtype=np.int64,
)  # fmt: skip


def _zigzag() -> np.ndarray:
    order = sorted(
        ((u, v) for u in range(8) for v in range(8)),
        key=lambda p: (p[0] + p[1], p[1] if (p[0] + p[1]) % 2 == 0 else p[0]),
    )
    return np.array([u * 8 + v for u, v in order], dtype=np.int64)


#: ``ZIGZAG[k]`` is the natural (row-major) index of the k-th coefficient in zigzag order.
ZIGZAG = _zigzag()

_MAXC = 2047  # largest |quantised coefficient| (and DC residual is < 4096)


def ijg_tables(quality: int, family: str = "annexk") -> np.ndarray:
    """Base tables scaled the IJG way: ``uint16 [2, 64]`` (luma, chroma), natural order.

    ``family="annexk"``: the JPEG Annex K tables (psycho-visual, steep in frequency).
    ``family="ssim"``: qpyr's tables for RGB-SSIM targets, ``round(16 (1 + 0.15 (u + v)))`` for
    luma and ``round(28 (1 + 0.15 (u + v)))`` for chroma (u, v = vertical, horizontal
    frequency). SSIM weighs structure at every frequency alike, so much flatter tables than
    Annex K spend bits where SSIM sees them (slope and chroma ratio come from a parametric
    sweep; spec/codecs/dct.md).
    """
    s = 5000 // quality if quality < 50 else 200 - 2 * quality
    bases = (_LUMA_K, _CHROMA_K) if family == "annexk" else (_LUMA_SSIM, _CHROMA_SSIM)
    out = [(b * s + 50) // 100 for b in bases]
    return np.clip(np.stack(out), 1, 255).astype(np.uint16)
