"""The ``info`` report: a store's per-level summary as a dict (``--json``) and as a table.

JSON shape: ``spec/cli-info.md`` and ``spec/schemas/info.schema.json``. Quality numbers follow
DESIGN.md conventions: PSNR over all channels (peak 255 for 8-bit sources), SSIM = Wang 2004
(11x11 Gaussian, sigma 1.5) averaged over channels (RGB-SSIM).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qpyr.format.manifest import json_float
from qpyr.read.store import Store

__all__ = ["info_dict", "render_info", "plan_view", "ITEMS_DETAIL_MAX"]

#: Stores with at most this many items list every item in ``info``.
ITEMS_DETAIL_MAX = 20


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def info_dict(store: Store, *, items: bool | None = None) -> dict[str, Any]:
    """The ``qpyr info --json`` document."""
    m = store.manifest
    single = len(store) == 1
    levels = []
    labels: dict[str, str] = {}
    dtypes: dict[str, str] = {}
    for eid, e in m["encodings"].items():
        from qpyr.codecs.encoding import Encoding

        enc = Encoding.from_dict(e)
        labels[eid] = enc.label
        dtypes[eid] = enc.quantizer.dtype.value
    fp32_total = uint8_total = 0
    for ls in m["level_summary"]:
        encs = list(ls["encodings"])
        lab = {labels[e] for e in encs}
        dts = {dtypes[e] for e in encs}
        dtype = dts.pop() if len(dts) == 1 else "mixed"
        if dtype == "source":
            from qpyr.format.manifest import DTYPE_CODES

            tab = store.catalog.levels[ls["level"]]
            codes = {int(c) for c in store.catalog.sources[tab[:, 0] >= 0, 0]}
            dtype = DTYPE_CODES[codes.pop()] if len(codes) == 1 else "mixed"
        fp32_total += ls["fp32_bytes"]
        uint8_total += ls["uint8_bytes"]
        levels.append({
            "level": ls["level"],
            "items": ls["items"],
            "shape": ls["shape_max"] if single else None,
            "shape_min": ls["shape_min"],
            "shape_max": ls["shape_max"],
            "dtype": dtype,
            "encoding": lab.pop() if len(lab) == 1 else "mixed",
            "stored_bytes": ls["stored_bytes"],
            "fp32_bytes": ls["fp32_bytes"],
            "uint8_bytes": ls["uint8_bytes"],
            "ratio_vs_fp32": _ratio(ls["fp32_bytes"], ls["stored_bytes"]),
            "ratio_vs_uint8": _ratio(ls["uint8_bytes"], ls["stored_bytes"]),
            "psnr": json_float(ls["psnr_mean"]) if ls["psnr_mean"] is not None else None,
            "ssim": ls["ssim_mean"],
            "psnr_min": ls["psnr_min"],
            "ssim_min": ls["ssim_min"],
            "decisions": _decisions(store, ls["level"]),
        })
    out: dict[str, Any] = {
        "qpyr_info": "1.0",
        "store": store.url,
        "format_version": m["format_version"],
        "items": len(store),
        "levels": m["levels"],
        "policy": m["policy"],
        "total_bytes": store.total_bytes,
        "ratio_vs_fp32": _ratio(fp32_total, store.total_bytes),
        "ratio_vs_uint8": _ratio(uint8_total, store.total_bytes),
        "level_summary": levels,
    }
    if isinstance(m.get("plan"), dict):
        out["plan"] = plan_view(m["plan"])
    if items or (items is None and len(store) <= ITEMS_DETAIL_MAX):
        detail = []
        for i in range(len(store)):
            it = store.item_info(i)
            detail.append({
                "name": it["name"], "dtype": it["dtype"], "shape": it["shape"],
                "levels": [{
                    "level": lv["level"], "shape": lv["shape"], "dtype": lv["dtype"], "encoding": lv["encoding"],
                    "stored_bytes": lv["stored_bytes"], "psnr": json_float(lv["psnr"]),
                    "ssim": json_float(lv["ssim"]),
                } for lv in it["levels"]],
            })
        out["items_detail"] = detail
    return out


def _decisions(store: Store, level: int) -> dict[str, int]:
    """``{decision: item count}`` of one level, from the catalog's ``decision`` column."""
    from qpyr.format.manifest import DECISIONS, LEVEL_COLUMNS

    tab = store.catalog.levels[level]
    col = tab[tab[:, 0] >= 0, LEVEL_COLUMNS.index("decision")]
    codes, counts = np.unique(col, return_counts=True)
    return {DECISIONS[int(c)]: int(n) for c, n in zip(codes, counts, strict=True)}


def plan_view(plan: dict[str, Any]) -> dict[str, Any]:
    """The manifest ``plan`` with per-level tile class shares and the ratio vs uniform int8."""
    out = {k: v for k, v in plan.items() if k != "levels"}
    levels = []
    for d in plan.get("levels", []):
        d = dict(d)
        tc = d.get("tile_classes")
        if tc is not None:
            n = sum(tc)
            d["tile_share"] = [c / n if n else 0.0 for c in tc]
        if "int8_bytes" in d:
            d["ratio_vs_int8"] = _ratio(d["int8_bytes"], d["stored_bytes"])
        levels.append(d)
    out["levels"] = levels
    return out


def _render_plan(p: dict[str, Any]) -> list[str]:
    lines = ["", f"plan     {p['policy']}   " + ", ".join(
        f"{k}={v}" for k, v in p["describe"].items() if k != "name" and not isinstance(v, (dict, str)))]
    if "bytes" in p["describe"]:
        lines.append(f"budget   {p['describe']['bytes']} B per image; largest item stored {p.get('max_item_bytes', 0)} B")
    tiles = [d for d in p.get("levels", []) if "tile_classes" in d]
    if tiles:
        from qpyr.codecs.tiles import CLASSES

        hdr = f"{'level':>5} " + " ".join(f"{c:>13}" for c in CLASSES) + f" {'stored':>11} {'int8':>11} {'vs int8':>8}"
        lines += ["tile classes per level (count, %); bytes vs the same levels as uniform int8:", hdr, "-" * len(hdr)]
        for d in tiles:
            cells = " ".join(f"{c:>6} {100 * s:5.1f}%" for c, s in zip(d["tile_classes"], d["tile_share"], strict=True))
            lines.append(f"{d['level']:>5} {cells} {_fmt_bytes(d['stored_bytes']):>11} {_fmt_bytes(d.get('int8_bytes', 0)):>11} "
                         f"{d.get('ratio_vs_int8', 0):>7.2f}x")
        tot = [sum(d["tile_classes"][k] for d in tiles) for k in range(5)]
        n = sum(tot) or 1
        sb, ib = sum(d["stored_bytes"] for d in tiles), sum(d.get("int8_bytes", 0) for d in tiles)
        lines.append(f"{'all':>5} " + " ".join(f"{c:>6} {100 * c / n:5.1f}%" for c in tot) +
                     f" {_fmt_bytes(sb):>11} {_fmt_bytes(ib):>11} {_ratio(ib, sb):>7.2f}x")
    return lines


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def _fmt_q(x: float | None, lossless: bool, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "exact" if lossless else "-"
    return f"{x:.{digits}f}"


def render_info(d: dict[str, Any]) -> str:
    """Human-readable table of :func:`info_dict`'s output."""
    lines = [
        f"store    {d['store']}",
        f"format   qpyr {d['format_version']}   items {d['items']}   levels {d['levels']}   policy {d['policy']}",
        f"total    {_fmt_bytes(d['total_bytes'])} stored ({d['total_bytes']} B incl. metadata)   "
        f"{d['ratio_vs_fp32']:.2f}x smaller than the fp32 pyramid, {d['ratio_vs_uint8']:.2f}x vs uint8",
        "",
    ]
    hdr = f"{'level':>5} {'items':>6}  {'shape (C,H,W)':<20} {'dtype':<9} {'encoding':<18} {'stored':>11} {'vs fp32':>8} {'vs u8':>7} {'PSNR dB':>8} {'SSIM':>7}"
    lines += [hdr, "-" * len(hdr)]
    for lv in d["level_summary"]:
        if lv["shape"] is not None:
            shape = "x".join(str(s) for s in lv["shape"])
        else:
            a, b = lv["shape_min"], lv["shape_max"]
            shape = f"{a[1]}x{a[2]}..{b[1]}x{b[2]}"
        lossless = lv["ssim"] == 1.0 and lv["psnr"] is None
        lines.append(
            f"{lv['level']:>5} {lv['items']:>6}  {shape:<20} {lv['dtype']:<9} {lv['encoding']:<18} {_fmt_bytes(lv['stored_bytes']):>11} "
            f"{lv['ratio_vs_fp32']:>7.2f}x {lv['ratio_vs_uint8']:>6.2f}x {_fmt_q(lv['psnr'], lossless, 2):>8} "
            f"{_fmt_q(lv['ssim'], lossless, 4):>7}"
        )
    lines.append("")
    lines.append("floor decisions per level (items): " + "; ".join(
        f"{lv['level']}: " + ", ".join(f"{k} {v}" for k, v in lv["decisions"].items())
        for lv in d["level_summary"] if lv.get("decisions")))
    lines.append("PSNR: all channels, peak = source max (255 for 8-bit); SSIM: Wang 2004, 11x11 Gaussian "
                 "sigma 1.5, mean over channels. 'exact' = lossless. Bytes are stored bytes incl. "
                 + ("shard framing (format 2.0: records in shards)." if d["format_version"].startswith("2.")
                    else "shard indexes."))
    if "plan" in d:
        lines += _render_plan(d["plan"])
    if "items_detail" in d and d["items"] > 1:
        lines.append("")
        lines.append(f"{'item':<32} {'level':>5} {'shape':<16} {'encoding':<18} {'stored':>11} {'PSNR dB':>8} {'SSIM':>7}")
        for it in d["items_detail"]:
            for lv in it["levels"]:
                lossless = lv["ssim"] == 1.0 and lv["psnr"] is None
                lines.append(
                    f"{it['name'][:32]:<32} {lv['level']:>5} {'x'.join(map(str, lv['shape'])):<16} {lv['encoding']:<18} "
                    f"{_fmt_bytes(lv['stored_bytes']):>11} {_fmt_q(lv['psnr'], lossless, 2):>8} {_fmt_q(lv['ssim'], lossless, 4):>7}"
                )
    return "\n".join(lines)
