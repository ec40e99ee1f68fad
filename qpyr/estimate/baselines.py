"""The baselines every estimate compares: the fp32 pyramid, the fp16 pyramid, lossless (uint8
for 8-bit photos) — qpyr policies — and JPEG q90 files, one per pyramid level, encoded here by
Pillow on the sample; plus the list of policies to estimate."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from qpyr.estimate.options import EstimateInputError

__all__ = ["BASELINES", "JPEG_POLICY", "JPEG_QUALITY", "LABELS", "jpeg_sample", "policy_list"]

#: qpyr policies always compared (fp32 pyramid, fp16 pyramid, lossless = uint8 for 8-bit photos).
BASELINES = ("fp32", "fp16", "lossless")
#: The JPEG baseline: one JPEG file per pyramid level, Pillow quality 90, optimize=True.
JPEG_POLICY = "jpeg-q90"
JPEG_QUALITY = 90
#: Display names of the baselines.
LABELS = {"fp32": "fp32 pyramid", "fp16": "fp16 pyramid", "lossless": "lossless (uint8 for 8-bit)",
          JPEG_POLICY: "JPEG q90 files/level"}


def policy_list(policies: Sequence[str] | str | None) -> list[tuple[str, bool, bool]]:
    """[(canonical spec, baseline, requested)]: baselines first, then the requested ones
    (default: ``mixed`` and :data:`qpyr.policies.DEFAULT_POLICY`, read when called)."""
    from qpyr.policies import DEFAULT_POLICY, parse_policy

    if isinstance(policies, str):
        policies = [policies]
    asked = list(policies) if policies is not None else ["mixed", DEFAULT_POLICY]
    canon_asked = []
    for p in asked:
        if not isinstance(p, str):
            raise EstimateInputError("policies", f"expected policy spec strings, got {p!r}")
        if p.strip().lower() in (JPEG_POLICY, "jpeg"):
            continue  # always included
        spec = parse_policy(p).spec
        if spec not in canon_asked:
            canon_asked.append(spec)
    out = [(parse_policy(b).spec, True, parse_policy(b).spec in canon_asked) for b in BASELINES]
    out += [(s, False, True) for s in canon_asked if s not in [o[0] for o in out]]
    return out


def _to_8bit(lv: np.ndarray, src_dtype: np.dtype[Any], lo: float, hi: float) -> np.ndarray:
    if src_dtype == np.uint8 or src_dtype == np.bool_:
        a = lv * (255.0 if src_dtype == np.bool_ else 1.0)
    elif src_dtype == np.uint16:
        a = lv / 257.0
    else:
        a = (lv - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(lv)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def jpeg_sample(arrays: list[np.ndarray], quality: Sequence[int],
                tick: Callable[[], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """JPEG q90 (Pillow, optimize=True, default 4:2:0) of every pyramid level of every array;
    SSIM/PSNR for the arrays numbered in ``quality`` (NaN for the others).

    Returns (bytes [n, L], ssim [n, L], psnr [n, L], converted) where ``converted`` counts items
    that are not 8-bit gray/RGB and were mapped to it (alpha/extra channels dropped, 16-bit
    divided by 257, other types scaled by their level-0 range).
    """
    import torch
    from PIL import Image

    from qpyr.io.pyramid import DEFAULT_MIN_SIDE, build_pyramid
    from qpyr.metrics import psnr, ssim

    per: list[list[tuple[int, float, float]]] = []
    converted = 0
    measure = set(quality)
    for ai, a in enumerate(arrays):
        src_dt = a.dtype
        c = a.shape[0]
        keep = [0] if c in (1, 2) else [0, 1, 2]
        if not (src_dt == np.uint8 and c in (1, 3)):
            converted += 1
        lo, hi = (float(a.min()), float(a.max())) if src_dt.kind in "fi" or src_dt.itemsize > 2 else (0.0, 0.0)
        row = []
        for lv in build_pyramid(a, None, min_side=DEFAULT_MIN_SIDE):
            u8 = _to_8bit(lv[keep].astype(np.float32), src_dt, lo, hi)
            hwc = u8[0] if len(keep) == 1 else np.moveaxis(u8, 0, -1)
            buf = io.BytesIO()
            Image.fromarray(hwc).save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
            if ai not in measure:
                row.append((buf.getbuffer().nbytes, math.nan, math.nan))
                continue
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
            dec = dec[None] if dec.ndim == 2 else np.moveaxis(dec, -1, 0)
            ref_t = torch.from_numpy(u8.astype(np.float32) / 255)
            dec_t = torch.from_numpy(dec.astype(np.float32) / 255)
            row.append((buf.getbuffer().nbytes, float(ssim(dec_t, ref_t)), float(psnr(dec_t, ref_t))))
        per.append(row)
        tick()
    nlev = max(len(r) for r in per)
    out = [np.zeros((len(per), nlev)), np.full((len(per), nlev), np.nan), np.full((len(per), nlev), np.nan)]
    for i, r in enumerate(per):
        for li, vals in enumerate(r):
            for k in range(3):
                out[k][i, li] = vals[k]
    return out[0], out[1], out[2], converted
