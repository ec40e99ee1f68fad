"""``plan``: what a policy decides for one image, without writing a store.

:func:`plan_image` gives, per level, the chosen encoding, stored bytes, PSNR/SSIM (and for
``saliency`` the tile classes); for ``budget`` also the RD frontier it explored (every
Pareto-optimal combination of per-level candidates: bytes, weighted distortion, mean SSIM,
encodings). :func:`render_plan` prints it as a table. JSON shape::

    {"policy": spec, "describe": {...}, "shape": [C, H, W],
     "levels": [{"level", "shape", "encoding", "bytes", "psnr", "ssim", "tile_classes"?, "int8_bytes"?}],
     "bytes": total, "mean_ssim": m,
     "frontier": [{"bytes", "distortion", "mean_ssim", "levels": [{"encoding", "bytes", "ssim"}]}]}   # budget only
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qpyr.errors import InputError
from qpyr.format.manifest import json_float
from qpyr.io.inputs import discover, load
from qpyr.io.pyramid import build_pyramid
from qpyr.policies import parse_policy, plan_levels

__all__ = ["plan_image", "render_plan"]


def _load(src: Any, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    refs = list(discover([src], storage_options=storage_options))
    if len(refs) != 1:
        raise InputError(f"Expected one image for qpyr plan. Got {len(refs)} from {src!r}.")
    return load(refs[0])


def plan_image(image: Any, policy: Any, *, previous: Any = None, levels: int | None = None,
               frontier: bool = True, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plan of ``policy`` for one image (a path/URL or ``[C, H, W]`` array) as a JSON-ready
    dict (see the module docstring). ``previous``: the previous frame (side information)."""
    arr = _load(image, storage_options) if isinstance(image, str) else np.asarray(image)
    lv = build_pyramid(arr, levels)
    prev = None
    if previous is not None:
        parr = _load(previous, storage_options) if isinstance(previous, str) else np.asarray(previous)
        prev = build_pyramid(parr, len(lv)) if parr.shape == arr.shape else None
    p: Any = parse_policy(policy)
    out: dict[str, Any] = {"policy": p.spec, "describe": p.describe() if hasattr(p, "describe") else {},
                           "shape": list(arr.shape)}
    evals = None
    if frontier and hasattr(p, "evaluate"):
        evals = p.evaluate(lv, arr.dtype)
        encoded = p.choose(evals)
    else:
        encoded = plan_levels(p, lv, arr.dtype, previous=prev)
    rows = []
    for li, e in enumerate(encoded):
        r: dict[str, Any] = {"level": li, "shape": list(lv[li].shape), "encoding": e.encoding.label,
                             "bytes": e.nbytes, "psnr": json_float(e.psnr), "ssim": json_float(e.ssim)}
        if e.tile_counts is not None:
            r["tile_classes"] = e.tile_counts
        if e.int8_bytes is not None:
            r["int8_bytes"] = e.int8_bytes
        rows.append(r)
    out["levels"] = rows
    out["bytes"] = sum(r["bytes"] for r in rows)
    ss = [e.ssim for e in encoded if not math.isnan(e.ssim)]
    out["mean_ssim"] = float(np.mean(ss)) if ss else None
    if evals is not None:
        out["frontier"] = p.frontier(lv, arr.dtype, evals=evals)
    return out


def render_plan(d: dict[str, Any]) -> str:
    """Human-readable table of :func:`plan_image`'s output."""
    lines = [f"policy {d['policy']}   image {'x'.join(map(str, d['shape']))}   "
             f"{d['bytes']} B   mean SSIM {d['mean_ssim'] if d['mean_ssim'] is None else round(d['mean_ssim'], 4)}",
             f"{'level':>5} {'shape':<14} {'encoding':<18} {'bytes':>9} {'PSNR dB':>8} {'SSIM':>7}  tile classes"]
    for r in d["levels"]:
        tc = " ".join(f"{n}" for n in r["tile_classes"]) if "tile_classes" in r else ""
        psnr = "exact" if r["psnr"] is None and r["ssim"] == 1.0 else (f"{r['psnr']:.2f}" if r["psnr"] is not None else "-")
        ssim = f"{r['ssim']:.4f}" if r["ssim"] is not None else "-"
        lines.append(f"{r['level']:>5} {'x'.join(map(str, r['shape'])):<14} {r['encoding']:<18} {r['bytes']:>9} "
                     f"{psnr:>8} {ssim:>7}  {tc}")
    if "frontier" in d:
        lines += ["", f"RD frontier ({len(d['frontier'])} points; distortion = sum w_l (1 - SSIM_l)):",
                  f"{'bytes':>9} {'distortion':>10} {'mean SSIM':>9}  encodings by level"]
        for f in d["frontier"]:
            lines.append(f"{f['bytes']:>9} {f['distortion']:>10.5f} {f['mean_ssim']:>9.4f}  "
                         + " / ".join(x["encoding"] for x in f["levels"]))
    lines.append("SSIM: Wang 2004, 11x11 Gaussian sigma 1.5, mean over RGB; bytes: stored bytes per level "
                 "(chunks + shard index entries + parameters).")
    return "\n".join(lines)
