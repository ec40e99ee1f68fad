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
    touched = {lv.level for lv in levels if terms.read_levels is None or lv.level in terms.read_levels}
    # opening: HEAD + GET of the root, one listing of the catalog, a GET per catalog chunk
    from qpyr.format.manifest import catalog_path

    base = catalog_path(int(man["generation"])) + "/"
    cat_chunks = [k for k in sizes if k.startswith(base) and not k.endswith("zarr.json")
                  and (base != "catalog/" or not k.startswith("catalog/g"))]
    open_b = float(sizes.get("zarr.json", 0) + sum(sizes[k] for k in cat_chunks))
    open_r = 3.0 + len(cat_chunks)
    reads = _store_reads(store, sizes, touched, open_b, open_r)
    layout = Layout.from_sizes([float(v) for v in sizes.values()])
    proj = Interval(listed_total, listed_total, listed_total)
    costs = terms.costs(layout, proj, reads)
    fp32_raw = float(sum(ls["fp32_bytes"] for ls in summaries))
    pe = PolicyEstimate(
        policy=str(man["policy"]), label=f"this store ({man['policy']})", kind="store", baseline=False,
        requested=True, bytes_per_image=proj.scaled(1 / n) if n else Interval(0.0, 0.0, 0.0),
        projected_bytes=proj, data_bytes=data, overhead_bytes=listed_total - data, objects=len(sizes),
        levels=tuple(levels), ratio_vs_fp32=fp32_raw / listed_total if listed_total else None,
        ratio_vs_jpeg=None, costs=costs, reads={k: (rq, rb) for k, (rb, rq) in reads.items()},
    )
    notes.append("ratio_vs_fp32 is against the raw (uncompressed) fp32 pyramid recorded in the manifest; "
                 "no baselines are packed for an existing store")
    return EstimateResult(
        mode="store", sources=(str(url),), items=n, items_from="store", listed=None, readable_items=float(n),
        confidence=CONFIDENCE, sample=None, **terms.result_fields(), policies=(pe,), notes=tuple(notes),
        store_format=str(man["format_version"]),
        shard_bytes=int(man["records"]["shard_bytes"]) if "records" in man else None,
    )


def _store_reads(store: Any, sizes: dict[str, int], touched: set[int], open_b: float, open_r: float
                 ) -> dict[str, tuple[float, float]]:
    """(bytes, GET requests) of one full read of the ``touched`` levels, per access pattern.

    Format 2.0: streaming = every shard object of those levels, whole; random = one ranged read
    per record piece (a record larger than a shard has one per shard it spans) of exactly its
    bytes plus the block headers inside it. Format 1.x: per item-level one ranged GET plus one per
    shard index and parameter chunk, in either pattern."""
    import numpy as np

    from qpyr.format import heap
    from qpyr.format.heap import BLOCK

    man = store.manifest
    if "records" not in man:
        shard_reqs: dict[int, int] = {}
        for key in sizes:
            if key.startswith("levels/") and ("/data/c/" in key or "/qparams/c/" in key):
                li = int(key.split("/")[1])
                shard_reqs[li] = shard_reqs.get(li, 0) + 1
        summ = {int(ls["level"]): ls for ls in man["level_summary"]}
        rb = open_b + sum(float(summ[li]["stored_bytes"]) for li in touched if li in summ)
        rq = open_r + sum(float(summ[li]["items"]) + shard_reqs.get(li, 0) for li in touched if li in summ)
        return {"streaming": (rb, rq), "random": (rb, rq)}
    S = int(man["records"]["shard_bytes"])
    sb = sr = 0.0  # streaming bytes, requests
    rb = rr = 0.0  # random
    for key, size in sizes.items():
        parts = key.split("/")
        if len(parts) == 5 and parts[0] == "levels" and parts[2] == "c" and int(parts[1]) in touched:
            sb += size
            sr += 1
    for li in touched:
        if li >= len(store.catalog.levels):
            continue
        tab = np.asarray(store.catalog.levels[li])
        tab = tab[tab[:, 4] > 0]
        n, off = tab[:, 4].astype(np.int64), tab[:, 6].astype(np.int64)
        j0, j1 = off // S, (off + n - 1) // S
        one = j0 == j1
        o0 = off - j0 * S
        hdr = 3 * ((o0 + n - 1) // BLOCK - o0 // BLOCK)  # block headers inside a one-shard record
        rr += float((j1 - j0 + 1).sum())
        rb += float(n.sum() + hdr[one].sum())
        for a, ln in zip(off[~one].tolist(), n[~one].tolist(), strict=True):  # records spanning shards
            rb += sum(3 * ((p1 - 1) // BLOCK - p0 // BLOCK) for _, p0, p1 in heap.pieces(a, ln, S))
    return {"streaming": (sb + open_b, sr + open_r), "random": (rb + open_b, rr + open_r)}
