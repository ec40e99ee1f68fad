"""The reader: open a store, plan reads from the manifest, fetch only what is asked, decode.

Opening reads the root ``zarr.json`` (manifest) and the catalog once. A read of one item's
level touches only that item's chunks: one cached shard-index read per shard, then one
coalesced byte-range read for the item's chunks, decoded on the CPU into stored samples and
turned into values by torch ops on the target device.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from . import format as fmt
from .encoding import Encoding
from .errors import FormatError, IncompleteStoreError, ItemNotFoundError, QpyrError
from .layout import BucketSpec
from .quant import StoredType, unpack_nibbles, value_scale_for
from .shard import MISSING, index_nbytes, parse_index, strip_crc
from .storage import ObjectStore

__all__ = ["Store", "open_store"]

_INDEX_CACHE = 4096


class _Bucket:
    def __init__(self, d: dict[str, Any], enc: Encoding):
        self.spec = BucketSpec.from_dict(d)
        self.slots = int(d["slots"])
        self.dtype = np.dtype(d["dtype"]).newbyteorder("<") if np.dtype(d["dtype"]).itemsize > 1 else np.dtype(d["dtype"])
        self.enc = enc
        ps = d.get("params_shape")
        self.params_shape: tuple[int, ...] | None = tuple(int(x) for x in ps) if ps else None
        self.stored_bytes = int(d.get("stored_bytes", 0))


class Store:
    """An open qpyr store (a snapshot: later appends are seen only after reopening).

    ``len(store)`` items; ``store.names`` their names; ``store.manifest`` the manifest dict;
    ``store.read(...)`` decodes levels to tensors.
    """

    def __init__(self, ostore: ObjectStore, manifest: dict[str, Any], catalog: dict[str, Any]):
        self._os = ostore
        self.manifest = manifest
        self.url = ostore.url
        self._names: list[str] = catalog["names"]
        self._index = {n: i for i, n in enumerate(self._names)}
        self._sources: np.ndarray = catalog["sources"]
        self._levels: list[np.ndarray] = catalog["levels"]
        self._quality: list[np.ndarray] = catalog["quality"]
        self._encodings = {k: Encoding.from_dict(v) for k, v in manifest["encodings"].items()}
        self._buckets = [_Bucket(b, self._encodings[b["encoding"]]) for b in manifest["buckets"]]
        self._shard_index: OrderedDict[str, np.ndarray] = OrderedDict()
        self._param_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    # ------------------------------------------------------------------ open
    @classmethod
    def _open(cls, ostore: ObjectStore) -> Store:
        where = ostore.url
        try:
            raw = ostore.read("zarr.json")
        except FileNotFoundError:
            if ostore.exists(".qpyr/pack.json"):
                raise IncompleteStoreError(
                    f"{where}: the store is incomplete (a pack did not finish); re-run the same pack to complete it."
                ) from None
            raise FormatError(f"{where}: not a qpyr store (no zarr.json).") from None
        if len(raw) > fmt.LIMITS["max_doc_bytes"]:
            raise FormatError(f"{where}/zarr.json: {len(raw)} bytes exceeds the metadata limit.")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise FormatError(f"{where}/zarr.json: malformed JSON ({e}).") from e
        if not isinstance(doc, dict) or doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
            raise FormatError(f"{where}/zarr.json: not a Zarr v3 group.")
        attrs = doc.get("attributes")
        if not isinstance(attrs, dict) or fmt.MANIFEST_KEY not in attrs:
            raise FormatError(f"{where}: a Zarr group without a qpyr manifest (root attribute 'qpyr').")
        m = fmt.validate_manifest(attrs[fmt.MANIFEST_KEY], f"{where} manifest")
        try:
            for k, v in m["encodings"].items():
                Encoding.from_dict(v)
        except QpyrError as e:
            raise FormatError(f"{where} manifest.encodings: {e}") from e
        catalog = cls._read_catalog(ostore, m)
        return cls(ostore, m, catalog)

    @staticmethod
    def _read_plain(ostore: ObjectStore, key: str, rows: int, chunk_rows: int, tail: tuple[int, ...], dtype: Any) -> np.ndarray:
        nchunks = -(-rows // chunk_rows) if rows else 0
        rest = "/0" * len(tail)
        chunks = []
        for i in range(nchunks):
            try:
                chunks.append(ostore.read(f"{key}/c/{i}{rest}"))
            except FileNotFoundError:
                raise FormatError(f"{ostore.url}: catalog array {key} is missing chunk {i}.") from None
        return fmt.decode_plain_array(chunks, rows, chunk_rows, tail, np.dtype(dtype), f"{ostore.url}/{key}")

    @classmethod
    def _read_catalog(cls, ostore: ObjectStore, m: dict[str, Any]) -> dict[str, Any]:
        n, cr = m["items"], m["catalog"]["chunk_rows"]
        nb = m["catalog"]["name_bytes"]
        blob = cls._read_plain(ostore, "catalog/names", nb, 2**20, (), np.uint8).tobytes()
        offs = cls._read_plain(ostore, "catalog/name_offsets", n + 1, cr, (), np.uint64)
        if n and (offs[0] != 0 or offs[-1] != nb or np.any(np.diff(offs.astype(np.int64)) < 0)):
            raise FormatError(f"{ostore.url}: catalog name offsets are inconsistent.")
        try:
            names = [blob[int(offs[i]):int(offs[i + 1])].decode("utf-8") for i in range(n)]
        except UnicodeDecodeError as e:
            raise FormatError(f"{ostore.url}: catalog names are not UTF-8 ({e}).") from e
        sources = cls._read_plain(ostore, "catalog/sources", n, cr, (5,), np.int64)
        levels, quality = [], []
        nb_buckets = len(m["buckets"])
        for li in range(m["levels"]):
            tab = cls._read_plain(ostore, f"catalog/level_{li}", n, cr, (len(fmt.LEVEL_COLUMNS),), np.int64)
            present = tab[:, 0] >= 0
            if (tab[:, 0] >= nb_buckets).any() or (tab[present, 1:4] < 0).any() or \
                    (tab[present, 5] < 0).any() or (tab[present, 5] >= len(fmt.DECISIONS)).any():
                raise FormatError(f"{ostore.url}: catalog level {li} points at unknown buckets or negative extents.")
            for bi in np.unique(tab[present, 0]):
                b = m["buckets"][int(bi)]
                rows_b = tab[tab[:, 0] == bi]
                if (rows_b[:, 1] >= b["slots"]).any() or (rows_b[:, 2] > b["height"]).any() or (rows_b[:, 3] > b["width"]).any() or b["level"] != li:
                    raise FormatError(f"{ostore.url}: catalog level {li} does not fit bucket {b['path']}.")
            levels.append(tab)
            quality.append(cls._read_plain(ostore, f"catalog/quality_{li}", n, cr, (2,), np.float32))
        if len(set(names)) != len(names):
            raise FormatError(f"{ostore.url}: duplicate item names in the catalog.")
        if n and ((sources[:, 0] < 0).any() or (sources[:, 0] >= len(fmt.DTYPE_CODES)).any()):
            raise FormatError(f"{ostore.url}: catalog holds unknown source dtypes.")
        return {"names": names, "sources": sources, "levels": levels, "quality": quality}

    # ------------------------------------------------------------------ catalog API
    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"Store({self.url!r}, items={len(self)}, levels={self.manifest['levels']})"

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def total_bytes(self) -> int:
        return int(self.manifest["total_bytes"])

    def io_stats(self) -> dict[str, int]:
        """``{"bytes_read", "requests"}`` since open or :meth:`reset_io_stats`."""
        return self._os.io_stats()

    def reset_io_stats(self) -> None:
        self._os.reset_io_stats()

    def _item(self, item: int | str) -> int:
        if isinstance(item, str):
            if item not in self._index:
                raise ItemNotFoundError(f"No item named {item!r} in {self.url}.")
            return self._index[item]
        i = int(item)
        if not -len(self) <= i < len(self):
            raise ItemNotFoundError(f"Item index {item} out of range (store has {len(self)} items).")
        return i % len(self)

    def item_levels(self, item: int | str) -> int:
        return int(self._sources[self._item(item), 4])

    def item_info(self, item: int | str) -> dict[str, Any]:
        """Name, source dtype/shape and per-level shape/encoding/bytes/quality of one item."""
        i = self._item(item)
        code, c, h, w, nl = (int(x) for x in self._sources[i])
        levels = []
        for li in range(nl):
            bi, slot, lh, lw, nbytes, dec = (int(x) for x in self._levels[li][i])
            b = self._buckets[bi]
            p, s = (float(x) for x in self._quality[li][i])
            levels.append({
                "level": li, "shape": [c, lh, lw], "dtype": b.enc.quantizer.dtype.value if not b.enc.quantizer.is_lossless else fmt.DTYPE_CODES[code],
                "encoding": b.enc.label, "encoding_id": b.spec.encoding_id, "bucket": b.spec.path, "slot": slot,
                "stored_bytes": nbytes, "psnr": p, "ssim": s, "decision": fmt.DECISIONS[dec],
            })
        return {"name": self._names[i], "dtype": fmt.DTYPE_CODES[code], "shape": [c, h, w], "levels": levels}

    # ------------------------------------------------------------------ low-level reads
    def _shard_idx(self, b: _Bucket, key: str, where: str) -> tuple[np.ndarray, int] | None:
        full = f"{b.spec.path}/data/{key}"
        cached = self._shard_index.get(full)
        if cached is not None:
            self._shard_index.move_to_end(full)
            return cached, 0
        n = b.spec.n_inner
        try:
            tail = self._os.read_range(full, -index_nbytes(n), None)  # type: ignore[arg-type]
        except FileNotFoundError:
            return None
        size = int(self._os.size(full)) if len(tail) < index_nbytes(n) else None
        idx = parse_index(tail, n, size if size is not None else 2**63, f"{where} shard {key}")
        if size is None:
            # We did not stat the shard; check offsets against the smallest size that fits.
            pass
        self._shard_index[full] = idx
        if len(self._shard_index) > _INDEX_CACHE:
            self._shard_index.popitem(last=False)
        return idx, 0

    def _params(self, b: _Bucket, slot: int, where: str) -> np.ndarray | None:
        if b.params_shape is None:
            return None
        k = b.spec.items_per_shard
        key = f"{b.spec.path}/qparams/c/{slot // k}" + "/0" * len(b.params_shape)
        arr = self._param_cache.get(key)
        if arr is None:
            try:
                data = self._os.read(key)
            except FileNotFoundError:
                raise FormatError(f"{where}: quantization parameters are missing ({key}).") from None
            arr = fmt.decode_plain_chunk(data, (k,) + b.params_shape, np.dtype(np.float32), f"{where} qparams")
            self._param_cache[key] = arr
            if len(self._param_cache) > 256:
                self._param_cache.popitem(last=False)
        return arr[slot % k]

    def read_stored(
        self, item: int | str, level: int, *, tiles: tuple[int, int, int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """Stored samples of one level: ``(samples [C, h, W'], params or None, info)``.

        ``samples`` are as stored (4-bit codes still packed two per byte; bfloat16 as uint16
        bit patterns). ``tiles=(ty0, tx0, ty1, tx1)`` restricts the read to those chunk tiles
        (the result then covers only them).
        """
        i = self._item(item)
        nl = int(self._sources[i, 4])
        if not 0 <= level < nl:
            raise ItemNotFoundError(f"Item {self._names[i]!r} has levels 0..{nl - 1}; level {level} was asked for.")
        bi, slot, h, w = (int(x) for x in self._levels[level][i, :4])
        b = self._buckets[bi]
        where = f"{self.url}: item {self._names[i]!r} level {level}"
        spec = b.spec
        th, tw = spec.chunk_hw
        tws = spec.stored_chunk_w
        ny, nx = -(-h // th), -(-w // tw)
        ty0, tx0, ty1, tx1 = tiles if tiles is not None else (0, 0, ny, nx)
        plan: dict[str, list[tuple[int, int, int]]] = {}
        for ty in range(ty0, ty1):
            for tx in range(tx0, tx1):
                key, inner = spec.chunk_location(slot, ty, tx)
                plan.setdefault(key, []).append((ty, tx, inner))
        c = spec.channels
        out = np.empty((c, (ty1 - ty0) * th, (tx1 - tx0) * tws), b.dtype)
        for key, entries in plan.items():
            got = self._shard_idx(b, key, where)
            if got is None:
                raise FormatError(f"{where}: shard {spec.path}/data/{key} is missing.")
            idx = got[0]
            spans = []
            for ty, tx, inner in entries:
                off, nb = idx[inner]
                if off == MISSING:
                    raise FormatError(f"{where}: chunk ({ty}, {tx}) is missing from shard {key}.")
                spans.append((int(off), int(nb), ty, tx))
            spans.sort()
            # coalesce adjacent ranges into as few requests as possible
            groups: list[list[tuple[int, int, int, int]]] = []
            for s in spans:
                if groups and groups[-1][-1][0] + groups[-1][-1][1] == s[0]:
                    groups[-1].append(s)
                else:
                    groups.append([s])
            full = f"{spec.path}/data/{key}"
            blobs = self._os.read_ranges([full] * len(groups), [g[0][0] for g in groups],
                                         [g[-1][0] + g[-1][1] for g in groups])
            for g, blob in zip(groups, blobs):
                base = g[0][0]
                if len(blob) != g[-1][0] + g[-1][1] - base:
                    raise FormatError(f"{where}: shard {key} is truncated.")
                for off, nb, ty, tx in g:
                    data = strip_crc(blob[off - base:off - base + nb], f"{where} chunk ({ty}, {tx}) of shard {key}")
                    chunk = b.enc.codec.decode(data, (1, c, th, tws), b.dtype)
                    oy, ox = (ty - ty0) * th, (tx - tx0) * tws
                    out[:, oy:oy + th, ox:ox + tws] = chunk[0]
        if tiles is None:
            out = out[:, :h, :spec.stored_width if False else (w + 1) // 2 if spec.packed else w]
        params = self._params(b, slot, where)
        if params is not None and b.enc.quantizer.granularity.value == "block":
            bs = b.enc.quantizer.block
            params = params[:, :, : -(-h // bs), : -(-w // bs)]
        info = {"h": h, "w": w, "bucket": b, "source_dtype": fmt.DTYPE_CODES[int(self._sources[i, 0])]}
        return out, params, info

    # ------------------------------------------------------------------ decode
    def read(
        self,
        item: int | str,
        levels: Sequence[int] | int | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> dict[int, torch.Tensor]:
        """Decode levels of one item.

        Args:
            item: name or index.
            levels: level numbers (None: all of the item's levels).
            device: target device; decoding arithmetic runs there.
            dtype: floating dtype of the result.

        Returns:
            ``{level: Tensor[C, h, w]}``; values in [0, 1] for uint8/uint16 sources, source
            units otherwise.
        """
        i = self._item(item)
        if levels is None:
            levels = range(int(self._sources[i, 4]))
        elif isinstance(levels, int):
            levels = [levels]
        dev = torch.device(device)
        return {int(li): self._decode(i, int(li), dev).to(dtype) for li in levels}

    def _decode(self, i: int, level: int, dev: torch.device) -> torch.Tensor:
        stored, params, info = self.read_stored(i, level)
        b: _Bucket = info["bucket"]
        q = b.enc.quantizer
        src_dt = np.dtype(info["source_dtype"])
        arr = stored.astype(np.int32) if stored.dtype == np.uint16 else stored
        if arr.dtype.kind == "u" and arr.dtype.itemsize > 2:
            arr = arr.astype(np.int64)
        t = torch.from_numpy(np.ascontiguousarray(arr) if arr.flags.writeable else arr.copy())
        if dev.type == "cuda":
            t = t.pin_memory().to(dev, non_blocking=True)
        if q.is_packed:
            t = unpack_nibbles(t, info["w"], signed=q.dtype is StoredType.INT4)
        pt = torch.from_numpy(np.array(params, dtype=np.float32)).to(dev) if params is not None else None
        return q.dequantize(t, pt, value_scale=value_scale_for(src_dt))


def open_store(url: str, *, storage_options: dict[str, Any] | None = None) -> Store:
    """Open a committed store at ``url`` (local path or fsspec URL)."""
    return Store._open(ObjectStore(url, storage_options))


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
