"""The layout model: the objects a full pack of the corpus would write — shards, documents,
catalog, manifest — as structural bytes, object sizes and read requests (``spec/estimate.md``,
Method 6).

Format 2.0 (what :func:`qpyr.pack` writes by default) is modelled here: per level, each pack
task's records go back to back into shards of ``shard_bytes``, every shard a zstd frame of
stored blocks (:mod:`qpyr.format.heap`); the writer's greedy fill is replayed on the projected
record sizes. The 1.x model (size-class buckets, shard indexes, per-bucket documents) is
:mod:`qpyr.estimate.layout_model_1x`; both return a :class:`StoreLayout`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qpyr.estimate.cost import Layout
from qpyr.estimate.packing import Packed
from qpyr.estimate.planner import Planner
from qpyr.estimate.probe import Geom, level_shapes

__all__ = ["ACCESS_PATTERNS", "Bucket", "LevelReads", "StoreCalibration", "StoreLayout", "calibrate", "collect_buckets",
           "exp_ceil_div", "expected_buckets", "fill_shards", "integer_histogram", "project_layout", "unseen_buckets"]

#: The read access patterns priced: ``streaming`` (epoch order, whole shards:
#: ``StreamingPyramidDataset``) and ``random`` (map-style, one ranged read per item-level).
ACCESS_PATTERNS = ("streaming", "random")

#: Simulated pack tasks (random corpus order): full tasks, and tasks of the last partial size.
_SIM_FULL = 64
_SIM_REST = 32
#: Size bins per level of the shard-object histogram.
_BINS = 16
#: Shard-table rows of a projected catalog that are encoded (the rest scaled per row).
_ENCODE_ROWS = 4 * 65536


@dataclass
class LevelReads:
    """GETs and bytes of one full read of each level, for one access pattern: ``per_item``
    GETs per item-level read, plus ``extra_requests[l]``; bytes = the level's data bytes plus
    ``extra_bytes[l]``."""

    per_item: float
    extra_requests: np.ndarray  # [L]
    extra_bytes: np.ndarray  # [L]


@dataclass
class StoreLayout:
    """The projected store's structure for one policy."""

    overhead: float  # structural bytes beyond the items' own (record / chunk) bytes
    objects: int
    histogram: list[tuple[float, float]]  # (size, count) before scaling to the projected total
    reads: dict[str, LevelReads]  # per access pattern (ACCESS_PATTERNS)
    open_bytes: float  # root document + catalog read to open the store
    open_requests: float
    format: str = "2.0"
    shard_bytes: int | None = None
    shards: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [L] shard objects per level (2.0)


# ----------------------------------------------------------------------------- buckets
@dataclass
class Bucket:
    """A bucket (1.x: a sharded array; 2.0: a record class named in the manifest) and its share of the corpus."""

    spec: Any  # BucketSpec
    pshape: tuple[int, ...] | None
    mass: float = 0.0  # probability that a corpus item lands here
    chunks: float = 0.0  # expected inner chunks per corpus item, from this bucket
    cells: int = 1  # shards per slot row (items wider/taller than a shard span several)
    data: float = 0.0  # expected data bytes per corpus item, from this bucket (prediction)


def collect_buckets(planner: Planner, geoms: Sequence[Geom], pred: np.ndarray
                    ) -> tuple[list[Bucket], list[list[tuple[int, float]]]]:
    """The buckets (record classes) the probed images land in, with their item shares, and
    per image its (bucket number, weight) memberships."""
    m = len(geoms)
    buckets: dict[str, Bucket] = {}
    member: list[list[tuple[int, float]]] = []
    index_of: dict[str, int] = {}
    for j, g in enumerate(geoms):
        mine = []
        for li, row in enumerate(planner.plan(g)):
            for wgt, spec, pshape, n_chunks, n_cells, _eid in row:
                key = planner.key(spec)
                b = buckets.get(key)
                if b is None:
                    b = buckets[key] = Bucket(spec, pshape)
                    index_of[key] = len(index_of)
                b.mass += wgt / m
                b.chunks += wgt * n_chunks / m
                b.cells = max(b.cells, n_cells)
                b.data += wgt * (pred[j, li] if li < pred.shape[1] else 0.0) / m
                mine.append((index_of[key], wgt))
        member.append(mine)
    return list(buckets.values()), member


def exp_ceil_div(t: int, p: np.ndarray, k: np.ndarray) -> np.ndarray:
    """E[ceil(M / k)] for M ~ Binomial(t, p), elementwise over buckets."""
    if t <= 0:
        return np.zeros_like(p)
    mvals = np.arange(t + 1, dtype=float)
    lg = np.array([math.lgamma(t + 1) - math.lgamma(v + 1) - math.lgamma(t - v + 1) for v in range(t + 1)])
    pc = np.clip(p, 1e-300, 1 - 1e-16)[:, None]
    logpmf = lg[None, :] + mvals[None, :] * np.log(pc) + (t - mvals)[None, :] * np.log1p(-pc)
    pmf = np.exp(logpmf)
    out = (pmf * np.ceil(mvals[None, :] / k[:, None])).sum(axis=1)
    full = p >= 1
    out[full] = np.ceil(t / k[full])
    out[p <= 0] = 0.0
    return np.asarray(out)


def unseen_buckets(blist: list[Bucket], m: int) -> list[Bucket]:
    """Buckets the corpus fills but the probe did not see, per (level, encoding): Chao1 for how
    many (f1^2 / 2 f2, bias-corrected), Good-Turing for their share of items (f1 / m). Each is
    modelled on the probe's singleton buckets; the seen buckets give up that share. Without
    this, a probe of m images undercounts a varied corpus's buckets by ~20 % at m = 300."""
    groups: dict[tuple[int, str], list[Bucket]] = {}
    for b in blist:
        groups.setdefault((b.spec.level, b.spec.encoding_id), []).append(b)
    extra: list[Bucket] = []
    for group in groups.values():
        counts = [b.mass * m for b in group]
        singles = [b for b, c in zip(group, counts, strict=True) if abs(c - 1) < 1e-6]
        f1 = len(singles)
        f2 = sum(1 for c in counts if abs(c - 2) < 1e-6)
        if f1 == 0 or m < 2:
            continue
        unseen = (m - 1) / m * (f1 * f1 / (2 * f2) if f2 else f1 * (f1 - 1) / 2)
        n_new = int(math.ceil(unseen))
        if n_new == 0:
            continue
        share = f1 / m * sum(b.mass for b in group)  # Good-Turing: unseen share of this group's items
        for b in group:
            f = 1 - f1 / m
            b.mass *= f
            b.chunks *= f
            b.data *= f
        per = share / unseen  # each unseen bucket's item share (the last one takes the fraction)
        for i in range(n_new):
            t = singles[i % f1]
            frac = min(1.0, unseen - i)
            scale = per * frac / (1 / m)  # relative to a singleton's share
            extra.append(Bucket(t.spec, t.pshape, mass=t.mass / (1 - f1 / m) * scale, chunks=t.chunks / (1 - f1 / m) * scale,
                                 cells=t.cells, data=t.data / (1 - f1 / m) * scale))
    return extra


def expected_buckets(blist: list[Bucket], member: list[list[tuple[int, float]]], nr: int, *, exact_order: bool) -> float:
    """Expected number of buckets (record classes) the corpus fills: exactly those of the probed
    images when they are the corpus, else each bucket non-empty with 1 - (1 - share)^N, plus
    the unseen ones (:func:`unseen_buckets`)."""
    if exact_order:
        log_empty = np.zeros(len(blist))
        for mine in member:
            for bi, wgt in mine:
                log_empty[bi] += math.log1p(-wgt) if wgt < 1 - 1e-12 else -math.inf
        return float((1 - np.exp(log_empty)).sum())
    bl = [Bucket(b.spec, b.pshape, b.mass, b.chunks, b.cells, b.data) for b in blist]
    bl += unseen_buckets(bl, len(member))
    p = np.array([b.mass for b in bl])
    return float((1 - np.exp(nr * np.log1p(-np.clip(p, 0, 1 - 1e-16)))).sum())


# ----------------------------------------------------------------------------- shards (2.0)
def fill_shards(records: Sequence[int], shard_bytes: int) -> tuple[list[int], int, int]:
    """The writer's greedy fill of one task's records of one level (``qpyr.write.records.LevelHeap``).

    Returns the used bytes of each shard it writes, how many shard boundaries records straddle
    (a record larger than a shard starts a shard and fills as many as it needs: one ranged read
    per piece), and how many stored-block boundaries (:data:`qpyr.format.heap.BLOCK`) lie inside
    the records' pieces (a ranged read of a piece carries 3 bytes of block header per boundary).
    """
    from qpyr.format.heap import BLOCK

    s = shard_bytes
    shards: list[int] = []
    buf = 0
    crossed = blocks = 0
    for n in records:
        if buf and buf + n > s:
            shards.append(buf)
            buf = 0
        if n <= s - buf:
            blocks += (buf + n - 1) // BLOCK - buf // BLOCK
            buf += n
        else:  # larger than a shard; buf == 0 here
            full, rest = divmod(n, s)
            shards.extend([s] * full)
            buf = rest
            crossed += full - (0 if rest else 1)
            blocks += full * ((s - 1) // BLOCK) + ((rest - 1) // BLOCK if rest else 0)
        if buf == s:
            shards.append(buf)
            buf = 0
    if buf:
        shards.append(buf)
    return shards, crossed, blocks


@dataclass
class StoreCalibration:
    """What the packed sample store (format 2.0) fixes for the projection: its documents, its
    catalog arrays' compression per row, its manifest."""

    items: int
    shard_bytes: int
    manifest: dict[str, Any]
    root_bytes: int
    root_per_bucket: float
    buckets: int
    fixed_docs: dict[str, int]  # group documents whose bytes do not depend on the corpus
    level_docs: dict[int, dict[str, Any]]  # per level: parsed levels/{l}/zarr.json, records doc
    arrays: dict[str, dict[str, Any]]  # catalog array -> {doc, rows, chunk_bytes, chunks}
    catalog_base: str


def _dump(d: Any) -> bytes:
    return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()


def calibrate(packed: Packed, n_items: int) -> StoreCalibration:
    """Read the sample store's structure (documents, catalog arrays, manifest) for scaling."""
    from qpyr.format.documents import group_doc
    from qpyr.format.manifest import MANIFEST_KEY, catalog_path

    m = packed.manifest
    base = catalog_path(int(m["generation"]))
    fixed: dict[str, int] = {}
    level_docs: dict[int, dict[str, Any]] = {}
    arrays: dict[str, dict[str, Any]] = {}
    for key, raw in packed.docs.items():
        if key == "zarr.json":
            continue
        parts = key.split("/")
        if key.startswith(base + "/") and len(parts) == len(base.split("/")) + 2:
            name = parts[-2]
            arrays.setdefault(name, {})["doc"] = json.loads(raw)
            arrays[name]["doc_bytes"] = len(raw)
        elif parts[0] == "levels" and len(parts) == 3:  # 2.0: the level's record array
            level_docs.setdefault(int(parts[1]), {})["records"] = json.loads(raw)
        else:
            fixed[key] = len(raw)
    for key, size in packed.sizes.items():
        if not key.startswith(base + "/") or key.endswith("zarr.json"):
            continue
        name = key[len(base) + 1:].split("/")[0]
        a = arrays.setdefault(name, {})
        a["chunk_bytes"] = a.get("chunk_bytes", 0) + size
        a["chunks"] = a.get("chunks", 0) + 1
    nb = max(len(m["buckets"]), 1)
    with_b = len(group_doc({MANIFEST_KEY: m}))
    without_b = len(group_doc({MANIFEST_KEY: dict(m, buckets=[])}))
    return StoreCalibration(
        items=max(n_items, 1), shard_bytes=int(m["records"]["shard_bytes"]), manifest=m,
        root_bytes=int(packed.sizes.get("zarr.json", with_b)), root_per_bucket=(with_b - without_b) / nb,
        buckets=len(m["buckets"]), fixed_docs=fixed, level_docs=level_docs, arrays=arrays, catalog_base=base,
    )


_ZERO_CHUNK: dict[tuple[tuple[int, ...], str], int] = {}


def _zero_chunk_bytes(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of an all-zero catalog chunk object (a chunk's fixed cost: frame, crc, zero padding)."""
    from qpyr.format.documents import encode_plain_chunk

    key = (shape, dtype)
    if key not in _ZERO_CHUNK:
        _ZERO_CHUNK[key] = len(encode_plain_chunk(np.zeros(shape, dtype)))
    return _ZERO_CHUNK[key]


def _array_name_level(name: str) -> tuple[str, int | None]:
    head, _, tail = name.rpartition("_")
    if head in ("level", "quality", "shards") and tail.isdigit():
        return head, int(tail)
    return name, None


def _template(cal: StoreCalibration, kind: str, li: int) -> dict[str, Any] | None:
    """The sample's catalog array ``{kind}_{li}``, or that of its highest level below ``li``
    (a level the sample lacks has the same columns)."""
    have = sorted(lv for n in cal.arrays for k, lv in [_array_name_level(n)] if k == kind and lv is not None)
    if not have:
        return None
    pick = max([lv for lv in have if lv <= li], default=have[0])
    return cal.arrays[f"{kind}_{pick}"]


def _catalog_array(a: dict[str, Any], rows: int) -> tuple[int, int, int, int]:
    """(doc bytes, chunk objects, chunk bytes, fixed bytes per chunk) of a catalog array of the
    sample scaled to ``rows`` rows: per-chunk fixed cost plus the sample's bytes per row."""
    doc = dict(a["doc"], shape=[rows, *a["doc"]["shape"][1:]])
    cshape = tuple(int(x) for x in a["doc"]["chunk_grid"]["configuration"]["chunk_shape"])
    fixed = _zero_chunk_bytes(cshape, a["doc"]["data_type"])
    srows = int(a["doc"]["shape"][0])
    per_row = max(0.0, (a.get("chunk_bytes", 0) - fixed * a.get("chunks", 0)) / srows) if srows else 0.0
    chunks = max(1, -(-rows // cshape[0]))
    return len(_dump(doc)), chunks, int(round(fixed * chunks + per_row * rows)), fixed


def _shard_table_bytes(cal: StoreCalibration, table: np.ndarray, total_rows: int) -> tuple[int, int, int]:
    """(doc bytes, chunk objects, chunk bytes) of a ``shards_{l}`` catalog array of
    ``total_rows`` rows whose first rows are ``table`` (the rest are like them)."""
    from qpyr.format.documents import encode_plain_chunks

    a = _template(cal, "shards", 0)
    cr = int(a["doc"]["chunk_grid"]["configuration"]["chunk_shape"][0]) if a else 65536
    doc = dict(a["doc"], shape=[total_rows, 4]) if a else None
    doc_bytes = len(_dump(doc)) if doc is not None else 0
    chunks = max(1, -(-total_rows // cr))
    enc = encode_plain_chunks(np.asarray(table, np.int64).reshape(-1, 4), cr)
    got = sum(len(v) for v in enc.values())
    if total_rows <= len(table):
        return doc_bytes, chunks, got
    fixed = _zero_chunk_bytes((cr, 4), "int64")
    per_row = (got - fixed * len(enc)) / max(len(table), 1)
    return doc_bytes, chunks, int(round(fixed * chunks + per_row * total_rows))


def _root_bytes(cal: StoreCalibration, n_items: int, tasks: int, shards: Sequence[int], n_buckets: float,
                total: float) -> float:
    """The projected root document: the sample's manifest with the corpus's counts (their
    digits), plus the expected extra bucket entries."""
    from qpyr.format.documents import group_doc
    from qpyr.format.manifest import MANIFEST_KEY

    m = json.loads(json.dumps(cal.manifest))
    f = n_items / cal.items
    if f != 1 or tasks != m["tasks"] or list(shards) != m["records"]["shards"]:
        m["items"], m["tasks"] = int(n_items), int(tasks)
        m["records"] = dict(m["records"], shards=[int(round(s)) for s in shards])
        m["catalog"] = dict(m["catalog"], name_bytes=int(round(m["catalog"]["name_bytes"] * f)))
        m["total_bytes"] = int(total)
        for b in m["buckets"]:
            b["slots"], b["stored_bytes"] = int(round(b["slots"] * f)), int(round(b["stored_bytes"] * f))
        for ls in m["level_summary"]:
            for k in ("items", "stored_bytes", "fp32_bytes", "uint8_bytes"):
                ls[k] = int(round(ls[k] * f))
            for k in ("encodings", "decisions"):
                ls[k] = {e: int(round(c * f)) for e, c in ls[k].items()}
        base = len(group_doc({MANIFEST_KEY: m}))
    else:
        base = cal.root_bytes
    return base + (n_buckets - cal.buckets) * cal.root_per_bucket


def _bins(sizes: np.ndarray, weights: np.ndarray, k: int) -> list[tuple[float, float]]:
    """(mean size, count) of up to ``k`` bins of equal weight over sorted sizes."""
    if not len(sizes):
        return []
    order = np.argsort(sizes, kind="stable")
    s, w = sizes[order], weights[order]
    tot = float(w.sum())
    k = max(1, min(k, int(math.ceil(tot)), len(s)))
    edges = np.searchsorted(np.cumsum(w), np.linspace(0, tot, k + 1)[1:-1], side="right")
    out = []
    for a, b in zip(np.r_[0, edges], np.r_[edges, len(s)], strict=True):
        if b > a and w[a:b].sum() > 0:
            out.append((float(np.average(s[a:b], weights=w[a:b])), float(w[a:b].sum())))
    return out


def project_layout(planner: Planner, geoms: Sequence[Geom], sizes: np.ndarray, n_readable: float,
                   cal: StoreCalibration, nlev: int, *, exact_order: bool, seed: int = 0) -> StoreLayout:
    """Objects, structural bytes and reads of packing ``n_readable`` images distributed like
    ``geoms`` into a format-2.0 store, with ``sizes`` [m, L] the record bytes per image-level
    (measured for sampled images, predicted for the others).

    ``exact_order``: ``geoms`` *is* the corpus, in pack order — tasks are replayed exactly as the
    writer forms them. Otherwise the corpus order is taken as random with respect to size:
    pack tasks are simulated by drawing their images from ``geoms`` (seeded).
    """
    from qpyr.format.heap import frame_nbytes

    m = len(geoms)
    nr = max(int(round(n_readable)), 1)
    spt = planner.spt
    S = cal.shard_bytes
    nl = max(nlev, sizes.shape[1] if sizes.ndim == 2 else 0)
    has = np.zeros((m, nl), bool)
    for j, g in enumerate(geoms):
        has[j, :len(level_shapes(g.height, g.width))] = True
    rec = np.where(has[:, :sizes.shape[1]], np.maximum(np.rint(sizes), 4), 0).astype(np.int64)
    rec = np.pad(rec, ((0, 0), (0, nl - rec.shape[1])))
    tasks = -(-nr // spt)

    # tasks to replay: (item indices, weight = how many corpus tasks each stands for, task number)
    sims: list[tuple[np.ndarray, float, int]] = []
    if exact_order:
        sims = [(np.arange(t0, min(t0 + spt, m)), 1.0, t0 // spt) for t0 in range(0, m, spt)]
    else:
        rng = np.random.default_rng([int(seed), 0x5A4D])
        full, rest = divmod(nr, spt)
        if full:
            sims += [(rng.integers(0, m, spt), full / _SIM_FULL, i) for i in range(_SIM_FULL)]
        if rest:
            sims += [(rng.integers(0, m, rest), 1.0 / _SIM_REST, full) for _ in range(_SIM_REST)]

    n_shards = np.zeros(nl)
    used = np.zeros(nl)
    framing = np.zeros(nl)
    crossed = np.zeros(nl)
    blocks = np.zeros(nl)
    obj_sizes: list[list[float]] = [[] for _ in range(nl)]
    obj_w: list[list[float]] = [[] for _ in range(nl)]
    tables: list[list[list[int]]] = [[] for _ in range(nl)]
    for idx, w, tno in sims:
        for li in range(nl):
            r = rec[idx, li]
            r = r[r > 0]
            if not len(r):
                continue
            sh, cx, bx = fill_shards(r.tolist(), S)
            objs = [frame_nbytes(u, S) for u in sh]
            n_shards[li] += w * len(sh)
            used[li] += w * sum(sh)
            framing[li] += w * (sum(objs) - sum(sh))
            crossed[li] += w * cx
            blocks[li] += w * bx
            obj_sizes[li] += objs
            obj_w[li] += [w] * len(objs)
            tables[li] += [[tno, j, u, o] for j, (u, o) in enumerate(zip(sh, objs, strict=True))]

    # catalog (generation 1 at ``catalog/``): names, name_offsets, sources, level_l, quality_l, shards_l
    f = nr / cal.items
    cat_docs = cat_chunks = cat_bytes = 0.0
    n_cat_docs = 0
    hist: list[tuple[float, float]] = []
    chunk_hist: list[tuple[float, float]] = []

    def add_array(doc_b: float, chunks: float, chunk_b: float) -> None:
        nonlocal cat_docs, cat_chunks, cat_bytes, n_cat_docs
        cat_docs += doc_b
        n_cat_docs += 1
        cat_chunks += chunks
        cat_bytes += chunk_b
        if chunks:
            chunk_hist.append((chunk_b / chunks, chunks))

    for name, rows in (("names", None), ("name_offsets", nr + 1), ("sources", nr)):
        a = cal.arrays.get(name)
        if a is None or "doc" not in a:
            continue
        r_ = int(round(int(a["doc"]["shape"][0]) * f)) if rows is None else rows
        db, ch, cb, _ = _catalog_array(a, r_)
        add_array(db, ch, cb)
    for li in range(nl):
        for kind in ("level", "quality"):
            a = _template(cal, kind, li)
            if a is not None:
                db, ch, cb, _ = _catalog_array(a, nr)
                add_array(db, ch, cb)
        rows_l = int(round(n_shards[li]))
        tab = np.array(tables[li], np.int64).reshape(-1, 4)
        if not exact_order and len(tab):
            # the corpus's table: the simulated tasks' rows, repeated over the task numbers
            reps = max(1, -(-min(rows_l, _ENCODE_ROWS) // len(tab)))
            tab = np.concatenate([tab] * reps)[:max(min(rows_l, _ENCODE_ROWS), 1)]
            tab[:, 0] = np.cumsum(np.r_[0, tab[1:, 1] <= tab[:-1, 1]])
        db, ch, cb = _shard_table_bytes(cal, tab, rows_l)
        add_array(db, ch, cb)

    # documents: levels/ and catalog groups, levels/{l}/zarr.json (the record array)
    docs_b = float(sum(cal.fixed_docs.values()))
    n_docs = len(cal.fixed_docs)
    have = sorted(cal.level_docs)
    for li in range(nl):
        t = cal.level_docs.get(li) or (cal.level_docs[max([x for x in have if x <= li], default=have[0])] if have else {})
        if "records" in t:
            d = dict(t["records"], shape=[tasks, *t["records"]["shape"][1:]])
            docs_b += len(_dump(d))
            n_docs += 1

    blist, member = collect_buckets(planner, geoms, sizes)
    n_buckets = expected_buckets(blist, member, nr, exact_order=exact_order)
    data_guess = float(used.sum())
    struct = float(framing.sum()) + docs_b + cat_docs + cat_bytes
    root = _root_bytes(cal, nr, tasks, [int(round(x)) for x in n_shards], n_buckets, data_guess + struct + cal.root_bytes)
    overhead = struct + root

    for li in range(nl):
        hist += _bins(np.array(obj_sizes[li], float), np.array(obj_w[li], float), _BINS)
    hist += chunk_hist
    docs_total = docs_b + cat_docs
    n_all_docs = n_docs + n_cat_docs
    if n_all_docs:
        hist.append((docs_total / n_all_docs, float(n_all_docs)))
    hist.append((root, 1.0))
    objects = int(round(sum(c for _, c in hist)))

    streaming = LevelReads(0.0, n_shards.copy(), framing.copy())
    random = LevelReads(1.0, crossed.copy(), 3.0 * blocks)
    return StoreLayout(
        overhead=overhead, objects=objects, histogram=hist, reads={"streaming": streaming, "random": random},
        open_bytes=root + cat_bytes, open_requests=3.0 + cat_chunks, format="2.0", shard_bytes=S, shards=n_shards,
    )


def integer_histogram(hist: Sequence[tuple[float, float]], total: float) -> Layout:
    """Round expected object counts to integers (largest remainder, preserving the total count)
    and scale sizes so that the layout holds exactly ``total`` bytes."""
    hist = [(s, c) for s, c in hist if c > 0]
    want = int(round(sum(c for _, c in hist)))
    floors = [int(math.floor(c)) for _, c in hist]
    order = sorted(range(len(hist)), key=lambda i: hist[i][1] - floors[i], reverse=True)
    for i in order[:max(want - sum(floors), 0)]:
        floors[i] += 1
    pairs = [(s, c) for (s, _), c in zip(hist, floors, strict=True) if c > 0]
    if not pairs:
        return Layout(total_bytes=0.0, objects=0)
    cur = math.fsum(s * c for s, c in pairs)
    f = total / cur if cur > 0 else 0.0
    return Layout.from_histogram([(s * f, c) for s, c in pairs])
