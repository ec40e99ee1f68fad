"""The writer: pack inputs into a store, one shard-owning task at a time, then commit.

Packing is split into *tasks* of up to ``slots_per_task`` consecutive items. A task
(:func:`pack_task`) is a pure function of its inputs and options: it loads its items, builds
their pyramids, lets the policy choose encodings, quantizes and encodes every chunk, and
writes whole shards — it owns a fixed, shard-aligned slot range in every bucket, so tasks never
touch the same object. It ends by writing a *receipt* (``.qpyr/receipts/task-N.json``) with the
catalog rows of its items. :func:`commit` turns receipts into the catalog and array metadata
and writes the root ``zarr.json`` with the manifest **last**: a store without it is incomplete,
and re-running the same pack skips tasks whose receipts exist.

:func:`run_pack` drives it: one streamed pass lists the inputs into per-task lists under
``.qpyr/`` (memory O(task), never O(inputs)), a journal fingerprints the pack, tasks run here
or on a Dask cluster, and the commit streams the catalog. Every step can be killed and re-run
(spec/scale.md has the protocol and its invariants).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from qpyr._version import FORMAT_VERSION, FORMAT_VERSION_PLAN, __version__
from qpyr.codecs.encoding import Encoding
from qpyr.codecs.quant import StoredType
from qpyr.errors import FormatError, InputError, InputNotFoundError, QpyrError, StorageError, StoreExistsError
from qpyr.format import manifest as fmt
from qpyr.format import plan as plan_mod
from qpyr.format.layout import BucketSpec
from qpyr.format.shard import encode_shard
from qpyr.io.inputs import DEFAULT_PIXEL_LIMIT, InputRef, discover, load
from qpyr.io.pyramid import DEFAULT_MIN_SIDE, Filter, build_pyramid
from qpyr.io.storage import ObjectStore, is_url
from qpyr.policies import parse_floors, parse_policy, with_floors
from qpyr.policies.encode import EncodedLevel, encode_level

__all__ = ["PackOptions", "pack_task", "commit", "run_pack", "tune_worker_process", "JOURNAL", "receipt_key"]

JOURNAL = ".qpyr/pack.json"
DEFAULT_SLOTS_PER_TASK = 256


def receipt_key(task: int) -> str:
    return f".qpyr/receipts/task-{task:08d}.json"


@dataclass(frozen=True)
class PackOptions:
    """Everything a task needs besides its inputs (JSON-serializable, sent to workers)."""

    policy: str
    levels: int | None = None
    filter: str = Filter.AREA.value
    min_side: int = DEFAULT_MIN_SIDE
    pixel_limit: int = DEFAULT_PIXEL_LIMIT
    nonfinite: str = "error"
    slots_per_task: int = DEFAULT_SLOTS_PER_TASK
    measure_quality: bool = True
    #: quality floors: "X" (every level) or "L:X" (level L), see policy.parse_floors
    min_ssim: tuple[str, ...] = ()
    min_psnr: tuple[str, ...] = ()
    #: ``(path, slots_per_task)`` of existing buckets (an append) created with another
    #: ``slots_per_task``: their geometry (items per shard, task slot ranges) is fixed
    bucket_slots: tuple[tuple[str, int], ...] = ()

    def make_policy(self) -> Any:
        """The policy with the floors applied."""
        return with_floors(parse_policy(self.policy), parse_floors(list(self.min_ssim) or None, list(self.min_psnr) or None))

    def __post_init__(self) -> None:
        if self.levels is not None and not 1 <= self.levels <= 32:
            raise InputError(f"Expected levels in 1..32. Got {self.levels}.")
        if self.nonfinite not in ("error", "replace"):
            raise InputError(f"Expected nonfinite 'error' or 'replace'. Got {self.nonfinite!r}.")
        if not 1 <= self.slots_per_task <= 2**20:
            raise InputError(f"Expected slots_per_task in 1..{2**20}. Got {self.slots_per_task}.")
        if any(not 1 <= s <= 2**20 for _, s in self.bucket_slots):
            raise InputError(f"Expected bucket slots_per_task in 1..{2**20}. Got {self.bucket_slots}.")
        if self.pixel_limit < 1:
            raise InputError(f"Expected a positive pixel limit. Got {self.pixel_limit}.")
        Filter(self.filter)
        self.make_policy()  # validate the policy and floors early


# ------------------------------------------------------------------------------ task
class _BucketAcc:
    """Encoded chunks of a bucket's current shard row, written when the row is full."""

    def __init__(self, spec: BucketSpec, enc: Encoding, dtype: np.dtype[Any], pshape: tuple[int, ...] | None):
        self.spec = spec
        self.enc = enc
        self.dtype = dtype
        self.pshape = pshape
        self.count = 0
        self.shards: dict[str, dict[int, bytes]] = {}
        self.params: np.ndarray | None = None
        self.row = -1
        self.objects: dict[str, int] = {}

    def add(self, slot: int, e: EncodedLevel) -> None:
        b = self.spec
        k = b.items_per_shard
        self.row = slot // k
        for ty, tx, data in e.chunks:
            key, inner = b.chunk_location(slot, ty, tx)
            self.shards.setdefault(key, {})[inner] = data
        if self.pshape is not None and e.params is not None:
            if self.params is None:
                self.params = np.zeros((k,) + self.pshape, np.float32)
            sl = (slot % k, slice(None)) + tuple(slice(0, n) for n in e.params.shape[1:])
            self.params[sl] = e.params

    def shard_full(self, slot: int) -> bool:
        return slot % self.spec.items_per_shard == self.spec.items_per_shard - 1

    def flush(self, ostore: ObjectStore) -> None:
        b = self.spec
        for key, chunks in self.shards.items():
            data = encode_shard(chunks, b.n_inner)
            ostore.write(f"{b.path}/data/{key}", data)
            self.objects[f"{b.path}/data/{key}"] = len(data)
        if self.params is not None:
            key = f"{b.path}/qparams/c/{self.row}" + "/0" * len(self.pshape or ())
            data = fmt.encode_plain_chunk(self.params)
            ostore.write(key, data)
            self.objects[key] = len(data)
        self.shards = {}
        self.params = None


def pack_task(
    url: str,
    storage_options: dict[str, Any] | None,
    task: int,
    refs: list[InputRef],
    options: PackOptions,
    on_item: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Pack ``refs`` as task number ``task``; write its shards and receipt; return the receipt.

    Engine-agnostic and pure given its arguments: the same call always writes the same
    objects, so a re-run after a crash overwrites them with identical bytes. Task ``t`` owns
    slots ``[t * task_slots, (t + 1) * task_slots)`` of every bucket it writes (whole shard
    rows), so no two tasks ever write the same object. The receipt is written last, after
    every shard: a task without a receipt is re-run.
    """
    ostore = ObjectStore(url, storage_options)
    policy = options.make_policy()
    fixed = dict(options.bucket_slots)
    accs: dict[str, _BucketAcc] = {}
    prev_levels: list[np.ndarray] | None = None
    plan_stats: dict[str, Any] = {}
    encodings: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    for ref in refs:
        arr = load(ref, pixel_limit=options.pixel_limit, nonfinite=options.nonfinite)
        src_dt = arr.dtype
        levels = build_pyramid(arr, options.levels, filter=options.filter, min_side=options.min_side)
        if hasattr(policy, "plan_encoded"):
            # side information: the previous item's levels (frame sequences, issue #7)
            kw = {"previous": prev_levels} if getattr(policy, "uses_previous", False) else {}
            encoded = policy.plan_encoded(levels, src_dt, slots_per_task=options.slots_per_task, **kw)
        else:
            encoded = [encode_level(lv, src_dt, enc, li=li, slots_per_task=options.slots_per_task,
                                    quality=options.measure_quality)
                       for li, (lv, enc) in enumerate(zip(levels, policy.plan(levels, src_dt), strict=True))]
        rec: dict[str, Any] = {"name": ref.name, "dtype": src_dt.name, "shape": list(arr.shape), "levels": []}
        for e in encoded:
            spec, enc = e.spec, e.encoding
            if spec.channels * spec.height * spec.width > fmt.LIMITS["max_slot_samples"] or \
                    max(spec.height, spec.width) > fmt.LIMITS["max_side"]:
                raise InputError(f"{ref.name!r}: a level of {spec.channels} x {spec.height} x {spec.width} samples "
                                 "exceeds what readers accept (format.LIMITS max_side / max_slot_samples).")
            acc = accs.get(spec.path)
            if acc is None:
                if spec.path in fixed:  # an existing bucket of the store keeps its own geometry
                    spec = replace(spec, slots_per_task=fixed[spec.path])
                pshape = enc.quantizer.param_shape(spec.channels, spec.height, spec.width)
                acc = accs[spec.path] = _BucketAcc(spec, enc, np.dtype(spec.dtype), pshape)
                encodings[enc.id] = enc.to_dict()
            spec = acc.spec
            if acc.count >= spec.task_slots:  # never spill into the next task's slots
                raise FormatError(f"Task {task} has more items for {spec.path} than the {spec.task_slots} slots it "
                                  "owns there (slots_per_task larger than the bucket's).")
            slot = task * spec.task_slots + acc.count
            acc.count += 1
            acc.add(slot, e)
            if acc.shard_full(slot):
                acc.flush(ostore)
            rec["levels"].append({
                "bucket": spec.path, "slot": slot, "h": e.height, "w": e.width, "bytes": e.nbytes,
                "psnr": fmt.json_float(e.psnr), "ssim": fmt.json_float(e.ssim), "decision": e.decision,
            })
        items.append(rec)
        plan_mod.accumulate(plan_stats, encoded)
        prev_levels = levels
        if on_item is not None:
            on_item(ref.name)
    objects: dict[str, int] = {}
    buckets: dict[str, Any] = {}
    for path, acc in accs.items():
        acc.flush(ostore)
        objects.update(acc.objects)
        d = acc.spec.to_dict()
        d["params_shape"] = list(acc.pshape) if acc.pshape is not None else None
        buckets[path] = d
    receipt = {"task": task, "items": items, "buckets": buckets, "encodings": encodings, "objects": objects,
               "plan_stats": plan_stats}
    ostore.write(receipt_key(task), json.dumps(receipt, allow_nan=False).encode())
    return receipt


# ------------------------------------------------------------------------------ commit
class _RowSink:
    """Writes one plain array (§4.3) chunk by chunk as rows arrive: memory is one chunk.

    Rows beyond the last item are zero padding (as :func:`format.encode_plain_chunks` writes
    them), and an empty array still gets its one chunk, so the objects are byte-identical to
    writing the whole array at once.
    """

    def __init__(self, ostore: ObjectStore, key: str, chunk_rows: int, tail: tuple[int, ...], dtype: Any,
                 dims: list[str]):
        self.os, self.key, self.chunk_rows, self.tail, self.dims = ostore, key, chunk_rows, tail, dims
        self.dtype = np.dtype(dtype)
        self.buf = np.zeros((chunk_rows,) + tail, self.dtype)
        self.fill_ = 0
        self.chunk = 0
        self.rows = 0
        self.rest = "/0" * len(tail)

    def _flush(self) -> None:
        self.buf[self.fill_:] = 0
        self.os.write(f"{self.key}/c/{self.chunk}{self.rest}", fmt.encode_plain_chunk(self.buf))
        self.chunk += 1
        self.fill_ = 0

    def extend(self, block: np.ndarray) -> None:
        i, m = 0, len(block)
        while i < m:
            take = min(m - i, self.chunk_rows - self.fill_)
            self.buf[self.fill_:self.fill_ + take] = block[i:i + take]
            self.fill_ += take
            i += take
            if self.fill_ == self.chunk_rows:
                self._flush()
        self.rows += m

    def pad(self, count: int, value: Any) -> None:
        """Append ``count`` rows of ``value`` (an absent level: -1 / NaN) without a block of that size."""
        while count > 0:
            take = min(count, self.chunk_rows - self.fill_)
            self.buf[self.fill_:self.fill_ + take] = value
            self.fill_ += take
            self.rows += take
            count -= take
            if self.fill_ == self.chunk_rows:
                self._flush()

    def close(self) -> None:
        if self.fill_ or self.rows == 0:
            self._flush()
        self.os.write(f"{self.key}/zarr.json", fmt.plain_array_doc(
            [self.rows, *self.tail], [self.chunk_rows, *self.tail], self.dtype, self.dims))


class _LevelStats:
    """Running ``level_summary`` entry of one level (constant memory)."""

    def __init__(self) -> None:
        self.items = 0
        self.fp32 = 0
        self.u8 = 0
        self.psnr: list[float] = [0.0, 0.0, math.inf]  # sum, count, min over finite PSNRs
        self.ssim: list[float] = [0.0, 0.0, math.inf]
        self.smin: np.ndarray | None = None
        self.smax: np.ndarray | None = None
        self.encodings: dict[str, int] = {}
        self.decisions: dict[str, int] = {}

    def add(self, shapes: np.ndarray, psnr: np.ndarray, ssim: np.ndarray, eids: list[str], decisions: list[str]) -> None:
        """``shapes`` int64 [m, 3] (C, h, w); ``psnr``/``ssim`` float64 [m] (NaN/inf: not finite)."""
        if not len(shapes):
            return
        self.items += len(shapes)
        px = shapes[:, 0] * shapes[:, 1] * shapes[:, 2]
        self.u8 += int(px.sum())
        self.fp32 += 4 * int(px.sum())
        for acc, v in ((self.psnr, psnr[np.isfinite(psnr)]), (self.ssim, ssim[~np.isnan(ssim)])):
            for x in v.tolist():  # sequential, in item order (what numpy's mean does for short lists)
                acc[0] += x
            acc[1] += len(v)
            if len(v):
                acc[2] = min(acc[2], float(v.min()))
        lo, hi = shapes.min(axis=0), shapes.max(axis=0)
        self.smin = lo if self.smin is None else np.minimum(self.smin, lo)
        self.smax = hi if self.smax is None else np.maximum(self.smax, hi)
        for e in eids:
            self.encodings[e] = self.encodings.get(e, 0) + 1
        for d in decisions:
            self.decisions[d] = self.decisions.get(d, 0) + 1

    def summary(self, level: int, stored_bytes: int) -> dict[str, Any]:
        def mean(a: list[float]) -> float | None:
            return a[0] / a[1] if a[1] else None

        return {
            "level": level, "items": self.items, "stored_bytes": stored_bytes,
            "fp32_bytes": self.fp32, "uint8_bytes": self.u8,
            "psnr_mean": mean(self.psnr), "psnr_min": self.psnr[2] if self.psnr[1] else None,
            "ssim_mean": mean(self.ssim), "ssim_min": self.ssim[2] if self.ssim[1] else None,
            "shape_min": [int(x) for x in self.smin] if self.smin is not None else None,
            "shape_max": [int(x) for x in self.smax] if self.smax is not None else None,
            "encodings": self.encodings, "decisions": self.decisions,
        }


class _CatalogWriter:
    """Streams catalog rows into the catalog arrays of one generation (§7)."""

    def __init__(self, ostore: ObjectStore, base: str, chunk_rows: int):
        self.os, self.base, self.cr = ostore, base, chunk_rows
        self.names = _RowSink(ostore, f"{base}/names", 2**20, (), np.uint8, ["byte"])
        self.offsets = _RowSink(ostore, f"{base}/name_offsets", chunk_rows, (), np.uint64, ["item"])
        self.offsets.extend(np.zeros(1, np.uint64))
        self.sources = _RowSink(ostore, f"{base}/sources", chunk_rows, (5,), np.int64, ["item", "field"])
        self.levels: list[_RowSink] = []
        self.quality: list[_RowSink] = []
        self.stats: list[_LevelStats] = []
        self.n = 0
        self.name_bytes = 0

    def _level(self, li: int) -> None:
        while len(self.levels) <= li:
            j = len(self.levels)
            tab = _RowSink(self.os, f"{self.base}/level_{j}", self.cr, (len(fmt.LEVEL_COLUMNS),), np.int64, ["item", "field"])
            qual = _RowSink(self.os, f"{self.base}/quality_{j}", self.cr, (2,), np.float32, ["item", "metric"])
            tab.pad(self.n, -1)  # items so far have no level j
            qual.pad(self.n, np.nan)
            self.levels.append(tab)
            self.quality.append(qual)
            self.stats.append(_LevelStats())

    def add(self, names: list[str], sources: np.ndarray, tabs: list[np.ndarray], quals: list[np.ndarray],
            eids: list[list[str]], quals64: list[np.ndarray] | None = None) -> None:
        """A block of ``m`` items: ``sources`` [m, 5]; per level ``l`` present in the block,
        ``tabs[l]`` [m, 6] (-1 rows where absent), ``quals[l]`` [m, 2] float32 (stored),
        ``eids[l]`` the encoding ids of the items that have level ``l``, in order, and
        ``quals64`` the same quality as measured (float64; the summary uses it when given)."""
        m = len(names)
        enc = [s.encode("utf-8") for s in names]
        lens = np.fromiter((len(b) for b in enc), np.uint64, m)
        self.names.extend(np.frombuffer(b"".join(enc), np.uint8))
        self.offsets.extend(np.uint64(self.name_bytes) + np.cumsum(lens, dtype=np.uint64))
        self.name_bytes += int(lens.sum())
        self.sources.extend(sources)
        if tabs:
            self._level(len(tabs) - 1)
        for li, sink in enumerate(self.levels):
            if li < len(tabs):
                tab, q = tabs[li], quals[li]
                sink.extend(tab)
                self.quality[li].extend(q)
                present = tab[:, 0] >= 0
                shapes = np.stack([sources[present, 1], tab[present, 2], tab[present, 3]], axis=1)
                dec = [fmt.DECISIONS[int(d)] for d in tab[present, 5]]
                q64 = (quals64[li] if quals64 is not None else q.astype(np.float64))[present]
                self.stats[li].add(shapes, q64[:, 0], q64[:, 1], eids[li], dec)
            else:
                sink.pad(m, -1)
                self.quality[li].pad(m, np.nan)
        self.n += m

    def close(self) -> None:
        for s in (self.names, self.offsets, self.sources, *self.levels, *self.quality):
            s.close()


def _receipt_block(r: dict[str, Any], bindex: dict[str, int], buckets: dict[str, dict[str, Any]]) -> tuple[Any, ...]:
    items = r["items"]
    m = len(items)
    nl = max((len(it["levels"]) for it in items), default=0)
    sources = np.zeros((m, 5), np.int64)
    tabs = [np.full((m, len(fmt.LEVEL_COLUMNS)), -1, np.int64) for _ in range(nl)]
    quals = [np.full((m, 2), np.nan, np.float64) for _ in range(nl)]
    eids: list[list[str]] = [[] for _ in range(nl)]
    for i, it in enumerate(items):
        sources[i] = [fmt.DTYPE_CODES.index(it["dtype"]), *it["shape"], len(it["levels"])]
        for li, lv in enumerate(it["levels"]):
            tabs[li][i] = [bindex[lv["bucket"]], lv["slot"], lv["h"], lv["w"], lv["bytes"],
                           fmt.DECISIONS.index(lv.get("decision", "planned"))]
            psnr, ssim = lv["psnr"], lv["ssim"]
            # JSON has no infinity: a lossless level's PSNR (inf) is stored as null with SSIM 1
            quals[li][i] = [math.inf if psnr is None and ssim == 1.0 else (psnr if psnr is not None else math.nan),
                            ssim if ssim is not None else math.nan]
            eids[li].append(buckets[lv["bucket"]]["encoding"])
    return [it["name"] for it in items], sources, tabs, [q.astype(np.float32) for q in quals], eids, quals


def bucket_docs(b: dict[str, Any], slots: int, encodings: dict[str, Any]) -> dict[str, bytes]:
    """The array documents of a bucket with ``slots`` slots (data, and qparams if any)."""
    spec = BucketSpec.from_dict(b)
    enc = Encoding.from_dict(encodings[spec.encoding_id])
    dt = np.dtype(b["dtype"])
    attrs = {"qpyr": {"role": "data", "encoding": spec.encoding_id, "packed_int4": spec.packed}}
    out = {f"{spec.path}/data/zarr.json": fmt.bucket_data_doc(spec, slots, dt, enc.codec.zarr_chain(dt), attrs)}
    if b.get("params_shape"):
        ps = list(b["params_shape"])
        dims = ["slot", "param"] + (["channel"] if len(ps) == 2 else ["channel", "by", "bx"])
        out[f"{spec.path}/qparams/zarr.json"] = fmt.plain_array_doc(
            [slots] + ps, [spec.items_per_shard] + ps, np.dtype(np.float32), dims,
            {"qpyr": {"role": "qparams", "params": ["scale", "zero_point"]}})
    return out


_TMP = re.compile(r"\.tmp-[0-9a-f]{8}$")
#: Receipts fetched per request batch during the commit (concurrently on async backends).
_RECEIPT_BATCH = 32


def commit(ostore: ObjectStore, options: PackOptions, task_range: range, *, previous: Any = None) -> dict[str, Any]:
    """Turn the receipts of ``task_range`` into generation ``g`` of the store; returns the manifest.

    ``previous`` is the open :class:`~qpyr.store.Store` being appended to (its rows come first)
    or None. Steps (spec/format.md §13.3): write the catalog of generation ``g`` at
    ``format.catalog_path(g)`` — streamed, one chunk of rows in memory —, the group and array
    documents, list the store for sizes, then write the root ``zarr.json`` **last**. Idempotent:
    a killed commit is simply run again. Cleanup (old catalog, ``.qpyr/``) is :func:`_finish`.

    Memory: one catalog chunk per array, the bucket and encoding tables, and the store listing
    (one entry per object, i.e. O(items / items-per-shard)).
    """
    pm = previous.manifest if previous is not None else None
    gen = (pm["generation"] if pm else 0) + 1
    base = fmt.catalog_path(gen)
    buckets: dict[str, dict[str, Any]] = {}
    encodings: dict[str, Any] = {}
    slots: dict[str, int] = {}
    if pm is not None:
        encodings.update(pm["encodings"])
        for b in pm["buckets"]:
            buckets[b["path"]] = {k: v for k, v in b.items() if k not in ("slots", "stored_bytes")}
            slots[b["path"]] = b["slots"]
    # pass 1 over receipts: the bucket table (its sorted order is the catalog's bucket index)
    plan_stats: dict[str, Any] = plan_mod.merge(pm.get("plan") if pm else None, None)
    for r in _iter_receipts(ostore, task_range, fields=("buckets", "encodings", "plan_stats")):
        plan_stats = plan_mod.merge(plan_stats, r["plan_stats"])
        encodings.update(r["encodings"])
        for path, b in r["buckets"].items():
            old = buckets.get(path)
            if old is not None and old != b:
                raise FormatError(f"Cannot commit: bucket {path} of task {r['task']} disagrees with the store "
                                  f"({old} vs {b}).")
            buckets[path] = b
            slots[path] = max(slots.get(path, 0), (r["task"] + 1) * BucketSpec.from_dict(b).task_slots)
    bpaths = sorted(buckets)
    bindex = {p: i for i, p in enumerate(bpaths)}

    # pass 2: the catalog, streamed
    if gen == 1:
        ostore.delete("catalog")  # leftovers of a killed commit of this same pack
    else:
        ostore.delete(base)  # never read: the root that would name it is not written yet
    rows = fmt.CATALOG_CHUNK_ROWS
    cw = _CatalogWriter(ostore, base, rows)
    if previous is not None and pm is not None and len(previous):
        remap = np.array([bindex[b["path"]] for b in pm["buckets"]], np.int64)
        peids = [b["encoding"] for b in pm["buckets"]]
        for s in range(0, len(previous), rows):
            sl = slice(s, s + rows)
            tabs, quals, eids = [], [], []
            for tab, q in zip(previous.catalog.levels, previous.catalog.quality, strict=True):
                t = tab[sl].copy()
                present = t[:, 0] >= 0
                eids.append([peids[int(x)] for x in t[present, 0]])
                t[present, 0] = remap[t[present, 0]]
                tabs.append(t)
                quals.append(np.asarray(q[sl]))
            cw.add(previous.catalog.names[sl], np.asarray(previous.catalog.sources[sl]), tabs, quals, eids)
    for r in _iter_receipts(ostore, task_range, fields=("items",)):
        cw.add(*_receipt_block(r, bindex, buckets))
    cw.close()

    # group and array documents
    written: set[str] = set()

    def group(path: str, attrs: dict[str, Any] | None = None) -> None:
        if path not in written:
            ostore.write(f"{path}/zarr.json", fmt.group_doc(attrs))
            written.add(path)

    group("catalog", {"qpyr": {"role": "catalog"}})
    group(base, {"qpyr": {"role": "catalog"}})
    group("levels")
    bucket_list = []
    for p in bpaths:
        b = buckets[p]
        spec = BucketSpec.from_dict(b)
        group(f"levels/{spec.level}")
        group(f"levels/{spec.level}/{spec.encoding_id}", {"qpyr": {"encoding": encodings[spec.encoding_id]}})
        group(p, {"qpyr": {"role": "bucket"}})
        for key, doc in bucket_docs(b, slots[p], encodings).items():
            ostore.write(key, doc)
        bucket_list.append(dict(b, slots=slots[p]))

    # sizes: every object but .qpyr/, the root, other catalog generations and crash leftovers
    by_bucket: dict[str, int] = {}
    by_level: dict[str, int] = {}
    total = 0
    for k, v in ostore.list_sizes().items():
        if k.startswith(".qpyr/") or k == "zarr.json":
            continue
        if _TMP.search(k):  # a temporary file of a write killed before its rename
            ostore.delete(k)
            continue
        if k.startswith("catalog/") and k != "catalog/zarr.json" and not (gen == 1 or k.startswith(base + "/")):
            continue  # the previous generation's catalog: removed after the root is written
        total += v
        parts = k.split("/")
        if parts[0] == "levels" and len(parts) > 2:
            by_level[parts[1]] = by_level.get(parts[1], 0) + v
            if len(parts) > 4:
                bp = "/".join(parts[:4])
                by_bucket[bp] = by_bucket.get(bp, 0) + v
    for bd in bucket_list:
        bd["stored_bytes"] = by_bucket.get(bd["path"], 0)
    level_summary = [st.summary(li, by_level.get(str(li), 0)) for li, st in enumerate(cw.stats)]
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "writer": f"qpyr {__version__}",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "generation": gen,
        "items": cw.n,
        "levels": len(cw.levels),
        "policy": options.make_policy().spec,
        "filter": options.filter,
        "tasks": task_range.stop,
        "slots_per_task": options.slots_per_task,
        "encodings": encodings,
        "buckets": bucket_list,
        "level_summary": level_summary,
        "catalog": {"chunk_rows": rows, "name_bytes": cw.name_bytes, "dtypes": fmt.DTYPE_CODES},
        "total_bytes": 0,
    }
    plan = plan_mod.build_plan(options.make_policy(), plan_stats)
    if plan is not None:  # optional field (format 1.1): 1.0 readers ignore it
        manifest["plan"] = plan
        manifest["optional"] = ["plan"]
        manifest["format_version"] = FORMAT_VERSION_PLAN
    if any((e.get("codec") or {}).get("configuration", {}).get("entropy") == "jfif" for e in encodings.values()):
        manifest["format_version"] = FORMAT_VERSION_PLAN  # qpyr.dct entropy "jfif" is a 1.1 addition
    doc = b""
    for _ in range(3):  # the root document counts itself; iterate to a fixed point
        manifest["total_bytes"] = total + len(doc)
        doc = fmt.group_doc({fmt.MANIFEST_KEY: manifest})
        if total + len(doc) == manifest["total_bytes"]:
            break
    ostore.write("zarr.json", doc)
    return manifest


def _iter_receipts(ostore: ObjectStore, task_range: range, fields: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Receipts of ``task_range`` in task order (fetched in small concurrent batches), keeping
    only ``fields`` (and ``task``)."""
    for s in range(task_range.start, task_range.stop, _RECEIPT_BATCH):
        ts = range(s, min(s + _RECEIPT_BATCH, task_range.stop))
        try:
            blobs = ostore.read_many([receipt_key(t) for t in ts])
        except FileNotFoundError as e:
            raise FormatError(f"Cannot commit: {e.args[0] if e.args else 'a task'} is missing "
                              "(the task did not finish).") from None
        for t, raw in zip(ts, blobs, strict=True):
            r = json.loads(raw)
            yield {"task": t, **{f: r.get(f) for f in fields}}


def _finish(ostore: ObjectStore, manifest: dict[str, Any]) -> None:
    """After the root of generation ``g`` is written: remove other catalog generations, then
    ``.qpyr/`` with the journal last (a re-run that still finds the journal and a root of
    generation ``base + 1`` knows the commit landed and only finishes this)."""
    gen = int(manifest["generation"])
    if gen > 1:
        keep = fmt.catalog_path(gen).split("/", 1)[1]
        children = {k.split("/")[1] for k in ostore.list_sizes("catalog") if k.count("/") >= 1}
        for child in sorted(children - {"zarr.json", keep}):
            ostore.delete(f"catalog/{child}")
    for sub in ("lists", "receipts"):
        ostore.delete(f".qpyr/{sub}")
    ostore.delete(JOURNAL)
    ostore.delete(".qpyr")


def _rollback(ostore: ObjectStore, m: dict[str, Any] | None, keep: str | None = None) -> None:
    """Remove everything an unfinished or failed append added to the committed store ``m``
    (a fresh pack: everything), keeping ``.qpyr/`` entries under ``keep``. The snapshot ``m``
    stays readable throughout: only objects it does not reference are deleted, and bucket
    documents an interrupted commit grew are rewritten with ``m``'s slot counts."""
    if m is None:
        keys = list(ostore.list_sizes())
        for top in sorted({k.split("/", 1)[0] for k in keys} - {".qpyr"}):
            ostore.delete(top)
        for k in keys:
            if k.startswith(".qpyr/") and not (keep and k.startswith(keep + "/")):
                ostore.delete(k)
        return
    rows: dict[str, int] = {}
    groups = {"levels/zarr.json", "catalog/zarr.json", "zarr.json"}
    for b in m["buckets"]:
        spec = BucketSpec.from_dict(b)
        rows[b["path"]] = -(-b["slots"] // spec.items_per_shard)
        groups |= {f"levels/{spec.level}/zarr.json", f"levels/{spec.level}/{spec.encoding_id}/zarr.json"}
    cat = fmt.catalog_path(m["generation"]) + "/"
    for k in list(ostore.list_sizes()):
        parts = k.split("/")
        if k in groups or (keep and k.startswith(keep + "/")):
            continue
        if parts[0] == ".qpyr" or _TMP.search(k):
            ostore.delete(k)
        elif parts[0] == "catalog":
            if not (m["generation"] == 1 or k.startswith(cat)):
                ostore.delete(k)
        elif parts[0] == "levels":
            bp = "/".join(parts[:4])
            if bp not in rows or len(parts) < 5:
                ostore.delete(k)
            elif parts[4] in ("data", "qparams") and len(parts) > 6 and parts[5] == "c":
                if not parts[6].isdigit() or int(parts[6]) >= rows[bp]:
                    ostore.delete(k)
    for b in m["buckets"]:
        for key, doc in bucket_docs(b, b["slots"], m["encodings"]).items():
            try:
                cur = json.loads(ostore.read(key))
            except (FileNotFoundError, ValueError):
                cur = None
            if cur is None or cur.get("shape", [None])[0] != b["slots"]:
                ostore.write(key, doc)


# ------------------------------------------------------------------------------ listing
@dataclass
class _Listing:
    """What one streamed pass over the inputs found."""

    session: str
    fingerprint: str
    tasks: int
    items: int
    #: refs of tasks that hold in-memory arrays (they cannot go to a JSON list); others are in the store
    mem: dict[int, list[InputRef]]


def _lists_prefix(session: str) -> str:
    return f".qpyr/lists/{session}"


def _list_key(session: str, task: int) -> str:
    return f"{_lists_prefix(session)}/task-{task:08d}.json"


def _array_digest(a: Any) -> bytes:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    if a.size and a.dtype.kind != "O":  # object arrays are refused when loaded
        h.update(a.reshape(-1).view(np.uint8))
    return h.digest()


def _name_hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _list_inputs(inputs: Iterable[Any], ostore: ObjectStore, options: PackOptions, *, session: str, mode: str,
                 first_task: int, storage_options: dict[str, Any] | None, previous_names: Any) -> _Listing:
    """One streamed pass over the inputs: write the ordered input list of every task to
    ``.qpyr/lists/<session>/``, fingerprint the pack, and check names.

    Memory: one task's refs, plus 8 bytes per name (a 64-bit hash, to find duplicates at the
    end; colliding hashes are resolved against the written lists) — never the list of inputs.
    In-memory arrays are the exception: they cannot be written to a JSON list, so the refs of
    tasks that hold arrays stay in memory until they are packed (or found done).
    """
    spt = options.slots_per_task
    h = hashlib.sha256(json.dumps({"mode": mode, "options": asdict(options)}, sort_keys=True).encode())
    hashes = array("Q")
    mem: dict[int, list[InputRef]] = {}
    chunk: list[InputRef] = []
    t = first_task
    n = 0

    def flush() -> None:
        nonlocal t, chunk
        recs: list[list[str | None]] = []
        has_arrays = False
        for r in chunk:
            if isinstance(r.source, str):
                recs.append([r.name, r.source])
            else:
                has_arrays = True
                recs.append([r.name, None])
        ostore.write(_list_key(session, t), json.dumps({"task": t, "items": recs}).encode())
        if has_arrays:
            mem[t] = chunk
        t += 1
        chunk = []

    for ref in discover(inputs, storage_options=storage_options):
        src = ref.source
        h.update(ref.name.encode("utf-8", "surrogatepass") + b"\0" +
                 (src.encode("utf-8", "surrogatepass") if isinstance(src, str) else _array_digest(src)) + b"\0")
        if previous_names is not None and ref.name in previous_names:
            raise InputError(f"Item name {ref.name!r} (from {_show(src)}) is already in {ostore.url!r}; "
                             "item names must be unique within a store: rename the input.")
        hashes.append(_name_hash(ref.name))
        chunk.append(ref)
        n += 1
        if len(chunk) == spt:
            flush()
    if chunk:
        flush()
    if n == 0:
        raise InputNotFoundError("No inputs given.")
    srt = np.frombuffer(hashes, np.uint64)
    srt.sort()  # in place: the hashes are the only per-name memory (8 bytes each)
    clash = srt[1:][srt[1:] == srt[:-1]]
    if clash.size:
        _raise_duplicate(ostore, session, first_task, t, mem, set(clash.tolist()))
    return _Listing(session, h.hexdigest(), t - first_task, n, mem)


def _show(src: Any) -> str:
    return repr(src) if isinstance(src, str) else "an in-memory array"


def _raise_duplicate(ostore: ObjectStore, session: str, t0: int, t1: int, mem: dict[int, list[InputRef]],
                     clash: set[int]) -> None:
    """Find the names behind colliding hashes (rare: one more pass over the written lists)."""
    seen: dict[str, Any] = {}
    for t in range(t0, t1):
        recs = [[r.name, r.source] for r in mem[t]] if t in mem else json.loads(ostore.read(_list_key(session, t)))["items"]
        for name, src in recs:
            if _name_hash(name) in clash:
                if name in seen:
                    raise InputError(f"Duplicate item name {name!r} (from {_show(seen[name])} and {_show(src)}); "
                                     "item names must be unique within a store.")
                seen[name] = src


def _check_names_against(ostore: ObjectStore, listing: _Listing, t0: int, names: Any) -> None:
    for t in range(t0, t0 + listing.tasks):
        recs = ([[r.name, r.source] for r in listing.mem[t]] if t in listing.mem
                else json.loads(ostore.read(_list_key(listing.session, t)))["items"])
        for name, src in recs:
            if name in names:
                raise InputError(f"Item name {name!r} (from {_show(src)}) is already in {ostore.url!r}; "
                                 "item names must be unique within a store: rename the input.")


def _task_refs(ostore: ObjectStore, listing_session: str, t: int, mem: dict[int, list[InputRef]],
               storage_options: dict[str, Any] | None) -> list[InputRef]:
    if t in mem:
        return mem[t]
    recs = json.loads(ostore.read(_list_key(listing_session, t)))["items"]
    so = tuple(sorted((storage_options or {}).items()))
    out = []
    for name, src in recs:
        if src is None:
            raise FormatError(f"The unfinished pack in {ostore.url!r} packs in-memory arrays; pass the same arrays "
                              "again to complete it.")
        out.append(InputRef(name, src, so if is_url(src) else ()))
    return out


# ------------------------------------------------------------------------------ driver
def _read_journal(ostore: ObjectStore) -> dict[str, Any] | None:
    try:
        j = json.loads(ostore.read(JOURNAL))
    except (FileNotFoundError, ValueError):
        return None
    need = {"fingerprint": str, "mode": str, "lists": str, "first_task": int, "tasks": int, "base_generation": int}
    if not isinstance(j, dict) or any(not isinstance(j.get(k), t) for k, t in need.items()):
        return None  # a journal of an older qpyr, or not ours: treated as an unfinished foreign pack
    return j


def _peek_root(ostore: ObjectStore) -> tuple[Any, bool]:
    """(open Store or None, whether a root document exists)."""
    from qpyr.read.store import open_store

    if not ostore.exists("zarr.json"):
        return None, False
    try:
        return open_store(ostore), True
    except QpyrError:
        return None, True


def _foreign_content(ostore: ObjectStore) -> bool:
    return any(not k.startswith(".qpyr/") for k in ostore.list_sizes())


_WORKER_TUNED = False


def tune_worker_process() -> None:
    """Settings for a process that runs pack tasks side by side with others (a Dask worker).

    - One torch thread: the worker processes are the parallelism; torch's own pool would
      oversubscribe the cores (on a busy 2-core machine a 2-thread pool spins: 5x slower).
    - glibc malloc thresholds (Linux): Dask's nanny starts workers with
      ``MALLOC_TRIM_THRESHOLD_=65536``, which also pins the mmap threshold at 128 KiB, so every
      MiB-sized temporary of a pyramid or an SSIM is a fresh ``mmap`` and page-faulted again
      (measured: 1.6x slower per item). Raising ``M_MMAP_THRESHOLD`` to 32 MiB and
      ``M_TRIM_THRESHOLD`` to 64 MiB keeps them in the heap; memory stays bounded by one task.
    """
    global _WORKER_TUNED
    if _WORKER_TUNED:
        return
    import torch

    torch.set_num_threads(1)
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if hasattr(libc, "mallopt"):
            libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
            libc.mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD
    except OSError:  # not glibc: nothing to tune
        pass
    _WORKER_TUNED = True


def _pack_on_worker(url: str, storage_options: dict[str, Any] | None, task: int, refs: list[InputRef],
                    options: PackOptions) -> tuple[int, int]:
    """:func:`pack_task` on a Dask worker (see :func:`tune_worker_process`). Returns (task,
    items): the receipt stays in the store, not in the scheduler."""
    tune_worker_process()
    pack_task(url, storage_options, task, refs, options)
    return task, len(refs)


def _run_tasks(url: str, ostore: ObjectStore, todo: list[int], listing: _Listing, options: PackOptions,
               storage_options: dict[str, Any] | None, client: Any, bar: Any) -> None:
    if client is None:
        for t in todo:
            refs = _task_refs(ostore, listing.session, t, listing.mem, storage_options)
            pack_task(url, storage_options, t, refs, options, on_item=(lambda _n: bar.update(1)) if bar else None)
            listing.mem.pop(t, None)
        return
    from distributed import as_completed

    workers = max(1, sum(client.nthreads().values()))
    # One task per worker thread in flight: the driver holds at most this many tasks' inputs,
    # and no task waits in a busy worker's queue while another worker idles (with two per
    # thread, Dask sometimes gave one of two workers three of four tasks: 1.6 s vs 4.2 s).
    limit = workers
    pending = iter(todo)
    nonce = uuid.uuid4().hex[:8]
    ac = as_completed()
    first_error: BaseException | None = None

    def submit() -> bool:
        t = next(pending, None)
        if t is None:
            return False
        refs = _task_refs(ostore, listing.session, t, listing.mem, storage_options)
        listing.mem.pop(t, None)
        ac.add(client.submit(_pack_on_worker, url, storage_options, t, refs, options, pure=False,
                             key=f"qpyr-pack-{nonce}-{t}"))
        return True

    for _ in range(limit):
        if not submit():
            break
    for fut in ac:
        try:
            _, n = fut.result()
            if bar is not None:
                bar.update(n)
        except BaseException as e:  # noqa: BLE001 - re-raised below, after in-flight tasks end
            first_error = first_error or e
        if first_error is None:
            submit()
    # On an error nothing new was submitted and every task in flight has ended, so nothing
    # writes into the store while the caller cleans up.
    if first_error is not None:
        raise first_error


def run_pack(
    inputs: Iterable[Any],
    url: str,
    options: PackOptions,
    *,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    append: bool = False,
    progress: bool = False,
    client: Any = None,
) -> dict[str, Any]:
    """Pack ``inputs`` into the store at ``url``; returns the committed manifest.

    Crash-safe and resumable (spec/scale.md): the inputs are listed once, streamed, into
    per-task lists under ``.qpyr/``; a journal records the pack's fingerprint; tasks write
    their shards and then a receipt; the commit writes the root ``zarr.json`` last. Re-running
    the same call after a crash (even ``SIGKILL``) at any point skips finished tasks and
    completes the pack; every item is packed exactly once.

    ``append=True`` adds the inputs after the store's items (new tasks and shard rows only;
    no existing object is rewritten, readers keep their snapshot). A failed append (bad input)
    is rolled back; ``append=True, overwrite=True`` abandons an unfinished append of other
    inputs. ``client``: a ``distributed.Client``; tasks run on its workers, one per worker
    thread in flight.
    """
    options.make_policy()  # fail fast on a bad policy, before touching storage
    ostore = ObjectStore(url, storage_options)
    mode = "append" if append else "pack"
    root, has_root = _peek_root(ostore)
    journal = _read_journal(ostore) if ostore.exists(JOURNAL) else None
    finished_fp = None
    if journal is not None and root is not None and root.manifest["generation"] == journal["base_generation"] + 1:
        _finish(ostore, root.manifest)  # a commit landed but its cleanup was interrupted
        finished_fp, journal = journal["fingerprint"], None
    elif journal is None and ostore.exists(JOURNAL):
        journal = {"fingerprint": "", "mode": "?", "lists": "", "first_task": 0, "tasks": 0, "base_generation": -1}
    previous = None
    if append:
        if has_root and root is None:
            from qpyr.read.store import open_store

            open_store(ostore)  # raises the reason the store cannot be opened
        previous = root
        if previous is not None:
            # The store's geometry wins over the call's slots_per_task: existing buckets keep
            # their own (it fixes their items per shard and task slot ranges, format.md §8.3),
            # and no task may hold more items than the slots it owns in any of them.
            own = {bd["path"]: int(bd["slots_per_task"]) for bd in previous.manifest["buckets"]}
            spt = min([int(previous.manifest["slots_per_task"]), *own.values()])
            options = replace(options, slots_per_task=spt,
                              bucket_slots=tuple(sorted((p, s) for p, s in own.items() if s != spt)))
    if journal is None and finished_fp is None:
        if not append and has_root and not overwrite:
            raise StoreExistsError(f"{url!r} already holds a qpyr store; pass --overwrite (overwrite=True) to replace it.")
        if not has_root and not overwrite and _foreign_content(ostore):
            raise StoreExistsError(f"{url!r} exists and is not empty; pass --overwrite (overwrite=True) to replace it.")
        ostore.delete(".qpyr")  # leftovers of a run killed before its journal was written
    first_task = int(previous.manifest["tasks"]) if previous is not None else 0
    base_gen = int(previous.manifest["generation"]) if previous is not None else 0
    done = {int(k.rsplit("-", 1)[1].split(".")[0]) for k in ostore.list_sizes(".qpyr/receipts")
            if k.endswith(".json")} if journal is not None else set()
    prev_names = previous.catalog.index if previous is not None else None  # O(N) names: the open store's own table
    session = uuid.uuid4().hex[:12]
    try:
        # after an interrupted cleanup the root already holds this pack's names: compare first
        listing = _list_inputs(inputs, ostore, options, session=session, mode=mode, first_task=first_task,
                               storage_options=storage_options,
                               previous_names=prev_names if finished_fp is None else None)
        if finished_fp is not None and finished_fp != listing.fingerprint and prev_names is not None:
            _check_names_against(ostore, listing, first_task, prev_names)
    except BaseException:
        ostore.delete(_lists_prefix(session) if journal is not None or finished_fp is not None else ".qpyr")
        raise
    fresh = True
    if journal is not None:
        if (journal["fingerprint"] == listing.fingerprint and journal["mode"] == mode
                and journal["base_generation"] == base_gen and journal["first_task"] == first_task):
            ostore.delete(_lists_prefix(listing.session))  # same inputs: the journal's lists stand
            listing.session = journal["lists"]
            for t in done:
                listing.mem.pop(t, None)
            fresh = False
        elif overwrite:
            if append:
                _rollback(ostore, previous.manifest if previous is not None else None, keep=_lists_prefix(listing.session))
            else:
                _rollback(ostore, None, keep=_lists_prefix(listing.session))
            done = set()
        else:
            ostore.delete(_lists_prefix(listing.session))
            what = "append" if journal["mode"] == "append" else "pack"
            raise StoreExistsError(
                f"{url!r} holds an unfinished {what} of other inputs; re-run that {what} to complete it, or pass "
                f"--overwrite (overwrite=True) to {'abandon it' if append else 'replace the store'}.")
    elif finished_fp is not None:
        if finished_fp == listing.fingerprint:  # this very pack had committed: nothing left to do
            ostore.delete(".qpyr")
            return root.manifest  # type: ignore[no-any-return]
        if not append and not overwrite:
            ostore.delete(".qpyr")
            raise StoreExistsError(f"{url!r} already holds a qpyr store; pass --overwrite (overwrite=True) to replace it.")
    if fresh and not append and (has_root or _foreign_content(ostore)):
        _rollback(ostore, None, keep=_lists_prefix(listing.session))  # overwrite=True: replace the store
    if fresh:
        journal = {"fingerprint": listing.fingerprint, "mode": mode, "lists": listing.session,
                   "first_task": first_task, "tasks": listing.tasks, "items": listing.items,
                   "base_generation": base_gen, "slots_per_task": options.slots_per_task,
                   "format_version": FORMAT_VERSION}
        ostore.write(JOURNAL, json.dumps(journal).encode())
    task_ids = range(first_task, first_task + listing.tasks)
    todo = [t for t in task_ids if t not in done]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=listing.items, unit="img", desc="packing",
                   initial=listing.items - sum(min(options.slots_per_task, listing.items - (t - first_task) * options.slots_per_task) for t in todo))
    try:
        _run_tasks(url, ostore, todo, listing, options, storage_options, client, bar)
        manifest = commit(ostore, options, task_ids, previous=previous)
        _finish(ostore, manifest)
        return manifest
    except QpyrError as e:
        if not isinstance(e, StorageError):  # a bad input: leave the store as it was before this call
            if previous is None:
                ostore.clear()
            else:
                _rollback(ostore, previous.manifest)
        raise
    finally:
        if bar is not None:
            bar.close()


__all__ += ["DEFAULT_SLOTS_PER_TASK", "StoredType"]
