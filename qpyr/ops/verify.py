"""``verify``: check every checksum, the manifest against the objects, and every item's chunks.

Streams bucket by bucket and shard by shard: memory is one shard, the store listing (one entry
per object) and the open store's catalog — never the items' pixels. Every problem names the
item (and level, chunk and object) it affects; ``decode=True`` also decodes every item's
levels, a batch of one bucket's items at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qpyr.codecs.encoding import Encoding
from qpyr.errors import QpyrError
from qpyr.format import heap
from qpyr.format import manifest as fmt
from qpyr.format.documents import records_doc
from qpyr.format.layout import BucketSpec
from qpyr.format.record import RecordShape
from qpyr.format.shard import MISSING, crc32c, index_nbytes, parse_index
from qpyr.read import snapshot
from qpyr.read.store import Store, open_store

__all__ = ["VerifyReport", "verify"]

#: Items decoded per batch by ``verify(decode=True)``.
_DECODE_BATCH = 64
#: Item names listed in one problem line before "... and N more".
_SHOW = 5


@dataclass
class VerifyReport:
    """Result of :func:`verify`: ``ok`` is True only when ``problems`` is empty.

    ``corrupt`` names every item some problem affects (in store order); ``warnings`` are
    notes that do not fail verification (e.g. an append in progress).
    """

    items: int = 0
    shards: int = 0
    chunks: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Checker:
    def __init__(self, store: Store, rep: VerifyReport):
        self.st = store
        self.rep = rep
        self._bad: set[int] = set()

    def names(self, idx: Any) -> str:
        idx = [int(i) for i in idx]
        shown = ", ".join(repr(self.st.catalog.names[i]) for i in idx[:_SHOW])
        return shown + (f" and {len(idx) - _SHOW} more" if len(idx) > _SHOW else "")

    def problem(self, msg: str, items: Any = ()) -> None:
        self.rep.problems.append(msg)
        for i in items:
            self._bad.add(int(i))

    def finish(self) -> None:
        self.rep.corrupt = [self.st.catalog.names[i] for i in sorted(self._bad)]


def _expected_docs(b: dict[str, Any], encodings: dict[str, Any]) -> dict[str, Any]:
    from qpyr.format.documents import bucket_docs

    return {k: json.loads(v) for k, v in bucket_docs(b, b["slots"], encodings).items()}


def verify(store: Store, *, decode: bool = False, on_progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check ``store`` end to end; see :class:`VerifyReport`.

    Checks: the manifest's item counts against the catalog; ``total_bytes`` and every
    bucket's and level's ``stored_bytes`` against the objects; every array document against
    the manifest; every shard index and chunk crc32c; that every item has every chunk of its
    extent and its quantization parameters; that no two items share a slot. ``on_progress``
    is called with 1 per shard checked. ``decode=True`` also decodes every level of every item.
    A ``store`` opened before an append that has since committed is verified as the store is
    now (a warning names both generations).
    """
    stale = _newer_snapshot(store)
    if stale is not None:
        old_gen = store.manifest["generation"]
        store = stale
    rep = VerifyReport(items=len(store))
    if stale is not None:
        rep.warnings.append(f"the store was appended to after it was opened (generation {old_gen}); verified the "
                            f"current snapshot, generation {store.manifest['generation']}")
    ck = _Checker(store, rep)
    os_ = store.object_store
    m = store.manifest
    busy = os_.exists(".qpyr/pack.json")
    if busy:
        rep.warnings.append("the store holds an unfinished pack or append (.qpyr/pack.json); objects it has written "
                            "so far are not part of this snapshot and are not checked")
    for li in range(m["levels"]):
        n_level = int((store.catalog.levels[li][:, 0] >= 0).sum())
        expect = m["level_summary"][li]["items"]
        if expect != n_level:
            ck.problem(f"level {li}: manifest says {expect} items, catalog holds {n_level}")

    # one listing: sizes for the byte totals, and every bucket's objects
    sizes = {k: v for k, v in os_.list_sizes().items() if not k.startswith(".qpyr/")}
    cat = fmt.catalog_path(m["generation"])
    by_bucket: dict[str, dict[str, int]] = {}
    by_level: dict[str, int] = {}
    total = 0
    for k, v in sizes.items():
        parts = k.split("/")
        if parts[0] == "catalog" and k != "catalog/zarr.json" and m["generation"] > 1 and not k.startswith(cat + "/"):
            if not busy:
                ck.problem(f"{k}: object of another catalog generation (not generation {m['generation']})")
            continue
        total += v
        if parts[0] == "levels" and len(parts) > 2:
            by_level[parts[1]] = by_level.get(parts[1], 0) + v
            if len(parts) > 4:
                by_bucket.setdefault("/".join(parts[:4]), {})[k] = v
    if not busy:
        if total != store.total_bytes:
            ck.problem(f"store holds {total} bytes; manifest total_bytes says {store.total_bytes}")
        for ls in m["level_summary"]:
            got = by_level.get(str(ls["level"]), 0)
            if got != ls["stored_bytes"]:
                ck.problem(f"level {ls['level']}: objects hold {got} bytes; manifest stored_bytes says {ls['stored_bytes']}")

    if fmt.major_version(m) >= 2:
        for li in range(m["levels"]):
            _check_records(ck, li, sizes, busy, on_progress)
    else:
        for bi, bd in enumerate(m["buckets"]):
            _check_bucket(ck, bi, bd, by_bucket.get(bd["path"], {}), busy, on_progress)

    if decode:
        _decode_all(ck)
    ck.finish()
    return rep


def _newer_snapshot(store: Store) -> Store | None:
    """The store as committed now, if a commit replaced the root since ``store`` was opened.

    The objects are checked against one listing of the store as it is: an open snapshot of an
    older generation would count the appended objects as unexpected.
    """
    from qpyr.io.storage import ObjectStore

    try:
        # a fresh connection: the open store's cached file handles still see replaced objects
        os_ = ObjectStore(store.object_store.url, store.object_store.storage_options)
        m = snapshot.parse_manifest(os_, snapshot.read_root(os_))
        if m["generation"] == store.manifest["generation"]:
            return None
        return open_store(os_)
    except QpyrError:  # no (readable) root now: verify the snapshot, which reports what is missing
        return None


def _check_bucket(ck: _Checker, bi: int, bd: dict[str, Any], objects: dict[str, int], busy: bool,
                  on_progress: Callable[[int], None] | None) -> None:
    st = ck.st
    os_ = st.object_store
    m = st.manifest
    spec = BucketSpec.from_dict(bd)
    path = spec.path
    if not busy:
        got = sum(objects.values())
        if got != bd.get("stored_bytes", got):
            ck.problem(f"bucket {path}: objects hold {got} bytes; manifest stored_bytes says {bd['stored_bytes']}")
    # array documents as the manifest implies them (stock Zarr readers depend on them)
    for key, want in _expected_docs(bd, m["encodings"]).items():
        try:
            doc = json.loads(os_.read(key))
        except FileNotFoundError:
            ck.problem(f"bucket {path}: {key[len(path) + 1:]} is missing")
            continue
        except ValueError as e:
            ck.problem(f"bucket {path}: {key[len(path) + 1:]} is malformed ({e})")
            continue
        if busy and isinstance(doc, dict) and isinstance(doc.get("shape"), list) and doc["shape"]:
            doc = dict(doc, shape=[want["shape"][0], *doc["shape"][1:]])  # an append may have grown it
        if doc != want:
            ck.problem(f"bucket {path}: {key[len(path) + 1:]} disagrees with the manifest")
    # the bucket's items, by slot
    tab = st.catalog.levels[spec.level]
    items = np.nonzero(tab[:, 0] == bi)[0]
    order = np.argsort(tab[items, 1], kind="stable")
    items = items[order]
    slots = tab[items, 1]
    hw = tab[items, 2:4]
    dup = np.nonzero(slots[1:] == slots[:-1])[0]
    for j in dup:
        ck.problem(f"items {st.catalog.names[int(items[j])]!r} and {st.catalog.names[int(items[j + 1])]!r} share slot "
                   f"{int(slots[j])} of {path}", [items[j], items[j + 1]])
    k, ny, nx = spec.chunks_per_shard
    th, tw = spec.chunk_hw
    gy_n, gx_n = spec.shard_grid_hw
    n_inner = spec.n_inner
    rows_used = np.unique(slots // k)
    data_prefix = f"{path}/data/c/"
    found: dict[int, list[str]] = {}
    for key in objects:
        if not key.startswith(data_prefix):
            continue
        rel = key[len(data_prefix):].split("/")
        try:
            r, z, gy, gx = (int(x) for x in rel)
            if z != 0 or not (0 <= gy < gy_n and 0 <= gx < gx_n) or r < 0:
                raise ValueError
        except ValueError:
            if not busy:
                ck.problem(f"{key}: unexpected object in a data array")
            continue
        if r * k >= bd["slots"]:
            if not busy:
                ck.problem(f"{key}: shard beyond the bucket's {bd['slots']} slots")
            continue
        found.setdefault(r, []).append(key)
    what = f"level {spec.level}"
    for r in sorted(set(found) | {int(x) for x in rows_used}):
        lo, hi = np.searchsorted(slots, [r * k, (r + 1) * k])
        row_items, row_slots, row_hw = items[lo:hi], slots[lo:hi], hw[lo:hi]
        for gy in range(gy_n):
            for gx in range(gx_n):
                key = f"{data_prefix}{r}/0/{gy}/{gx}"
                # chunks this shard must hold: tiles of each item that fall in grid cell (gy, gx)
                need: dict[int, tuple[int, int, int]] = {}
                for i, s, (h, w) in zip(row_items.tolist(), row_slots.tolist(), row_hw.tolist(), strict=True):
                    for ty in range(gy * ny, min(-(-h // th), (gy + 1) * ny)):
                        for tx in range(gx * nx, min(-(-w // tw), (gx + 1) * nx)):
                            need[((s % k) * ny + ty % ny) * nx + tx % nx] = (i, ty, tx)
                if key not in objects:
                    if need:
                        owners = sorted({i for i, _, _ in need.values()})
                        ck.problem(f"item(s) {ck.names(owners)} {what}: shard {key} is missing", owners)
                    continue
                _check_shard(ck, key, n_inner, k, r, need, row_items, what)
                if on_progress:
                    on_progress(1)
        if bd.get("params_shape") and len(row_items):
            pkey = f"{path}/qparams/c/{r}" + "/0" * len(bd["params_shape"])
            try:
                data = os_.read(pkey)
                fmt.decode_plain_chunk(data, (k, *bd["params_shape"]), np.dtype(np.float32), pkey)
            except FileNotFoundError:
                ck.problem(f"item(s) {ck.names(row_items)} {what}: quantization parameters {pkey} are missing", row_items)
            except QpyrError as e:
                ck.problem(f"item(s) {ck.names(row_items)} {what}: quantization parameters are corrupt ({e})", row_items)


def _check_records(ck: _Checker, li: int, sizes: dict[str, int], busy: bool,
                   on_progress: Callable[[int], None] | None) -> None:
    """Format 2.0, level ``li``: the record array's document, every shard object against the
    shard table (framing, size, no strays), and every record's bounds, header and tile crc32c."""
    st, m = ck.st, ck.st.manifest
    encs = {eid: Encoding.from_dict(e) for eid, e in m["encodings"].items()}
    os_ = st.object_store
    S, M = m["records"]["shard_bytes"], m["records"]["task_shards"]
    what = f"level {li}"
    prefix = f"levels/{li}/"
    try:
        doc = json.loads(os_.read(prefix + "zarr.json"))
        if doc != json.loads(records_doc(m["tasks"], S, M)) and not busy:
            ck.problem(f"{what}: {prefix}zarr.json disagrees with the manifest")
    except (FileNotFoundError, ValueError) as e:
        ck.problem(f"{what}: {prefix}zarr.json is missing or malformed ({type(e).__name__})")
    table = st.catalog.shards[li]
    listed = {f"{prefix}c/{t}/{j}": (t, j, u, o) for t, j, u, o in table.tolist()}
    for key in sizes:
        if key.startswith(prefix + "c/") and key not in listed and not busy:
            ck.problem(f"{key}: shard object that the shard table does not list")
    tab = st.catalog.levels[li]
    items = np.nonzero(tab[:, 0] >= 0)[0]
    items = items[np.lexsort((tab[items, 6], tab[items, 1]))]
    bsum: dict[int, int] = {}
    loaded: dict[tuple[int, int], Any] = {}
    prev_end: tuple[int, int] = (-1, 0)
    for i in items.tolist():
        bi, task, h, w, nbytes, _dec, off = (int(x) for x in tab[i])
        bsum[bi] = bsum.get(bi, 0) + nbytes
        name = st.catalog.names[i]
        if prev_end[0] == task and off < prev_end[1]:
            ck.problem(f"item {name!r} {what}: its record overlaps the previous record of task {task}", [i])
        prev_end = (task, off + nbytes)
        parts = []
        pcs = heap.pieces(off, nbytes, S)
        for k in [k for k in loaded if k[0] != task or (pcs and k[1] < pcs[0][0])]:
            del loaded[k]  # memory: the shards of the current record only
        for j, o0, o1 in pcs:
            key = f"{prefix}c/{task}/{j}"
            if (task, j) not in loaded:
                if key not in listed:
                    ck.problem(f"item {name!r} {what}: shard {key} is not in the shard table", [i])
                    break
                try:
                    loaded[(task, j)] = heap.parse_frame(os_.read(key), S, listed[key][2], key)
                    ck.rep.shards += 1
                    if on_progress:
                        on_progress(1)
                except FileNotFoundError:
                    ck.problem(f"item {name!r} {what}: shard {key} is missing", [i])
                    break
                except QpyrError as e:
                    ck.problem(f"item {name!r} {what}: shard {key} is unreadable ({e})", [i])
                    break
            parts.append(loaded[(task, j)][o0:o1])
        else:
            _check_record(ck, i, li, b"".join(parts), h, w, encs)
    for bi, bd in enumerate(m["buckets"]):
        if bd["level"] == li and bd.get("stored_bytes") != bsum.get(bi, 0):
            ck.problem(f"bucket {bd['path']}: records hold {bsum.get(bi, 0)} bytes; manifest stored_bytes says "
                       f"{bd.get('stored_bytes', 'nothing')}")


def _check_record(ck: _Checker, i: int, li: int, rec: bytes, h: int, w: int, encs: dict[str, Encoding]) -> None:
    """One record: its header (parameters, tile table, crc) and every tile's crc32c."""
    bd = ck.st.manifest["buckets"][int(ck.st.catalog.levels[li][i, 0])]
    th, tw = BucketSpec.for_record(bd, h, w).chunk_hw
    shape = RecordShape.of(encs[bd["encoding"]].quantizer, bd["channels"], h, w, (th, tw))
    n = shape.n_tiles
    name = ck.st.catalog.names[i]
    try:
        _params, offs = shape.parse_header(rec[:shape.header_nbytes], len(rec), f"item {name!r} level {li}")
    except QpyrError as e:
        ck.problem(str(e), [i])
        return
    mv = memoryview(rec)
    for k in range(n):
        a, z = int(offs[k]), int(offs[k + 1])
        ck.rep.chunks += 1
        if z - a < 4 or crc32c(mv[a:z - 4]) != int.from_bytes(mv[z - 4:z], "little"):
            ck.problem(f"item {name!r} level {li}: chunk {divmod(k, -(-w // tw))} fails its crc32c checksum", [i])


def _check_shard(ck: _Checker, key: str, n_inner: int, k: int, r: int, need: dict[int, tuple[int, int, int]],
                 row_items: np.ndarray, what: str) -> None:
    st, rep = ck.st, ck.rep
    data = st.object_store.read(key)
    rep.shards += 1
    try:
        idx = parse_index(data[-index_nbytes(n_inner):], n_inner, len(data), key)
    except QpyrError as e:
        owners = sorted({i for i, _, _ in need.values()}) or row_items.tolist()
        ck.problem(f"item(s) {ck.names(owners)} {what}: shard {key} is unreadable ({e})", owners)
        return
    mv = memoryview(data)
    for inner in np.nonzero(idx[:, 0] != MISSING)[0].tolist():
        off, nb = (int(x) for x in idx[inner])
        rep.chunks += 1
        body, stored = mv[off:off + nb - 4], int.from_bytes(mv[off + nb - 4:off + nb], "little")
        if crc32c(body) != stored:
            owner = need.get(inner)
            if owner is not None:
                i, ty, tx = owner
                ck.problem(f"item {st.catalog.names[i]!r} {what}: chunk ({ty}, {tx}) in {key} fails its crc32c checksum", [i])
            else:
                ck.problem(f"{key}: chunk {inner} (slot {r * k + inner // max(1, n_inner // k)}, no item) fails its crc32c checksum")
    for inner, (i, ty, tx) in need.items():
        if idx[inner, 0] == MISSING:
            ck.problem(f"item {st.catalog.names[i]!r} {what}: chunk ({ty}, {tx}) is missing from {key}", [i])


def _decode_all(ck: _Checker) -> None:
    """Decode every level of every item, one bucket's items (in slot order) a batch at a time;
    a batch that fails is decoded item by item to name the culprits."""
    st = ck.st
    batch_read = getattr(st, "read_batch", None)
    for li, tab in enumerate(st.catalog.levels):
        present = np.nonzero(tab[:, 0] >= 0)[0]
        order = np.lexsort((tab[present, 1], tab[present, 0]))
        todo = present[order].tolist()
        for s in range(0, len(todo), _DECODE_BATCH):
            chunk = todo[s:s + _DECODE_BATCH]
            if batch_read is not None:
                try:
                    batch_read(chunk, li)
                    continue
                except QpyrError:
                    pass
            for i in chunk:
                try:
                    st.read(i, [li])
                except QpyrError as e:
                    ck.problem(f"item {st.catalog.names[i]!r} level {li}: does not decode ({e})", [i])
