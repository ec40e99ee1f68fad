"""The commit: receipts become a generation of the store, the root ``zarr.json`` written last.

:func:`commit` streams the catalog, writes the group and array documents, sizes the store and
writes the manifest **last**: a store without it is incomplete. :func:`finish` removes what the
committed generation no longer needs; :func:`rollback` removes what an unfinished or failed pack
added (spec/format.md §13.3, spec/scale.md).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from qpyr._version import FORMAT_VERSION, FORMAT_VERSION_1, FORMAT_VERSION_PLAN, __version__
from qpyr.errors import FormatError
from qpyr.format import manifest as fmt
from qpyr.format import plan as plan_mod
from qpyr.format.catalog import CatalogWriter
from qpyr.format.documents import bucket_docs, group_doc, records_doc
from qpyr.format.layout import BucketSpec
from qpyr.io.storage import ObjectStore
from qpyr.write.journal import JOURNAL, receipt_key
from qpyr.write.options import PackOptions

__all__ = ["commit", "finish", "rollback"]

_TMP = re.compile(r"\.tmp-[0-9a-f]{8}$")
#: Receipts fetched per request batch during the commit (concurrently on async backends).
_RECEIPT_BATCH = 32


def _receipt_block(r: dict[str, Any], bindex: dict[str, int], buckets: dict[str, dict[str, Any]],
                   columns: int) -> tuple[Any, ...]:
    """A receipt's items as a block of catalog rows: the arguments of :meth:`CatalogWriter.add`."""
    items = r["items"]
    m = len(items)
    nl = max((len(it["levels"]) for it in items), default=0)
    sources = np.zeros((m, 5), np.int64)
    tabs = [np.full((m, columns), -1, np.int64) for _ in range(nl)]
    quals = [np.full((m, 2), np.nan, np.float64) for _ in range(nl)]
    eids: list[list[str]] = [[] for _ in range(nl)]
    for i, it in enumerate(items):
        sources[i] = [fmt.DTYPE_CODES.index(it["dtype"]), *it["shape"], len(it["levels"])]
        for li, lv in enumerate(it["levels"]):
            dec = fmt.DECISIONS.index(lv.get("decision", "planned"))
            if columns == len(fmt.LEVEL_COLUMNS):
                tabs[li][i] = [bindex[lv["bucket"]], lv["slot"], lv["h"], lv["w"], lv["bytes"], dec]
            else:  # format 2.0: bucket, task, h, w, bytes, decision, offset
                tabs[li][i] = [bindex[lv["bucket"]], lv["task"], lv["h"], lv["w"], lv["bytes"], dec, lv["offset"]]
            psnr, ssim = lv["psnr"], lv["ssim"]
            # JSON has no infinity: a lossless level's PSNR (inf) is stored as null with SSIM 1
            quals[li][i] = [math.inf if psnr is None and ssim == 1.0 else (psnr if psnr is not None else math.nan),
                            ssim if ssim is not None else math.nan]
            eids[li].append(buckets[lv["bucket"]]["encoding"])
    return [it["name"] for it in items], sources, tabs, [q.astype(np.float32) for q in quals], eids, quals


def commit(ostore: ObjectStore, options: PackOptions, task_range: range, *, previous: Any = None) -> dict[str, Any]:
    """Turn the receipts of ``task_range`` into generation ``g`` of the store; returns the manifest.

    ``previous`` is the open :class:`~qpyr.read.store.Store` being appended to (its rows come first)
    or None. Steps (spec/format.md §13.3): write the catalog of generation ``g`` at
    ``format.catalog_path(g)`` — streamed, one chunk of rows in memory —, the group and array
    documents, list the store for sizes, then write the root ``zarr.json`` **last**. Idempotent:
    a killed commit is simply run again. Cleanup (old catalog, ``.qpyr/``) is :func:`finish`.

    Memory: one catalog chunk per array, the bucket and encoding tables, and the store listing
    (one entry per object, i.e. O(items / items-per-shard)).
    """
    pm = previous.manifest if previous is not None else None
    v2 = options.layout >= 2
    gen = (pm["generation"] if pm else 0) + 1
    base = fmt.catalog_path(gen)
    buckets: dict[str, dict[str, Any]] = {}
    encodings: dict[str, Any] = {}
    slots: dict[str, int] = {}
    record_bytes: dict[str, int] = {}  # format 2.0: Σ record bytes per bucket
    shard_rows: dict[int, list[list[int]]] = {}  # format 2.0: [task, shard, used, object] per level
    if pm is not None:
        encodings.update(pm["encodings"])
        for b in pm["buckets"]:
            buckets[b["path"]] = {k: v for k, v in b.items() if k not in ("slots", "stored_bytes")}
            slots[b["path"]] = b["slots"]
            record_bytes[b["path"]] = b.get("stored_bytes", 0)
        for li, t in enumerate(previous.catalog.shards if v2 else []):
            shard_rows[li] = t.tolist()
    # pass 1 over receipts: the bucket table (its sorted order is the catalog's bucket index)
    plan_stats: dict[str, Any] = plan_mod.merge(pm.get("plan") if pm else None, None)
    for r in _iter_receipts(ostore, task_range, fields=("buckets", "encodings", "plan_stats", "counts", "records")):
        plan_stats = plan_mod.merge(plan_stats, r["plan_stats"])
        for path, (n, nbytes) in (r["counts"] or {}).items():
            slots[path] = slots.get(path, 0) + n
            record_bytes[path] = record_bytes.get(path, 0) + nbytes
        for li, rec in (r["records"] or {}).items():
            shard_rows.setdefault(int(li), []).extend([r["task"], *row] for row in rec["shards"])
        encodings.update(r["encodings"])
        for path, b in r["buckets"].items():
            old = buckets.get(path)
            if old is not None and old != b:
                raise FormatError(f"Cannot commit: bucket {path} of task {r['task']} disagrees with the store "
                                  f"({old} vs {b}).")
            buckets[path] = b
            if not v2:
                slots[path] = max(slots.get(path, 0), (r["task"] + 1) * BucketSpec.from_dict(b).task_slots)
    bpaths = sorted(buckets)
    bindex = {p: i for i, p in enumerate(bpaths)}

    # pass 2: the catalog, streamed
    if gen == 1:
        ostore.delete("catalog")  # leftovers of a killed commit of this same pack
    else:
        ostore.delete(base)  # never read: the root that would name it is not written yet
    rows = fmt.CATALOG_CHUNK_ROWS
    columns = len(fmt.LEVEL_COLUMNS_2 if v2 else fmt.LEVEL_COLUMNS)
    cw = CatalogWriter(ostore, base, rows, columns)
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
        cw.add(*_receipt_block(r, bindex, buckets, columns))
    cw.close()
    shard_tables: list[np.ndarray] = []
    if v2:
        for li in range(len(cw.levels)):
            t = np.array(shard_rows.get(li, []), np.int64).reshape(-1, len(fmt.SHARD_COLUMNS))
            shard_tables.append(t[np.lexsort((t[:, 1], t[:, 0]))] if len(t) else t)
        cw.write_shards(shard_tables)

    # group and array documents
    written: set[str] = set()

    def group(path: str, attrs: dict[str, Any] | None = None) -> None:
        if path not in written:
            ostore.write(f"{path}/zarr.json", group_doc(attrs))
            written.add(path)

    group("catalog", {"qpyr": {"role": "catalog"}})
    group(base, {"qpyr": {"role": "catalog"}})
    group("levels")
    bucket_list = []
    for li in range(len(shard_tables)):  # 2.0: each level is its record array
        ostore.write(f"levels/{li}/zarr.json", records_doc(task_range.stop, options.shard_bytes, fmt.TASK_SHARDS))
    for p in bpaths:
        b = buckets[p]
        if v2:  # a record class: no objects of its own
            bucket_list.append(dict(b, slots=slots.get(p, 0), stored_bytes=record_bytes.get(p, 0)))
            continue
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
            if len(parts) > 4 and not v2:  # 1.x bucket objects (2.0 classes own none)
                bp = "/".join(parts[:4])
                by_bucket[bp] = by_bucket.get(bp, 0) + v
    for bd in bucket_list:
        if not v2:
            bd["stored_bytes"] = by_bucket.get(bd["path"], 0)
    level_summary = cw.level_summary(by_level)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION if v2 else FORMAT_VERSION_1,
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
    if v2:
        manifest["records"] = {"shard_bytes": options.shard_bytes, "task_shards": fmt.TASK_SHARDS,
                               "shards": [len(t) for t in shard_tables]}
    plan = plan_mod.build_plan(options.make_policy(), plan_stats)
    if plan is not None:  # optional field (format 1.1): 1.0 readers ignore it
        manifest["plan"] = plan
        manifest["optional"] = ["plan"]
    if not v2 and (plan is not None or any((e.get("codec") or {}).get("configuration", {}).get("entropy") == "jfif"
                                           for e in encodings.values())):
        manifest["format_version"] = FORMAT_VERSION_PLAN  # plan, qpyr.tiles and entropy "jfif" are 1.1 additions
    doc = b""
    for _ in range(3):  # the root document counts itself; iterate to a fixed point
        manifest["total_bytes"] = total + len(doc)
        doc = group_doc({fmt.MANIFEST_KEY: manifest})
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


def finish(ostore: ObjectStore, manifest: dict[str, Any]) -> None:
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


def rollback(ostore: ObjectStore, m: dict[str, Any] | None, keep: str | None = None) -> None:
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
    if fmt.major_version(m) >= 2:
        _rollback_records(ostore, m, keep)
        return
    rows: dict[str, int] = {}
    groups = {"levels/zarr.json", "catalog/zarr.json", "zarr.json"}
    for b in m["buckets"]:
        spec = BucketSpec.from_dict(b)
        rows[b["path"]] = -(-b["slots"] // spec.items_per_shard)
        groups |= {f"levels/{spec.level}/zarr.json", f"levels/{spec.level}/{spec.encoding_id}/zarr.json"}

    def stale(k: str, parts: list[str]) -> bool:  # a 1.x object under levels/ that m does not reference
        if k in groups:
            return False
        bp = "/".join(parts[:4])
        if bp not in rows or len(parts) < 5:
            return True
        return (parts[4] in ("data", "qparams") and len(parts) > 6 and parts[5] == "c"
                and (not parts[6].isdigit() or int(parts[6]) >= rows[bp]))

    _sweep(ostore, m, keep, stale)
    for b in m["buckets"]:
        for key, doc in bucket_docs(b, b["slots"], m["encodings"]).items():
            try:
                cur = json.loads(ostore.read(key))
            except (FileNotFoundError, ValueError):
                cur = None
            if cur is None or cur.get("shape", [None])[0] != b["slots"]:
                ostore.write(key, doc)


def _sweep(ostore: ObjectStore, m: dict[str, Any], keep: str | None, stale: Callable[[str, list[str]], bool]) -> None:
    """Delete what a rollback to ``m`` removes: ``.qpyr/`` (but ``keep``), temporary files, other
    catalog generations, and the objects under ``levels/`` that ``stale(key, parts)`` names."""
    cat = fmt.catalog_path(m["generation"]) + "/"
    for k in list(ostore.list_sizes()):
        parts = k.split("/")
        if k in ("zarr.json", "catalog/zarr.json", "levels/zarr.json") or (keep and k.startswith(keep + "/")):
            continue
        if parts[0] == ".qpyr" or _TMP.search(k):
            ostore.delete(k)
        elif parts[0] == "catalog":
            if not (m["generation"] == 1 or k.startswith(cat)):
                ostore.delete(k)
        elif parts[0] == "levels" and stale(k, parts):
            ostore.delete(k)


def _rollback_records(ostore: ObjectStore, m: dict[str, Any], keep: str | None) -> None:
    """:func:`rollback` of a format-2.0 store: shards of tasks ``>= m["tasks"]`` and levels
    ``>= m["levels"]`` go, the record arrays' documents get ``m``'s task count back."""
    levels = {str(li) for li in range(m["levels"])}

    def stale(k: str, parts: list[str]) -> bool:
        if len(parts) < 3 or parts[1] not in levels:
            return True
        if k == f"levels/{parts[1]}/zarr.json":
            return False
        return not (len(parts) == 5 and parts[2] == "c" and parts[3].isdigit() and int(parts[3]) < m["tasks"])

    _sweep(ostore, m, keep, stale)
    r = m["records"]
    for li in range(m["levels"]):
        ostore.write(f"levels/{li}/zarr.json", records_doc(m["tasks"], r["shard_bytes"], r["task_shards"]))
