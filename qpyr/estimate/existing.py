"""An existing qpyr store's actual bytes and dollars (``qpyr estimate STORE``): the manifest's
per-level bytes and quality, and the exact object sizes from a listing."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

from qpyr.estimate.cost import Layout
from qpyr.estimate.options import CONFIDENCE
from qpyr.estimate.prices import PriceTable
from qpyr.estimate.pricing import CostTerms
from qpyr.estimate.results import EstimateResult, Interval, LevelEstimate, PolicyEstimate

__all__ = ["estimate_store"]


def estimate_store(
    url: str,
    *,
    providers: Sequence[str] | str | None = None,
    months: float = 12,
    reads_per_month: float = 0,
    read_levels: Iterable[int] | int | None = None,
    egress_fraction: float = 0,
    prices: str | os.PathLike[str] | PriceTable | None = None,
    storage_options: dict[str, Any] | None = None,
) -> EstimateResult:
    """Actual bytes and dollars of an existing store: its manifest's per-level bytes and quality,
    and the exact object sizes from a listing. The interval is the value itself."""
    terms = CostTerms.check(providers=providers, months=months, reads_per_month=reads_per_month,
                            read_levels=read_levels, egress_fraction=egress_fraction, prices=prices)
    from qpyr.io.storage import ObjectStore
    from qpyr.read.store import open_store

    store = open_store(url, storage_options=storage_options)
    man = store.manifest
    sizes = ObjectStore(url, storage_options).list_sizes()
    sizes = {k: v for k, v in sizes.items() if not k.startswith(".qpyr/")}
    total = float(store.total_bytes)
    listed_total = float(sum(sizes.values()))
    notes = []
    if listed_total != total:
        notes.append(f"the listing holds {int(listed_total)} bytes, the manifest records {int(total)}; "
                     "dollars use the listing")
    n = len(store)
    summaries = man["level_summary"]
    levels = []
    for ls in summaries:
        exact = ls["ssim_mean"] == 1.0 and ls["psnr_mean"] is None and ls["items"] > 0
        psnr = ls["psnr_mean"] if ls["psnr_mean"] is not None and math.isfinite(ls["psnr_mean"]) else None
        levels.append(LevelEstimate(int(ls["level"]), float(ls["items"]),
                                    float(ls["stored_bytes"]) / ls["items"] if ls["items"] else 0.0,
                                    float(ls["stored_bytes"]), ls["ssim_mean"], psnr, bool(exact)))
    data = float(sum(lv.projected_bytes for lv in levels))
    touched = [lv for lv in levels if terms.read_levels is None or lv.level in terms.read_levels]
    shard_reqs = {lv.level: 0 for lv in levels}
    for key in sizes:
        if key.startswith("levels/") and ("/data/c/" in key or "/qparams/c/" in key):
            li = int(key.split("/")[1])
            shard_reqs[li] = shard_reqs.get(li, 0) + 1
    open_keys = [k for k in sizes if k == "zarr.json" or k.startswith("catalog/")]
    rb = sum(lv.projected_bytes for lv in touched) + sum(sizes[k] for k in open_keys)
    rq = sum(lv.items + shard_reqs.get(lv.level, 0) for lv in touched) + len(open_keys)
    layout = Layout.from_sizes([float(v) for v in sizes.values()])
    proj = Interval(listed_total, listed_total, listed_total)
    costs = terms.costs(layout, proj, rb, rq)
    fp32_raw = float(sum(ls["fp32_bytes"] for ls in summaries))
    pe = PolicyEstimate(
        policy=str(man["policy"]), label=f"this store ({man['policy']})", kind="store", baseline=False,
        requested=True, bytes_per_image=proj.scaled(1 / n) if n else Interval(0.0, 0.0, 0.0),
        projected_bytes=proj, data_bytes=data, overhead_bytes=listed_total - data, objects=len(sizes),
        levels=tuple(levels), ratio_vs_fp32=fp32_raw / listed_total if listed_total else None,
        ratio_vs_jpeg=None, costs=costs,
    )
    notes.append("ratio_vs_fp32 is against the raw (uncompressed) fp32 pyramid recorded in the manifest; "
                 "no baselines are packed for an existing store")
    return EstimateResult(
        mode="store", sources=(str(url),), items=n, items_from="store", listed=None, readable_items=float(n),
        confidence=CONFIDENCE, sample=None, **terms.result_fields(), policies=(pe,), notes=tuple(notes),
    )
