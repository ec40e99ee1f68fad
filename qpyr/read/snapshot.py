"""Opening a store snapshot: the root ``zarr.json`` (manifest) and the catalog, read and checked.

Every size and field of these documents is untrusted: the root is size-checked before it is
read, the manifest validated (:func:`qpyr.format.manifest.validate_manifest`), every catalog
chunk's size checked against one listing before it is read, and the catalog's columns
checked against the manifest's buckets. :func:`root_changed` tells a reader that lost a race
with an append commit (the previous generation's catalog removed after the new root was
written) to read the root again.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from qpyr.errors import CatalogChunkMissingError, FormatError, IncompleteStoreError, QpyrError
from qpyr.format import manifest as fmt
from qpyr.format.catalog import Catalog
from qpyr.io.storage import ObjectStore

__all__ = ["read_root", "root_changed", "parse_manifest", "read_catalog"]


def read_root(ostore: ObjectStore) -> bytes:
    """The bytes of the root ``zarr.json`` (size-checked before and after it is read)."""
    where = ostore.url
    limit = fmt.LIMITS["max_doc_bytes"]
    try:
        size = ostore.size("zarr.json")  # checked before reading: the root may be any size
        if size > limit:
            raise FormatError(f"{where}/zarr.json: {size} bytes exceeds the metadata limit max_doc_bytes ({limit}).")
        raw = ostore.read("zarr.json")
    except FileNotFoundError:
        if ostore.exists(".qpyr/pack.json"):
            raise IncompleteStoreError(
                f"{where}: the store is incomplete (a pack did not finish); re-run the same pack to complete it."
            ) from None
        raise FormatError(f"{where}: not a qpyr store (no zarr.json).") from None
    if len(raw) > limit:  # it grew between the two requests
        raise FormatError(f"{where}/zarr.json: more than {limit} bytes exceeds the metadata limit max_doc_bytes.")
    return raw


def root_changed(ostore: ObjectStore, raw: bytes) -> bool:
    """Whether the root ``zarr.json`` no longer holds ``raw`` (a commit replaced it)."""
    try:
        # a cached open file would still read the replaced object: open it afresh
        ostore.forget("zarr.json")
        return ostore.size("zarr.json") != len(raw) or ostore.read("zarr.json") != raw
    except (FileNotFoundError, QpyrError):
        return False


def parse_manifest(ostore: ObjectStore, raw: bytes) -> dict[str, Any]:
    """The checked manifest of root document ``raw`` of the store at ``ostore``."""
    where = ostore.url
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise FormatError(f"{where}/zarr.json: malformed JSON ({type(e).__name__}: {str(e)[:200]}).") from e
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
        raise FormatError(f"{where}/zarr.json: not a Zarr v3 group.")
    attrs = doc.get("attributes")
    if not isinstance(attrs, dict) or fmt.MANIFEST_KEY not in attrs:
        raise FormatError(f"{where}: a Zarr group without a qpyr manifest (root attribute 'qpyr').")
    return fmt.validate_manifest(attrs[fmt.MANIFEST_KEY], f"{where} manifest")


def _read_plain(ostore: ObjectStore, key: str, rows: int, chunk_rows: int, tail: tuple[int, ...], dtype: Any,
                sizes: dict[str, int] | None = None) -> np.ndarray:
    """Rows ``[0, rows)`` of a plain array chunked by ``chunk_rows``.

    Sizes are untrusted: with ``sizes`` (a listing of the catalog), a chunk object larger
    than the zstd bound of its raw size is refused before it is read, and only the used
    rows are ever decompressed (:func:`format.decode_plain_chunk`).
    """
    nchunks = -(-rows // chunk_rows) if rows else 0
    rest = "/0" * len(tail)
    dt = np.dtype(dtype)
    raw = chunk_rows * int(np.prod(tail, dtype=np.int64)) * dt.itemsize
    bound = raw + raw // 128 + 1024 + 4  # zstd's worst case expansion, plus the crc32c
    keys = [f"{key}/c/{i}{rest}" for i in range(nchunks)]
    if sizes is not None:
        for k in keys:
            if k not in sizes:
                raise CatalogChunkMissingError(f"{ostore.url}: catalog array {key} is missing chunk {k}.")
            if sizes[k] > bound:
                raise FormatError(f"{ostore.url}/{k}: chunk object of {sizes[k]} bytes is larger than any "
                                  f"encoding of its {raw} bytes.")
    try:
        chunks = ostore.read_many(keys)
    except FileNotFoundError as e:
        raise CatalogChunkMissingError(f"{ostore.url}: catalog array {key} is missing chunk {e.args[0] if e.args else ''}.") from None
    return fmt.decode_plain_array(chunks, rows, chunk_rows, tail, dt, f"{ostore.url}/{key}")


def read_catalog(ostore: ObjectStore, m: dict[str, Any]) -> Catalog:
    """Read and check the catalog of manifest ``m`` (at ``format.catalog_path(generation)``)."""
    n, cr = m["items"], m["catalog"]["chunk_rows"]
    nb = m["catalog"]["name_bytes"]
    base = fmt.catalog_path(m["generation"])
    where = ostore.url
    sizes = ostore.list_sizes(base)  # one listing: every chunk's size is checked before it is read
    blob = _read_plain(ostore, f"{base}/names", nb, 2**20, (), np.uint8, sizes).tobytes()
    offs = _read_plain(ostore, f"{base}/name_offsets", n + 1, cr, (), np.uint64, sizes).astype(np.int64)
    if offs[0] != 0 or offs[-1] != nb or (n and np.any(np.diff(offs) < 0)):
        raise FormatError(f"{where}: catalog name offsets are inconsistent.")
    try:
        names = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    except UnicodeDecodeError as e:
        raise FormatError(f"{where}: catalog names are not UTF-8 ({e}).") from e
    del blob
    if len(set(names)) != len(names):
        raise FormatError(f"{where}: duplicate item names in the catalog.")
    sources = _read_plain(ostore, f"{base}/sources", n, cr, (5,), np.int64, sizes)
    if n and ((sources[:, 0] < 0).any() or (sources[:, 0] >= len(fmt.DTYPE_CODES)).any()
              or (sources[:, 1] < 1).any() or (sources[:, 1] > fmt.LIMITS["max_channels"]).any()
              or (sources[:, 2:4] < 1).any() or (sources[:, 4] < 0).any() or (sources[:, 4] > m["levels"]).any()):
        raise FormatError(f"{where}: catalog sources hold unknown dtypes, bad shapes or level counts.")
    bk = m["buckets"]
    b_level = np.array([b["level"] for b in bk], np.int64)
    b_slots = np.array([b["slots"] for b in bk], np.int64)
    side = fmt.LIMITS["max_side"]  # 2.0 record classes bound h, w by the format's limit only
    b_hwc = np.array([[b.get("height", side), b.get("width", side), b["channels"]] for b in bk], np.int64).reshape(-1, 3)
    v2 = fmt.major_version(m) >= 2
    ncol = len(fmt.level_columns(m))
    levels, quality, shards = [], [], []
    for li in range(m["levels"]):
        tab = _read_plain(ostore, f"{base}/level_{li}", n, cr, (ncol,), np.int64, sizes)
        present = tab[:, 0] >= 0
        if not np.array_equal(present, sources[:, 4] > li) or (tab[~present] != -1).any():
            raise FormatError(f"{where}: catalog level {li} rows disagree with the items' level counts.")
        t = tab[present]
        if (t[:, 0] >= len(bk)).any():
            raise FormatError(f"{where}: catalog level {li} points at unknown buckets.")
        bi = t[:, 0]
        if ((t[:, 1] < 0) | (t[:, 2] < 1) | (t[:, 3] < 1) | (t[:, 4] < 0) | (t[:, 5] < 0)
                | (t[:, 5] >= len(fmt.DECISIONS))).any():
            raise FormatError(f"{where}: catalog level {li} holds negative extents or unknown decisions.")
        if ((b_level[bi] != li) | (t[:, 2] > b_hwc[bi, 0]) | (t[:, 3] > b_hwc[bi, 1])
                | (sources[present, 1] != b_hwc[bi, 2]) | (False if v2 else t[:, 1] >= b_slots[bi])).any():
            raise FormatError(f"{where}: catalog level {li} does not fit its buckets (level, slot, extent or channels).")
        if v2:
            st = _read_plain(ostore, f"{base}/shards_{li}", m["records"]["shards"][li], cr,
                             (len(fmt.SHARD_COLUMNS),), np.int64, sizes)
            _check_records(m, li, t, st, [names[int(k)] for k in np.flatnonzero(present)], f"{where}: level {li}")
            shards.append(st)
        levels.append(tab)
        quality.append(_read_plain(ostore, f"{base}/quality_{li}", n, cr, (2,), np.float32, sizes))
    return Catalog(names, sources, levels, quality, shards)


def _check_records(m: dict[str, Any], li: int, t: np.ndarray, st: np.ndarray, names: list[str], where: str) -> None:
    """Format 2.0: every record of level ``li`` (present rows ``t``, of items ``names``) lies
    inside shards that the level's shard table ``st`` lists, and the table itself is sorted and
    within the limits; errors name the level, the first offending item and the object."""
    S, M, tasks = m["records"]["shard_bytes"], m["records"]["task_shards"], m["tasks"]
    from qpyr.format.heap import frame_nbytes

    if len(st) and ((st[:, 0] < 0).any() or (st[:, 0] >= tasks).any() or (st[:, 1] < 0).any() or (st[:, 1] >= M).any()
                    or (st[:, 2] < 1).any() or (st[:, 2] > S).any()):
        raise FormatError(f"{where}: the shard table holds shards outside the store's tasks, shard numbers or size.")
    keys = st[:, 0] * M + st[:, 1]
    if len(keys) > 1 and (np.diff(keys) <= 0).any():
        raise FormatError(f"{where}: the shard table is not sorted by (task, shard) or repeats a shard.")
    if len(st) and any(int(o) != frame_nbytes(int(u), S) for u, o in st[:, 2:4].tolist()):
        raise FormatError(f"{where}: the shard table's object sizes disagree with its used bytes.")
    if not len(t):
        return
    task, nbytes, off = t[:, 1], t[:, 4], t[:, 6]
    bad = (task >= tasks) | (off < 0) | (nbytes < 4) | (off + nbytes > M * S)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(f"{where}: item {names[i]!r}: its record (task {int(task[i])}, offset {int(off[i])}, "
                          f"{int(nbytes[i])} bytes) lies outside the record array levels/{li} ({tasks} tasks of "
                          f"{M * S} bytes).")
    # the first and the last shard of every record must be listed, the last one used up to its end
    first, last = off // S, (off + nbytes - 1) // S
    for j, need in ((first, off % S + 1), (last, (off + nbytes - 1) % S + 1)):
        k = np.searchsorted(keys, task * M + j)
        ok = k < len(keys)
        ok[ok] = keys[k[ok]] == (task * M + j)[ok]
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise FormatError(f"{where}: item {names[i]!r}: its record points at shard "
                              f"levels/{li}/c/{int(task[i])}/{int(j[i])}, which the shard table does not list.")
        short = st[k, 2] < need
        if short.any():
            i = int(np.flatnonzero(short)[0])
            raise FormatError(f"{where}: item {names[i]!r}: its record runs past the used bytes of shard "
                              f"levels/{li}/c/{int(task[i])}/{int(j[i])}.")


#: Times :func:`read_snapshot` re-reads a root that changed under it (an append commit in between).
_OPEN_TRIES = 4


def read_snapshot(ostore: ObjectStore) -> tuple[dict[str, Any], Catalog]:
    """The checked manifest and catalog of the store's current generation.

    An append removes the previous generation's catalog right after it writes the new root; a
    reader that read the old root just before may then miss a catalog chunk. The root has
    changed in that case: read it again (a bounded number of times).
    """
    for attempt in range(_OPEN_TRIES):
        raw = read_root(ostore)
        m = parse_manifest(ostore, raw)
        try:
            return m, read_catalog(ostore, m)
        except CatalogChunkMissingError as e:
            if attempt + 1 < _OPEN_TRIES and root_changed(ostore, raw):
                continue
            raise FormatError(str(e)) from None
    raise AssertionError("unreachable")  # pragma: no cover
