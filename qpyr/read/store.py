"""The reader: open a store, plan reads from the manifest, fetch only what is asked, decode.

Opening reads the root ``zarr.json`` (manifest) and the catalog once. A read is planned from
the catalog alone (which bucket, slot and tiles hold the item's level or region; ``levels="auto"``
picks a level by size or byte budget the same way) and then runs in two halves:

* :meth:`Store.fetch` — I/O and entropy decoding on the CPU: the shard indexes not yet cached
  (fetched together, cached per store), then every chunk's byte range in one batch, adjacent
  ranges coalesced (s3fs runs the batch concurrently), crc32c-checked and decoded by the chunk
  codec into a :class:`~qpyr.payload.LevelPayload` of stored samples (or split-codec
  coefficients);
* :meth:`LevelPayload.decode` — transfer and arithmetic as torch ops on the target device.

``read`` / ``read_batch`` are the two halves back to back. zarr-python is not on this path: it
costs milliseconds per chunk read, the items of a coarse level take microseconds.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from qpyr.codecs import BloscCodec, ZstdCodec
from qpyr.codecs.encoding import Encoding
from qpyr.codecs.quant import Granularity, value_scale_for
from qpyr.errors import (
    BudgetError,
    CatalogChunkMissingError,
    ChecksumError,
    FormatError,
    IncompleteStoreError,
    InputError,
    ItemNotFoundError,
    QpyrError,
)
from qpyr.format import manifest as fmt
from qpyr.format.catalog import Catalog
from qpyr.format.layout import BucketSpec
from qpyr.format.shard import crc32c, index_nbytes, parse_index
from qpyr.io.storage import ObjectStore
from qpyr.read.payload import LevelPayload, StoredLevel, decode_payloads, reconstruct_tile, split_codec, torch_dtype

_CPU = torch.device("cpu")

__all__ = ["Store", "open_store", "BudgetError", "LevelPayload", "StoredLevel"]

#: Shard indexes kept per open store (a 256-item shard's index is 4 KiB).
_INDEX_CACHE = 4096
#: Parameter chunks (one per shard row) kept per open store.
_PARAM_CACHE = 256
_MISSING = 2**64 - 1


def _buffer_crc() -> Callable[[Any], int] | None:
    """crc32c over any buffer (the optional ``crc32c`` package): chunks are then checked in
    place, not copied first. google-crc32c (a dependency) needs bytes."""
    try:
        import crc32c
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    fn: Callable[[Any], int] = crc32c.crc32c
    return fn


_crc_buffer = _buffer_crc()
#: Normalization factor by source dtype code (catalog ``sources`` column 0).
_VALUE_SCALES = [value_scale_for(np.dtype(n)) for n in fmt.DTYPE_CODES]


#: Times ``Store._open`` re-reads a root that changed under it (an append commit in between).
_OPEN_TRIES = 4


#: An encoded chunk is at most this many times its raw size (+ 64 KiB): zstd and blosc add
#: < 1 %, JPEG-LS on noise < 5x (the lossless codec's own output bound), DCT entropy coding < 2x.
_CHUNK_EXPANSION = 8


class _Bucket:
    def __init__(self, d: dict[str, Any], enc: Encoding):
        self.spec = BucketSpec.from_dict(d)
        self.slots = int(d["slots"])
        self.dtype = np.dtype(d["dtype"]).newbyteorder("<") if np.dtype(d["dtype"]).itemsize > 1 else np.dtype(d["dtype"])
        self.enc = enc
        ps = d.get("params_shape")
        self.params_shape: tuple[int, ...] | None = tuple(int(x) for x in ps) if ps else None
        self.stored_bytes = int(d.get("stored_bytes", 0))
        # Read-path constants, computed once (the hot path must not re-derive them per call).
        s = self.spec
        self.th, self.tw = s.chunk_hw
        self.tws = s.stored_chunk_w
        self.k, self.ny, self.nx = s.chunks_per_shard
        self.n_inner = self.k * self.ny * self.nx
        self.index_nbytes = index_nbytes(self.n_inner)
        # Largest byte range one chunk may claim (spec/scale.md §9), checked before it is
        # fetched: a hostile shard index must not make the reader allocate gigabytes.
        self.max_chunk_nbytes = _CHUNK_EXPANSION * s.channels * self.th * self.tws * self.dtype.itemsize + 2**16
        self.data_prefix = f"{s.path}/data/c/"
        self.chunk_shape = (1, s.channels, self.th, self.tws)
        self.torch_dtype = torch_dtype(self.dtype)
        self.dtype_name = self.dtype.name
        self.split: Any = None if s.packed else split_codec(enc.codec)
        # codecs known to decode from any buffer (a memoryview into the fetched range)
        self.takes_buffer = isinstance(enc.codec, (ZstdCodec, BloscCodec))
        self.pruned = enc.codec.name == "qpyr.tiles"  # may decode NaN tiles for the reader to fill
        self._params_suffix = "/0" * len(self.params_shape or ())

    def params_key(self, slot: int) -> str:
        return f"{self.spec.path}/qparams/c/{slot // self.k}{self._params_suffix}"


class Store:
    """An open qpyr store (a snapshot: later appends are seen only after reopening).

    ``len(store)`` items; ``store.names`` their names; ``store.manifest`` the manifest dict;
    ``store.read(...)`` decodes levels to tensors.
    """

    def __init__(self, ostore: ObjectStore, manifest: dict[str, Any], catalog: Catalog):
        self._os = ostore
        self.manifest = manifest
        self.url = ostore.url
        self.catalog = catalog
        self._encodings = {k: Encoding.from_dict(v) for k, v in manifest["encodings"].items()}
        self._buckets = [_Bucket(b, self._encodings[b["encoding"]]) for b in manifest["buckets"]]
        self._shard_index: OrderedDict[str, list[list[int]]] = OrderedDict()
        self._param_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------------ open
    @classmethod
    def _open(cls, ostore: ObjectStore) -> Store:
        # An append removes the previous generation's catalog right after it writes the new
        # root; a reader that read the old root just before may then miss a catalog chunk.
        # The root has changed in that case: read it again (a bounded number of times).
        for attempt in range(_OPEN_TRIES):
            raw = cls._read_root(ostore)
            m = cls._manifest(ostore, raw)
            try:
                catalog = cls._read_catalog(ostore, m)
            except CatalogChunkMissingError as e:
                if attempt + 1 < _OPEN_TRIES and cls._root_changed(ostore, raw):
                    continue
                raise FormatError(str(e)) from None
            return cls(ostore, m, catalog)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _read_root(ostore: ObjectStore) -> bytes:
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

    @staticmethod
    def _root_changed(ostore: ObjectStore, raw: bytes) -> bool:
        try:
            # a cached open file would still read the replaced object: open it afresh
            ostore._forget(ostore.path("zarr.json"))
            return ostore.size("zarr.json") != len(raw) or ostore.read("zarr.json") != raw
        except (FileNotFoundError, QpyrError):
            return False

    @staticmethod
    def _manifest(ostore: ObjectStore, raw: bytes) -> dict[str, Any]:
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

    @staticmethod
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

    @classmethod
    def _read_catalog(cls, ostore: ObjectStore, m: dict[str, Any]) -> Catalog:
        """Read and check the catalog of manifest ``m`` (at ``format.catalog_path(generation)``)."""
        n, cr = m["items"], m["catalog"]["chunk_rows"]
        nb = m["catalog"]["name_bytes"]
        base = fmt.catalog_path(m["generation"])
        where = ostore.url
        sizes = ostore.list_sizes(base)  # one listing: every chunk's size is checked before it is read
        blob = cls._read_plain(ostore, f"{base}/names", nb, 2**20, (), np.uint8, sizes).tobytes()
        offs = cls._read_plain(ostore, f"{base}/name_offsets", n + 1, cr, (), np.uint64, sizes).astype(np.int64)
        if offs[0] != 0 or offs[-1] != nb or (n and np.any(np.diff(offs) < 0)):
            raise FormatError(f"{where}: catalog name offsets are inconsistent.")
        try:
            names = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
        except UnicodeDecodeError as e:
            raise FormatError(f"{where}: catalog names are not UTF-8 ({e}).") from e
        del blob
        if len(set(names)) != len(names):
            raise FormatError(f"{where}: duplicate item names in the catalog.")
        sources = cls._read_plain(ostore, f"{base}/sources", n, cr, (5,), np.int64, sizes)
        if n and ((sources[:, 0] < 0).any() or (sources[:, 0] >= len(fmt.DTYPE_CODES)).any()
                  or (sources[:, 1] < 1).any() or (sources[:, 1] > fmt.LIMITS["max_channels"]).any()
                  or (sources[:, 2:4] < 1).any() or (sources[:, 4] < 0).any() or (sources[:, 4] > m["levels"]).any()):
            raise FormatError(f"{where}: catalog sources hold unknown dtypes, bad shapes or level counts.")
        bk = m["buckets"]
        b_level = np.array([b["level"] for b in bk], np.int64)
        b_slots = np.array([b["slots"] for b in bk], np.int64)
        b_hwc = np.array([[b["height"], b["width"], b["channels"]] for b in bk], np.int64).reshape(-1, 3)
        levels, quality = [], []
        for li in range(m["levels"]):
            tab = cls._read_plain(ostore, f"{base}/level_{li}", n, cr, (len(fmt.LEVEL_COLUMNS),), np.int64, sizes)
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
            if ((b_level[bi] != li) | (t[:, 1] >= b_slots[bi]) | (t[:, 2] > b_hwc[bi, 0]) | (t[:, 3] > b_hwc[bi, 1])
                    | (sources[present, 1] != b_hwc[bi, 2])).any():
                raise FormatError(f"{where}: catalog level {li} does not fit its buckets (level, slot, extent or channels).")
            levels.append(tab)
            quality.append(cls._read_plain(ostore, f"{base}/quality_{li}", n, cr, (2,), np.float32, sizes))
        return Catalog(names, sources, levels, quality)

    # ------------------------------------------------------------------ catalog API
    def __len__(self) -> int:
        return len(self.catalog.names)

    def __repr__(self) -> str:
        return f"Store({self.url!r}, items={len(self)}, levels={self.manifest['levels']})"

    @property
    def names(self) -> list[str]:
        return list(self.catalog.names)

    @property
    def total_bytes(self) -> int:
        return int(self.manifest["total_bytes"])

    def io_stats(self) -> dict[str, int]:
        """``{"bytes_read", "requests"}`` since open or :meth:`reset_io_stats`."""
        return self._os.io_stats()

    def reset_io_stats(self) -> None:
        self._os.reset_io_stats()

    @property
    def object_store(self) -> ObjectStore:
        """The byte store the store's objects are read from."""
        return self._os

    def item_index(self, item: int | str) -> int:
        """The item number of ``item`` (a name, or an index that may be negative)."""
        if isinstance(item, str):
            if item not in self.catalog.index:
                raise ItemNotFoundError(f"No item named {item!r} in {self.url}.")
            return self.catalog.index[item]
        i = int(item)
        if not -len(self) <= i < len(self):
            raise ItemNotFoundError(f"Item index {item} out of range (store has {len(self)} items).")
        return i % len(self)

    def item_levels(self, item: int | str) -> int:
        return int(self.catalog.sources[self.item_index(item), 4])

    def item_info(self, item: int | str) -> dict[str, Any]:
        """Name, source dtype/shape and per-level shape/encoding/bytes/quality of one item."""
        i = self.item_index(item)
        code, c, h, w, nl = (int(x) for x in self.catalog.sources[i])
        levels = []
        for li in range(nl):
            bi, slot, lh, lw, nbytes, dec = (int(x) for x in self.catalog.levels[li][i])
            b = self._buckets[bi]
            p, s = (float(x) for x in self.catalog.quality[li][i])
            levels.append({
                "level": li, "shape": [c, lh, lw], "dtype": b.enc.quantizer.dtype.value if not b.enc.quantizer.is_lossless else fmt.DTYPE_CODES[code],
                "encoding": b.enc.label, "encoding_id": b.spec.encoding_id, "bucket": b.spec.path, "slot": slot,
                "stored_bytes": nbytes, "psnr": p, "ssim": s, "decision": fmt.DECISIONS[dec],
            })
        return {"name": self.catalog.names[i], "dtype": fmt.DTYPE_CODES[code], "shape": [c, h, w], "levels": levels}

    # ------------------------------------------------------------------ level choice
    def level_shapes(self, level: int) -> np.ndarray:
        """``int64 [N, 2]`` of every item's ``(h, w)`` at ``level`` (-1 where an item has fewer
        levels), from the catalog: no I/O. For samplers that bucket by size or aspect ratio."""
        if not 0 <= level < len(self.catalog.levels):
            raise ItemNotFoundError(f"The store has levels 0..{len(self.catalog.levels) - 1}; level {level} was asked for.")
        tab = self.catalog.levels[level]
        out = tab[:, 2:4].copy()
        out[tab[:, 0] < 0] = -1
        return out

    def shard_ids(self, level: int) -> np.ndarray:
        """``int64 [N]``: for each item, an id of the shard row holding its ``level`` (items with
        equal ids are read from the same shard objects; -1 where an item lacks the level). From
        the catalog: no I/O. Used for shard-aware shuffling."""
        if not 0 <= level < len(self.catalog.levels):
            raise ItemNotFoundError(f"The store has levels 0..{len(self.catalog.levels) - 1}; level {level} was asked for.")
        tab = self.catalog.levels[level]
        ks = np.array([b.k for b in self._buckets] + [1], np.int64)
        bi = tab[:, 0]
        out = np.full(len(tab), -1, np.int64)
        ok = bi >= 0
        out[ok] = bi[ok] * 2**40 + tab[ok, 1] // ks[bi[ok]]
        return out

    def pick_level(self, item: int | str, *, max_bytes: int | None = None, target_size: int | None = None,
                   region: tuple[int, int, int, int] | None = None) -> int:
        """The level ``levels="auto"`` reads, chosen from the catalog before fetching anything.

        ``target_size``: the coarsest level whose short side is still >= ``target_size`` (level
        0 if even level 0 is smaller). ``max_bytes``: the finest level (no finer than the
        ``target_size`` choice) whose stored bytes fit; for a ``region`` the bytes of the chunks
        it intersects are estimated pro rata. Raises :class:`BudgetError` when no level fits.
        """
        if max_bytes is None and target_size is None:
            raise InputError('levels="auto" needs max_bytes= or target_size=.')
        i = self.item_index(item)
        nl = int(self.catalog.sources[i, 4])
        start = 0
        if target_size is not None:
            if int(target_size) < 1:
                raise InputError(f"Expected a positive target_size. Got {target_size}.")
            for li in range(nl):
                h, w = self.catalog.levels[li][i, 2:4].tolist()
                if min(h, w) >= target_size:
                    start = li
        if max_bytes is None:
            return start
        for li in range(start, nl):
            est = self._level_bytes(i, li, region)
            if est <= max_bytes:
                return li
        smallest = self._level_bytes(i, nl - 1, region)
        raise BudgetError(f"Item {self.catalog.names[i]!r}: no level fits max_bytes={max_bytes} "
                          f"(the coarsest, level {nl - 1}, stores {smallest} bytes).")

    def _level_bytes(self, i: int, li: int, region: tuple[int, int, int, int] | None) -> int:
        bi, _slot, h, w, nbytes = self.catalog.levels[li][i, :5].tolist()
        if region is None:
            return int(nbytes)
        b = self._buckets[bi]
        y0, x0, y1, x1 = self._window(i, li, h, w, region)
        ny, nx = -(-h // b.th), -(-w // b.tw)
        ty = -(-y1 // b.th) - y0 // b.th
        tx = -(-x1 // b.tw) - x0 // b.tw
        return int(math.ceil(nbytes * (ty * tx) / (ny * nx)))

    def _levels_arg(self, i: int, levels: Any, max_bytes: int | None, target_size: int | None,
                    region: tuple[int, int, int, int] | None) -> list[int]:
        nl = int(self.catalog.sources[i, 4])
        if levels is None:
            out = list(range(nl))
        elif isinstance(levels, str):
            if levels != "auto":
                raise InputError(f'Expected levels as int, list of ints, None or "auto". Got {levels!r}.')
            return [self.pick_level(i, max_bytes=max_bytes, target_size=target_size, region=region)]
        elif isinstance(levels, (int, np.integer)):
            out = [int(levels)]
        else:
            out = [int(x) for x in levels]
        if max_bytes is not None or target_size is not None:
            raise InputError('max_bytes= and target_size= apply to levels="auto".')
        for li in out:
            if not 0 <= li < nl:
                raise ItemNotFoundError(f"Item {self.catalog.names[i]!r} has levels 0..{nl - 1}; level {li} was asked for.")
        return out

    def _window(self, i: int, li: int, h: int, w: int,
                region: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
        """Level-``li`` window ``(y0, x0, y1, x1)`` of a level-0 ``region`` (whole level if None)."""
        if region is None:
            return 0, 0, h, w
        try:
            y0, x0, y1, x1 = (int(v) for v in region)
        except (TypeError, ValueError):
            raise InputError(f"Expected region=(y0, x0, y1, x1) in level-0 pixels. Got {region!r}.") from None
        H, W = self.catalog.sources[i, 2:4].tolist()
        if not (0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W):
            raise InputError(f"Item {self.catalog.names[i]!r} is {H}x{W}; region {tuple(region)} is not a non-empty "
                             "(y0, x0, y1, x1) inside it.")
        # level pixel j covers level-0 pixels [j * 2**li, (j + 1) * 2**li)
        return y0 >> li, x0 >> li, min(h, -((-y1) >> li)), min(w, -((-x1) >> li))

    # ------------------------------------------------------------------ fetch (I/O + entropy decoding)
    def _plan(self, i: int, li: int, region: tuple[int, int, int, int] | None) -> _Req:
        bi, slot, h, w = self.catalog.levels[li][i, :4].tolist()
        b = self._buckets[bi]
        y0, x0, y1, x1 = self._window(i, li, h, w, region)
        th, tw, k, ny, nx = b.th, b.tw, b.k, b.ny, b.nx
        srow, sl = divmod(slot, k)
        chunks = []
        for ty in range(y0 // th, -(-y1 // th)):
            for tx in range(x0 // tw, -(-x1 // tw)):
                chunks.append((f"{b.data_prefix}{srow}/0/{ty // ny}/{tx // nx}",
                               (sl * ny + ty % ny) * nx + tx % nx, ty, tx))
        return _Req(i, li, b, slot, y0, x0, y1, x1, chunks)

    def _where(self, r: _Req) -> str:
        return f"{self.url}: item {self.catalog.names[r.i]!r} level {r.level}"

    def _load_indexes(self, need: dict[str, tuple[_Bucket, _Req]]) -> dict[str, list[list[int]]]:
        keys = list(need)
        try:
            tails = self._os.read_ranges(keys, [-need[k][0].index_nbytes for k in keys], [None] * len(keys))
        except FileNotFoundError as e:
            key = str(e.args[0]) if e.args else "?"
            r = need[key][1] if key in need else next(iter(need.values()))[1]
            raise FormatError(f"{self._where(r)}: shard {key} is missing.") from None
        got = {}
        for key, tail in zip(keys, tails, strict=True):
            b, r = need[key]
            # a short tail is the whole (truncated) shard; otherwise the entries are checked
            # against the chunk ranges actually returned
            size = len(tail) if len(tail) < b.index_nbytes else 2**63
            got[key] = parse_index(tail, b.n_inner, size, f"{self._where(r)} shard {key}").tolist()
        with self._cache_lock:
            for key, idx in got.items():
                self._shard_index[key] = idx
                if len(self._shard_index) > _INDEX_CACHE:
                    self._shard_index.popitem(last=False)
        return got

    def _load_params(self, reqs: list[_Req]) -> dict[str, torch.Tensor]:
        """Parameter chunks (one per shard row) of ``reqs``, from the cache or fetched together."""
        out: dict[str, torch.Tensor] = {}
        need: dict[str, tuple[_Bucket, _Req]] = {}
        with self._cache_lock:
            for r in reqs:
                if r.b.params_shape is not None:
                    key = r.b.params_key(r.slot)
                    if key in out or key in need:
                        continue
                    hit = self._param_cache.get(key)
                    if hit is not None:
                        out[key] = hit
                    else:
                        need[key] = (r.b, r)
        if not need:
            return out
        keys = list(need)
        try:
            blobs = self._os.read_many(keys)
        except FileNotFoundError as e:
            raise FormatError(f"{self._where(next(iter(need.values()))[1])}: quantization parameters are "
                              f"missing ({e.args[0] if e.args else keys[0]}).") from None
        for key, data in zip(keys, blobs, strict=True):
            b, r = need[key]
            arr = fmt.decode_plain_chunk(data, (b.k,) + b.params_shape, np.dtype(np.float32),  # type: ignore[operator]
                                         f"{self._where(r)} qparams")
            out[key] = torch.from_numpy(np.array(arr, dtype=np.float32))
        with self._cache_lock:
            for key in keys:
                self._param_cache[key] = out[key]
                if len(self._param_cache) > _PARAM_CACHE:
                    self._param_cache.popitem(last=False)
        return out

    def _fetch(self, reqs: list[_Req], *, coefficients: bool = False, pin: bool = False) -> list[LevelPayload]:
        # shard indexes: from the cache, the rest fetched in one batch (held locally, so a
        # batch touching more shards than the cache holds still has all of them)
        idx_of: dict[str, list[list[int]]] = {}
        need: dict[str, tuple[_Bucket, _Req]] = {}
        cache = self._shard_index
        with self._cache_lock:
            for r in reqs:
                for key, _inner, _ty, _tx in r.chunks:
                    if key in idx_of or key in need:
                        continue
                    hit = cache.get(key)
                    if hit is not None:
                        cache.move_to_end(key)
                        idx_of[key] = hit
                    else:
                        need[key] = (r.b, r)
        if need:
            idx_of.update(self._load_indexes(need))
        params = self._load_params(reqs)
        # byte spans of every chunk, grouped by shard, then coalesced where they touch
        by_shard: dict[str, list[tuple[int, int, int, int]]] = {}
        for ri, r in enumerate(reqs):
            for ci, (key, inner, ty, tx) in enumerate(r.chunks):
                off, nb = idx_of[key][inner]
                if off == _MISSING:
                    raise FormatError(f"{self._where(r)}: chunk ({ty}, {tx}) is missing from shard {key}.")
                if nb > r.b.max_chunk_nbytes:
                    raise FormatError(f"{self._where(r)}: chunk ({ty}, {tx}) of shard {key} claims {nb} bytes; a chunk "
                                      f"of this bucket holds at most {r.b.max_chunk_nbytes} (corrupt shard index).")
                by_shard.setdefault(key, []).append((off, nb, ri, ci))
        keys: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        groups: list[list[tuple[int, int, int, int]]] = []
        for key, spans in by_shard.items():
            spans.sort()
            for s in spans:
                if groups and keys[-1] == key and ends[-1] == s[0]:
                    groups[-1].append(s)
                    ends[-1] = s[0] + s[1]
                else:
                    keys.append(key)
                    starts.append(s[0])
                    ends.append(s[0] + s[1])
                    groups.append([s])
        blobs = self._os.read_ranges(keys, starts, ends)
        outs = [self._start_payload(r, coefficients, pin) for r in reqs]
        for key, g, blob in zip(keys, groups, blobs, strict=True):
            base = g[0][0]
            if len(blob) != g[-1][0] + g[-1][1] - base:
                raise FormatError(f"{self._where(reqs[g[0][2]])}: shard {key} is truncated.")
            mv = memoryview(blob)
            for off, nb, ri, ci in g:
                r = reqs[ri]
                a = off - base
                view = mv[a:a + nb - 4]
                body: Any = view if (_crc_buffer is not None and r.b.takes_buffer) else bytes(view)
                crc = _crc_buffer(view) if _crc_buffer is not None else crc32c(body)
                if nb < 4 or crc != int.from_bytes(mv[a + nb - 4:a + nb], "little"):
                    _, _, ty, tx = r.chunks[ci]
                    raise ChecksumError(f"{self._where(r)} chunk ({ty}, {tx}) of shard {key}: crc32c mismatch "
                                        "(the stored bytes were altered or truncated).")
                self._place(r, ci, body, outs[ri])
        return [self._finish_payload(r, o, params) for r, o in zip(reqs, outs, strict=True)]

    def _start_payload(self, r: _Req, coefficients: bool, pin: bool) -> dict[str, Any]:
        b = r.b
        if coefficients and b.split is not None:
            return {"tiles": []}
        x0s, x1s = (r.x0 // 2, -(-r.x1 // 2)) if b.spec.packed else (r.x0, r.x1)
        # pinned staging only where there is a GPU to copy to (pinning needs the CUDA runtime)
        t = torch.empty((b.spec.channels, r.y1 - r.y0, x1s - x0s), dtype=b.torch_dtype,
                        pin_memory=pin and torch.cuda.is_available())
        return {"samples": t, "np": t.numpy(), "x0s": x0s}

    def _place(self, r: _Req, ci: int, body: bytes, o: dict[str, Any]) -> None:
        b = r.b
        _, _, ty, tx = r.chunks[ci]
        try:
            if "tiles" in o:
                co = b.split.decode_coefficients(body, b.chunk_shape[1:])
                o["tiles"].append((ty * b.th - r.y0, tx * b.tw - r.x0, co))
                return
            tile: torch.Tensor | None = None
            if b.split is not None:
                # split codecs reconstruct to a tensor that is the payload itself when one
                # chunk covers the window, and is copied into the staging buffer otherwise
                co = b.split.decode_coefficients(body, b.chunk_shape[1:])
                tile = reconstruct_tile(b.split, co, _CPU, b.torch_dtype)
                chunk = tile.numpy()[None]
            else:
                chunk = b.enc.codec.decode(body, b.chunk_shape, b.dtype)
        except QpyrError as e:
            raise type(e)(f"{self._where(r)} chunk ({ty}, {tx}): {e}") from e
        # intersection of the tile with the window, in stored columns
        cy0, cx0 = ty * b.th, tx * b.tws
        x0s = o["x0s"]
        y_lo, y_hi = max(r.y0, cy0), min(r.y1, cy0 + b.th)
        x_hi_s = o["np"].shape[2] + x0s
        x_lo, x_hi = max(x0s, cx0), min(x_hi_s, cx0 + b.tws)
        if (tile is not None and len(r.chunks) == 1 and not o["samples"].is_pinned()
                and (y_hi - y_lo, x_hi - x_lo) == tuple(o["np"].shape[1:])):
            o["samples"] = tile[:, y_lo - cy0:y_hi - cy0, x_lo - cx0:x_hi - cx0]
            return
        o["np"][:, y_lo - r.y0:y_hi - r.y0, x_lo - x0s:x_hi - x0s] = chunk[0, :, y_lo - cy0:y_hi - cy0, x_lo - cx0:x_hi - cx0]

    def _finish_payload(self, r: _Req, o: dict[str, Any], params_of: dict[str, torch.Tensor]) -> LevelPayload:
        b = r.b
        params = None
        if b.params_shape is not None:
            params = params_of[b.params_key(r.slot)][r.slot % b.k].clone()
            if b.enc.quantizer.granularity is Granularity.BLOCK:
                bs = b.enc.quantizer.block
                h, w = self.catalog.levels[r.level][r.i, 2:4].tolist()
                params = params[:, :, :-(-h // bs), :-(-w // bs)].contiguous()
        common = dict(quantizer=b.enc.quantizer, value_scale=_VALUE_SCALES[int(self.catalog.sources[r.i, 0])],
                      height=r.y1 - r.y0, width=r.x1 - r.x0, origin=(r.y0, r.x0), stored_dtype=b.dtype_name,
                      channels=b.spec.channels, params=params, pruned=b.pruned)
        if "tiles" in o:
            return LevelPayload(**common, codec=b.split, tiles=tuple(o["tiles"]),  # type: ignore[arg-type]
                                tile_shape=b.chunk_shape[1:])
        return LevelPayload(**common, samples=o["samples"], col=r.x0 - 2 * o["x0s"] if b.spec.packed else 0)  # type: ignore[arg-type]

    def fetch(
        self,
        item: int | str,
        levels: Sequence[int] | int | str | None = None,
        *,
        region: tuple[int, int, int, int] | None = None,
        max_bytes: int | None = None,
        target_size: int | None = None,
        coefficients: bool = False,
        pin_memory: bool = False,
    ) -> dict[int, LevelPayload]:
        """Fetch and entropy-decode levels of one item on the CPU; no value arithmetic.

        The I/O half of :meth:`read` (same arguments): only the chunks of the requested levels
        (and region) are read, in one batch of coalesced byte ranges. ``coefficients=True``
        keeps split codecs' output as coefficients (reconstructed on the device by
        :meth:`LevelPayload.decode`); ``pin_memory=True`` puts samples in pinned memory.

        Returns:
            ``{level: LevelPayload}``; ``payload.decode(device)`` gives what ``read`` gives.
        """
        i = self.item_index(item)
        lv = self._levels_arg(i, levels, max_bytes, target_size, region)
        reqs = [self._plan(i, li, region) for li in lv]
        return dict(zip(lv, self._fetch(reqs, coefficients=coefficients, pin=pin_memory), strict=True))

    def fetch_batch(
        self,
        items: Sequence[int | str],
        level: int | str,
        *,
        region: tuple[int, int, int, int] | None = None,
        max_bytes: int | None = None,
        target_size: int | None = None,
        coefficients: bool = False,
        pin_memory: bool = False,
    ) -> list[LevelPayload]:
        """:meth:`fetch` of one level of many items, with all their byte ranges in one batch
        (adjacent chunks of neighbouring items coalesced). ``level="auto"`` picks per item."""
        auto = isinstance(level, str)
        if auto and level != "auto":
            raise InputError(f'Expected level as an int or "auto". Got {level!r}.')
        if not auto and (max_bytes is not None or target_size is not None):
            raise InputError('max_bytes= and target_size= apply to level="auto".')
        reqs = []
        for it in items:
            i = self.item_index(it)
            if auto:
                li = self.pick_level(i, max_bytes=max_bytes, target_size=target_size, region=region)
            else:
                li = self._levels_arg(i, level, None, None, region)[0]
            reqs.append(self._plan(i, li, region))
        return self._fetch(reqs, coefficients=coefficients, pin=pin_memory)

    # ------------------------------------------------------------------ read (fetch + device decode)
    def read(
        self,
        item: int | str,
        levels: Sequence[int] | int | str | None = None,
        *,
        region: tuple[int, int, int, int] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        dequantize: bool = True,
        max_bytes: int | None = None,
        target_size: int | None = None,
    ) -> dict[int, Any]:
        """Read levels of one item into tensors.

        Args:
            item: name or index.
            levels: a level, a list of levels, None (all of the item's levels) or ``"auto"``
                (one level chosen from the catalog by :meth:`pick_level` with ``max_bytes`` /
                ``target_size`` before anything is fetched).
            region: ``(y0, x0, y1, x1)`` in level-0 pixels (end-exclusive): each level returns
                the window covering it (``y0 >> l`` to ``ceil(y1 / 2**l)``), and only the chunks
                (256-px tiles on large levels) it intersects are fetched.
            device: where the decode arithmetic runs and the result lives. On CUDA, samples
                are staged in pinned memory and copied with ``non_blocking=True``.
            dtype: floating dtype of the result.
            dequantize: False returns :class:`~qpyr.payload.StoredLevel` (stored integers with
                their scale and zero-point) instead of values.

        Returns:
            ``{level: Tensor[C, h, w]}``: float in [0, 1] for uint8/uint16 sources, source
            units otherwise (or ``{level: StoredLevel}``).
        """
        dev = _device(device)
        payloads = self.fetch(item, levels, region=region, max_bytes=max_bytes, target_size=target_size,
                              coefficients=dev.type != "cpu", pin_memory=dev.type == "cuda")
        if dequantize:
            out = {li: p.decode(dev, dtype) for li, p in payloads.items()}
            if any(p.pruned for p in payloads.values()):
                from qpyr.policies.saliency import fill_levels  # qpyr.tiles: pruned tiles (NaN) from the coarser level

                out = fill_levels(self, item, out, region, dev, dtype)
            return out
        return {li: p.stored(dev) for li, p in payloads.items()}

    def read_batch(
        self,
        items: Sequence[int | str],
        level: int | str,
        *,
        region: tuple[int, int, int, int] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        dequantize: bool = True,
        max_bytes: int | None = None,
        target_size: int | None = None,
    ) -> list[Any]:
        """One level of many items: ``[Tensor[C, h_i, w_i]]`` of ``dtype`` on ``device``, values
        in [0, 1] for uint8/uint16 sources and in source units otherwise (or ``StoredLevel``s with
        ``dequantize=False``), in the order of ``items``.

        All byte ranges go out in one batch (concurrently on async backends); equal-shaped
        items are dequantized together. Arguments as in :meth:`read`.
        """
        dev = _device(device)
        payloads = self.fetch_batch(items, level, region=region, max_bytes=max_bytes, target_size=target_size,
                                    coefficients=dev.type != "cpu", pin_memory=dev.type == "cuda")
        if dequantize:
            outs = decode_payloads(payloads, dev, dtype)
            for k, (p, t) in enumerate(zip(payloads, outs, strict=True)):
                # qpyr.tiles: pruned tiles (NaN) from the coarser level; other levels skip the
                # NaN scan (it costs as much as the decode).
                if p.pruned:
                    from qpyr.policies.saliency import fill_levels

                    li = level if isinstance(level, int) else self.pick_level(
                        items[k], max_bytes=max_bytes, target_size=target_size, region=region)
                    outs[k] = fill_levels(self, items[k], {li: t}, region, dev, dtype)[li]
            return outs
        return [p.stored(dev) for p in payloads]

    def read_stored(
        self, item: int | str, level: int, *, region: tuple[int, int, int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """Stored samples of one level as numpy: ``(samples [C, h, W'], params or None, info)``.

        ``samples`` are as stored (4-bit codes still packed two per byte, ``info["col"]`` is the
        first logical column; bfloat16 as uint16 bit patterns).
        """
        p = self.fetch(item, [level], region=region)[level]
        if p.samples is None:  # pragma: no cover - fetch without coefficients never splits
            raise FormatError("internal: a sample payload was expected")
        info = {"h": p.height, "w": p.width, "col": p.col, "origin": p.origin, "quantizer": p.quantizer}
        return p.samples.numpy(), (p.params.numpy() if p.params is not None else None), info


class _Req:
    """One planned read: item ``i``'s level window ``[y0, y1) x [x0, x1)`` and its chunks
    ``(shard key, inner index, tile row, tile col)``."""

    __slots__ = ("i", "level", "b", "slot", "y0", "x0", "y1", "x1", "chunks")

    def __init__(self, i: int, level: int, b: _Bucket, slot: int, y0: int, x0: int, y1: int, x1: int,
                 chunks: list[tuple[str, int, int, int]]):
        self.i, self.level, self.b, self.slot = i, level, b, slot
        self.y0, self.x0, self.y1, self.x1 = y0, x0, y1, x1
        self.chunks = chunks


def _device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"Expected an available device. Got {str(device)!r}, but torch.cuda.is_available() is False.")
    return dev


def open_store(target: str | ObjectStore, *, storage_options: dict[str, Any] | None = None) -> Store:
    """Open the committed store at ``target``: a local path or fsspec URL, or an :class:`ObjectStore`."""
    if isinstance(target, ObjectStore):
        if storage_options:
            raise InputError("storage_options apply to a URL; an ObjectStore already carries its own.")
        return Store._open(target)
    return Store._open(ObjectStore(target, storage_options))


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
