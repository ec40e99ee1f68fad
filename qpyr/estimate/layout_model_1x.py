"""The format-1.x layout model (``qpyr.pack(..., format="1")``): the shards, shard indexes,
metadata documents, catalog and manifest that a full pack of the corpus into size-class buckets
would write, scaled from the sample store's own objects (``spec/estimate.md``, Method 6), as
structural bytes, objects and read requests. The default (format 2.0) model is
:mod:`qpyr.estimate.layout_model`.

A 1.x reader fetches ranges of shards whatever the access order, so both access patterns cost
one GET per item-level plus one per shard index and quantization-parameter chunk read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qpyr.estimate.layout_model import Bucket, LevelReads, StoreLayout, exp_ceil_div, unseen_buckets
from qpyr.estimate.packing import Packed
from qpyr.estimate.planner import Planner
from qpyr.estimate.probe import Geom

__all__ = ["StoreCalibration", "calibrate", "project_layout"]


@dataclass
class StoreCalibration:
    """Structure of the packed sample store, per unit, for scaling to the corpus."""

    meta_per_bucket: float
    docs_per_bucket: float
    meta_per_level_encoding: float
    meta_per_level: float
    meta_fixed: float
    docs_fixed: int
    catalog_bytes: float
    catalog_objects: int
    root_bytes: float
    root_per_bucket: float
    buckets: int


def calibrate(packed: Packed, n_items: int) -> StoreCalibration:
    from qpyr.format.documents import group_doc
    from qpyr.format.manifest import MANIFEST_KEY

    m = packed.manifest
    paths = [b["path"] for b in m["buckets"]]
    le = {f"levels/{b['level']}/{b['encoding']}/zarr.json" for b in m["buckets"]}
    lv = {f"levels/{b['level']}/zarr.json" for b in m["buckets"]}
    bucket_meta = 0
    bucket_docs = 0
    le_meta = lv_meta = fixed = 0
    fixed_docs = 0
    cat = cat_n = 0
    for key, size in packed.sizes.items():
        if key == "zarr.json":
            continue
        if key.endswith("zarr.json"):
            if key in le:
                le_meta += size
            elif key in lv:
                lv_meta += size
            elif any(key.startswith(p + "/") for p in paths):
                bucket_meta += size
                bucket_docs += 1
            else:
                fixed += size
                fixed_docs += 1
        elif key.startswith("catalog/"):
            cat += size
            cat_n += 1
    nb = max(len(paths), 1)
    with_b = len(group_doc({MANIFEST_KEY: m}))
    without_b = len(group_doc({MANIFEST_KEY: dict(m, buckets=[])}))
    return StoreCalibration(
        meta_per_bucket=bucket_meta / nb, docs_per_bucket=bucket_docs / nb,
        meta_per_level_encoding=le_meta / max(len(le), 1), meta_per_level=lv_meta / max(len(lv), 1),
        meta_fixed=float(fixed), docs_fixed=fixed_docs, catalog_bytes=cat / max(n_items, 1) if n_items else 0.0,
        catalog_objects=cat_n, root_bytes=float(packed.sizes.get("zarr.json", with_b)),
        root_per_bucket=(with_b - without_b) / nb, buckets=len(paths),
    )


def project_layout(planner: Planner, geoms: Sequence[Geom], pred: np.ndarray, n_readable: float,
                   cal: StoreCalibration, nlev: int, *, exact_order: bool, seed: int = 0) -> StoreLayout:
    """Shards, objects and structural bytes of packing ``n_readable`` images distributed like
    ``geoms``, with ``pred`` [m, L] predicted data bytes per image-level.

    ``exact_order``: ``geoms`` *is* the corpus, in pack order — tasks are simulated exactly as the
    writer forms them. Otherwise the corpus order is taken as random with respect to size: each
    task's items per bucket are Binomial(task size, bucket share).
    """
    from qpyr.format.manifest import CATALOG_CHUNK_ROWS

    m = len(geoms)
    buckets: dict[str, Bucket] = {}
    member: list[list[tuple[int, float]]] = []  # per image: (bucket number, weight)
    index_of: dict[str, int] = {}
    for j, g in enumerate(geoms):
        mine = []
        for li, row in enumerate(planner.plan(g)):
            for wgt, spec, pshape, n_chunks, n_cells, _eid in row:
                b = buckets.get(spec.path)
                if b is None:
                    b = buckets[spec.path] = Bucket(spec, pshape)
                    index_of[spec.path] = len(index_of)
                b.mass += wgt / m
                b.chunks += wgt * n_chunks / m
                b.cells = max(b.cells, n_cells)
                b.data += wgt * (pred[j, li] if li < pred.shape[1] else 0.0) / m
                mine.append((index_of[spec.path], wgt))
        member.append(mine)
    blist = list(buckets.values())
    nr = max(int(round(n_readable)), 1)
    if not exact_order:
        blist += unseen_buckets(blist, m)
    spt = planner.spt
    p = np.array([b.mass for b in blist])
    k = np.array([b.spec.items_per_shard for b in blist], float)
    if exact_order:
        rows = np.zeros(len(blist))
        for t0 in range(0, m, spt):
            cnt = np.zeros(len(blist))
            for mine in member[t0:t0 + spt]:
                for bi, wgt in mine:
                    cnt[bi] += wgt
            size = min(spt, m - t0)
            whole = np.abs(cnt - np.round(cnt)) < 1e-9
            rows[whole] += np.ceil(np.round(cnt[whole]) / k[whole])
            if not whole.all():  # fractional membership (content-dependent policies)
                part = ~whole
                rows[part] += exp_ceil_div(size, cnt[part] / size, k[part])
        # P(bucket / (level, encoding) holds an image) = 1 - prod over images of (1 - membership).
        log_empty = np.zeros(len(blist))
        le_log: dict[tuple[int, str], float] = {}
        for mine in member:
            le_w: dict[tuple[int, str], float] = {}
            for bi, wgt in mine:
                log_empty[bi] += math.log1p(-wgt) if wgt < 1 - 1e-12 else -math.inf
                key = (blist[bi].spec.level, blist[bi].spec.encoding_id)
                le_w[key] = le_w.get(key, 0.0) + wgt
            for key, wgt in le_w.items():
                le_log[key] = le_log.get(key, 0.0) + (math.log1p(-wgt) if wgt < 1 - 1e-12 else -math.inf)
        nonempty = 1 - np.exp(log_empty)
    else:
        full, rest = divmod(nr, spt)
        rows = full * exp_ceil_div(spt, p, k) + exp_ceil_div(rest, p, k)
        nonempty = 1 - np.exp(nr * np.log1p(-np.clip(p, 0, 1 - 1e-16)))
    cells = np.array([b.cells for b in blist], float)
    shards = rows * cells
    n_inner = np.array([b.spec.n_inner for b in blist], float)
    index = shards * (16 * n_inner + 4)
    chunks = nr * np.array([b.chunks for b in blist])
    n_buckets = float(nonempty.sum())
    le_mass: dict[tuple[int, str], float] = {}
    lv_mass: dict[int, float] = {}
    for b in blist:
        key = (b.spec.level, b.spec.encoding_id)
        le_mass[key] = le_mass.get(key, 0.0) + b.mass
        lv_mass[b.spec.level] = lv_mass.get(b.spec.level, 0.0) + b.mass
    if exact_order:
        n_le, n_lv = float(sum(1 - math.exp(v) for v in le_log.values())), float(len(lv_mass))
    else:
        n_le = sum(1 - (1 - min(v, 1.0)) ** nr for v in le_mass.values())
        n_lv = sum(1 - (1 - min(v, 1.0)) ** nr for v in lv_mass.values())
    meta = (n_buckets * cal.meta_per_bucket + n_le * cal.meta_per_level_encoding
            + n_lv * cal.meta_per_level + cal.meta_fixed)
    root = cal.root_bytes + (n_buckets - cal.buckets) * cal.root_per_bucket
    catalog = cal.catalog_bytes * nr
    overhead = float(index.sum() - 16 * chunks.sum() + meta + root + catalog)

    hist: list[tuple[float, float]] = []
    has_q = np.array([b.pshape is not None for b in blist])
    for i, b in enumerate(blist):
        if shards[i] > 0:
            hist.append(((nr * b.data + index[i]) / shards[i], shards[i]))
        if has_q[i] and rows[i] > 0:
            praw = 4 * math.prod(b.pshape or ())
            hist.append((17 + praw * nr * b.mass / rows[i], rows[i]))
    docs = n_buckets * cal.docs_per_bucket + n_le + n_lv + cal.docs_fixed
    if docs > 0:
        hist.append((meta / docs, docs))
    cat_objects = cal.catalog_objects * max(1, math.ceil(nr / CATALOG_CHUNK_ROWS))
    if cat_objects:
        hist.append((catalog / cat_objects, float(cat_objects)))
    hist.append((root, 1.0))
    objects = int(round(sum(c for _, c in hist)))

    level_req = np.zeros(nlev)
    level_idx = np.zeros(nlev)
    for i, b in enumerate(blist):
        li = b.spec.level
        if li < nlev:
            level_req[li] += shards[i] + (rows[i] if has_q[i] else 0.0)
            level_idx[li] += index[i]
    reads = LevelReads(1.0, level_req, level_idx)
    return StoreLayout(overhead, objects, hist, {"streaming": reads, "random": reads}, root + catalog, 1.0 + cat_objects,
                       format="1.x", shard_bytes=None, shards=level_req)
