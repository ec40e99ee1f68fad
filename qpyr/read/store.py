"""The reader: open a store, plan reads from the manifest, fetch only what is asked, decode.

Opening reads the root ``zarr.json`` (manifest) and the catalog once
(:mod:`qpyr.read.snapshot`). A read is planned from the catalog alone (which bucket, slot and
tiles hold the item's level or region; ``levels="auto"`` picks a level by size or byte budget
the same way: :mod:`qpyr.read.selection`) and then runs in two halves:

* :meth:`Store.fetch` — I/O and entropy decoding on the CPU (:mod:`qpyr.read.fetch`): the
  shard indexes not yet cached (fetched together, cached per store), then every chunk's byte
  range in one batch, adjacent ranges coalesced (s3fs runs the batch concurrently),
  crc32c-checked and decoded by the chunk codec into a
  :class:`~qpyr.read.payload.LevelPayload` of stored samples (or split-codec coefficients);
* :meth:`LevelPayload.decode` — transfer and arithmetic as torch ops on the target device.

``read`` / ``read_batch`` are the two halves back to back, with pruned ``qpyr.tiles`` tiles
filled from the coarser level (:mod:`qpyr.read.pruned`). zarr-python is not on this path: its
cost per call is larger than the whole decode of a coarse level's item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from qpyr.codecs.encoding import Encoding
from qpyr.errors import BudgetError, FormatError, InputError, ItemNotFoundError
from qpyr.format import manifest as fmt
from qpyr.format.catalog import Catalog
from qpyr.io.storage import ObjectStore
from qpyr.read import pruned, snapshot
from qpyr.read.bucket import Bucket
from qpyr.read.fetch import Fetcher
from qpyr.read.payload import LevelPayload, StoredLevel, check_dtype, check_uint8_source
from qpyr.read.records import RecordFetcher
from qpyr.read.selection import PlannedRead, Planner, Region, check_auto

__all__ = ["Store", "open_store", "BudgetError", "LevelPayload", "StoredLevel"]


class Store:
    """An open qpyr store (a snapshot: later appends are seen only after reopening).

    ``len(store)`` items; ``store.names`` their names; ``store.manifest`` the manifest dict;
    ``store.catalog`` the :class:`~qpyr.format.catalog.Catalog`; ``store.read(...)`` decodes
    levels to tensors.
    """

    def __init__(self, ostore: ObjectStore, manifest: dict[str, Any], catalog: Catalog):
        self._os = ostore
        self.manifest = manifest
        self.url = ostore.url
        self.catalog = catalog
        self._encodings = {k: Encoding.from_dict(v) for k, v in manifest["encodings"].items()}
        # one reader per format major, newest first: 2.0 records, else 1.x bucket slots
        self._records = fmt.major_version(manifest) >= 2
        if self._records:
            self._buckets: list[Bucket] = []
            self._planner = Planner(catalog, classes=[(b, self._encodings[b["encoding"]]) for b in manifest["buckets"]])
        else:
            self._buckets = [Bucket(b, self._encodings[b["encoding"]]) for b in manifest["buckets"]]
            self._planner = Planner(catalog, self._buckets)
        self._fetcher: Fetcher = (RecordFetcher(ostore, catalog, manifest["records"]) if self._records
                                  else Fetcher(ostore, catalog))

    # ------------------------------------------------------------------ open
    @classmethod
    def _open(cls, ostore: ObjectStore) -> Store:
        return cls(ostore, *snapshot.read_snapshot(ostore))

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
            bi, slot, lh, lw, nbytes, dec = (int(x) for x in self.catalog.levels[li][i][:6])
            bd = self.manifest["buckets"][bi]
            enc = self._encodings[bd["encoding"]]
            p, s = (float(x) for x in self.catalog.quality[li][i])
            levels.append({
                "level": li, "shape": [c, lh, lw], "dtype": enc.quantizer.dtype.value if not enc.quantizer.is_lossless else fmt.DTYPE_CODES[code],
                "encoding": enc.label, "encoding_id": bd["encoding"], "bucket": bd["path"],
                **({"task": slot, "offset": int(self.catalog.levels[li][i][6])} if self._records else {"slot": slot}),
                "stored_bytes": nbytes, "psnr": p, "ssim": s, "decision": fmt.DECISIONS[dec],
            })
        return {"name": self.catalog.names[i], "dtype": fmt.DTYPE_CODES[code], "shape": [c, h, w], "levels": levels}

    # ------------------------------------------------------------------ level choice
    def bucket_of(self, item: int | str, level: int) -> Bucket:
        """The bucket (1.x) or record geometry (2.0) of an item's level: tile size, codec,
        stored dtype (for tools and tests that look at the stored bytes)."""
        i = self.item_index(item)
        bi, _slot, h, w = self.catalog.levels[level][i, :4].tolist()
        if bi < 0:
            raise ItemNotFoundError(f"Item {self.catalog.names[i]!r} has no level {level}.")
        return self._planner.bucket(bi, h, w)

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
        bi = tab[:, 0]
        out = np.full(len(tab), -1, np.int64)
        ok = bi >= 0
        if self._records:  # the shard holding the record's first byte
            r = self.manifest["records"]
            out[ok] = tab[ok, 1] * r["task_shards"] + tab[ok, 6] // r["shard_bytes"]
            return out
        ks = np.array([b.k for b in self._buckets] + [1], np.int64)
        out[ok] = bi[ok] * 2**40 + tab[ok, 1] // ks[bi[ok]]
        return out

    def buffer_shards(self, max_bytes: int) -> None:
        """Format 2.0: fetch whole shards (one request each) and keep up to ``max_bytes`` of
        them, so reads in epoch order cost one request per shard (0 turns it off). A no-op on
        1.x stores, whose reads fetch ranges of their shards."""
        if isinstance(self._fetcher, RecordFetcher):
            self._fetcher.buffer_shards(max_bytes)

    def pick_level(self, item: int | str, *, max_bytes: int | None = None, target_size: int | None = None,
                   region: Region | None = None) -> int:
        """The level ``levels="auto"`` reads, chosen from the catalog before fetching anything.

        ``target_size``: the coarsest level whose short side is still >= ``target_size`` (level
        0 if even level 0 is smaller). ``max_bytes``: the finest level (no finer than the
        ``target_size`` choice) whose stored bytes fit; for a ``region`` the bytes of the chunks
        it intersects are estimated pro rata. Raises :class:`BudgetError` when no level fits.
        """
        check_auto(max_bytes, target_size)  # before the item is looked up
        return self._planner.pick_level(self.item_index(item), max_bytes=max_bytes, target_size=target_size,
                                        region=region)

    # ------------------------------------------------------------------ fetch (I/O + entropy decoding)
    def fetch(
        self,
        item: int | str,
        levels: Sequence[int] | int | str | None = None,
        *,
        region: Region | None = None,
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
        lv = self._planner.levels(i, levels, max_bytes, target_size, region)
        reqs = [self._planner.plan(i, li, region) for li in lv]
        return dict(zip(lv, self._fetcher.fetch(reqs, coefficients=coefficients, pin=pin_memory), strict=True))

    def fetch_batch(
        self,
        items: Sequence[int | str],
        level: int | str,
        *,
        region: Region | None = None,
        max_bytes: int | None = None,
        target_size: int | None = None,
        coefficients: bool = False,
        pin_memory: bool = False,
        finish: Callable[[LevelPayload], Any] | None = None,
    ) -> list[Any]:
        """:meth:`fetch` of one level of many items, with all their byte ranges in one batch
        (adjacent chunks of neighbouring items coalesced). ``level="auto"`` picks per item.
        ``finish(payload)``, when given, is applied to each payload as soon as it is complete
        (e.g. ``decode``, while the samples are still in cache) and its results are returned."""
        reqs = self._batch_plan(items, level, region, max_bytes, target_size)
        return self._fetcher.fetch(reqs, coefficients=coefficients, pin=pin_memory, finish=finish)

    def _batch_plan(self, items: Sequence[int | str], level: int | str, region: Region | None,
                    max_bytes: int | None, target_size: int | None) -> list[PlannedRead]:
        auto = isinstance(level, str)
        if auto and level != "auto":
            raise InputError(f'Expected level as an int or "auto". Got {level!r}.')
        if not auto and (max_bytes is not None or target_size is not None):
            raise InputError('max_bytes= and target_size= apply to level="auto".')
        reqs = []
        for it in items:
            i = self.item_index(it)
            if auto:
                li = self._planner.pick_level(i, max_bytes=max_bytes, target_size=target_size, region=region)
            else:
                li = self._planner.levels(i, level, None, None, region)[0]
            reqs.append(self._planner.plan(i, li, region))
        return reqs

    # ------------------------------------------------------------------ read (fetch + device decode)
    def read(
        self,
        item: int | str,
        levels: Sequence[int] | int | str | None = None,
        *,
        region: Region | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        dequantize: bool = True,
        max_bytes: int | None = None,
        target_size: int | None = None,
    ) -> dict[int, Any]:
        """Read levels of one item into tensors.

        Args:
            item: name or index (a negative index counts from the end, as in Python: -1 is the
                last item).
            levels: a level, a list of levels, None (all of the item's levels) or ``"auto"``
                (one level chosen from the catalog by :meth:`pick_level` with ``max_bytes`` /
                ``target_size`` before anything is fetched).
            region: ``(y0, x0, y1, x1)`` in level-0 pixels (end-exclusive): each level returns
                the window covering it (``y0 >> l`` to ``ceil(y1 / 2**l)``), and only the chunks
                (256-px tiles on large levels) it intersects are fetched.
            device: where the decode arithmetic runs and the result lives. On CUDA, samples
                are staged in pinned memory and copied with ``non_blocking=True``.
            dtype: dtype of the result: floating (values as below), or ``torch.uint8`` for 8-bit
                sources: 0..255, ``floor(255 * v + 0.5)`` of the float32 value ``v`` (for
                ``qpyr.dct`` levels exactly the codec's own uint8 decoding, with no float pass).
                Sources above 8 bits (and float sources) are refused with
                :class:`~qpyr.errors.InputError`: read them as float.
            dequantize: False returns :class:`~qpyr.read.payload.StoredLevel` (stored integers with
                their scale and zero-point) instead of values.

        Returns:
            ``{level: Tensor[C, h, w]}``: float in [0, 1] for uint8/uint16 sources, source
            units otherwise, uint8 0..255 with ``dtype=torch.uint8`` (or ``{level: StoredLevel}``).
        """
        dev = _device(device)
        if dequantize:
            self._check_dtype([item], dtype)
        payloads = self.fetch(item, levels, region=region, max_bytes=max_bytes, target_size=target_size,
                              coefficients=dev.type != "cpu", pin_memory=dev.type == "cuda")
        if dequantize:
            return pruned.decode_levels(self, self.item_index(item), payloads, region, dev, dtype)
        return {li: p.stored(dev) for li, p in payloads.items()}

    def read_batch(
        self,
        items: Sequence[int | str],
        level: int | str,
        *,
        region: Region | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        dequantize: bool = True,
        max_bytes: int | None = None,
        target_size: int | None = None,
    ) -> list[Any]:
        """One level of many items: ``[Tensor[C, h_i, w_i]]`` of ``dtype`` on ``device``, values
        in [0, 1] for uint8/uint16 sources and in source units otherwise, uint8 0..255 with
        ``dtype=torch.uint8`` (or ``StoredLevel``s with ``dequantize=False``), in the order of
        ``items``.

        All byte ranges go out in one batch (concurrently on async backends); equal-shaped
        items are dequantized together. Arguments as in :meth:`read`.
        """
        dev = _device(device)
        if dequantize:
            self._check_dtype(items, dtype)
        reqs = self._batch_plan(items, level, region, max_bytes, target_size)
        payloads = self._fetcher.fetch(reqs, coefficients=dev.type != "cpu", pin=dev.type == "cuda")
        if dequantize:
            return pruned.decode_batch(self, [r.i for r in reqs], [r.level for r in reqs], payloads, region, dev, dtype)
        return [p.stored(dev) for p in payloads]

    def _check_dtype(self, items: Sequence[int | str], dtype: torch.dtype) -> None:
        """A dtype reads can produce; uint8 only for items with 8-bit sources (named if not)."""
        if check_dtype(dtype) != torch.uint8:
            return
        for it in items:
            i = self.item_index(it)
            src = fmt.DTYPE_CODES[int(self.catalog.sources[i, 0])]
            check_uint8_source(1.0 / 255.0 if src == "uint8" else 1.0 / 65535.0 if src == "uint16" else 1.0,
                               f"item {self.catalog.names[i]!r} ({src})")

    def read_stored(
        self, item: int | str, level: int, *, region: Region | None = None
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
