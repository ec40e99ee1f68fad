"""What a read fetches, decided from the catalog alone: the level (``levels="auto"`` by size or
byte budget), the level window of a region, and the chunks that hold it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from qpyr.codecs.encoding import Encoding
from qpyr.errors import BudgetError, InputError, ItemNotFoundError
from qpyr.format.catalog import Catalog
from qpyr.format.layout import BucketSpec, size_class
from qpyr.read.bucket import Bucket

__all__ = ["PlannedRead", "Planner", "check_auto"]

#: ``(y0, x0, y1, x1)`` in level-0 pixels, end-exclusive.
Region = tuple[int, int, int, int]


def check_auto(max_bytes: int | None, target_size: int | None) -> None:
    """Raise :class:`InputError` unless ``levels="auto"`` has a size or byte budget to go by."""
    if max_bytes is None and target_size is None:
        raise InputError('levels="auto" needs max_bytes= or target_size=.')


class PlannedRead:
    """One planned read: item ``i``'s level window ``[y0, y1) x [x0, x1)`` in bucket ``b`` at
    ``slot``, and its chunks ``(shard key, inner index, tile row, tile col)``.

    Format 2.0: ``slot`` is the task (row of the record array), ``record`` is ``(task, offset,
    bytes, tiles)`` of the item's record, and a chunk's inner index is its tile's position in
    the record (row-major over the level's tiles; the shard key is empty)."""

    __slots__ = ("i", "level", "b", "slot", "y0", "x0", "y1", "x1", "chunks", "record")

    def __init__(self, i: int, level: int, b: Bucket, slot: int, y0: int, x0: int, y1: int, x1: int,
                 chunks: list[tuple[str, int, int, int]], record: tuple[int, int, int, int] | None = None):
        self.i, self.level, self.b, self.slot = i, level, b, slot
        self.y0, self.x0, self.y1, self.x1 = y0, x0, y1, x1
        self.chunks = chunks
        self.record = record


class Planner:
    """Level choice and read planning over a store's ``catalog`` and ``buckets`` (no I/O).

    Items are item numbers (``Store.item_index`` resolves names and negative indices).
    """

    def __init__(self, catalog: Catalog, buckets: Sequence[Bucket] | None = None,
                 classes: Sequence[tuple[dict[str, Any], Encoding]] | None = None):
        """``buckets`` of a 1.x store, or the record ``classes`` (manifest entry, encoding) of a
        2.0 store, whose records' geometry follows from their own ``h x w``."""
        self.catalog = catalog
        self.buckets: Sequence[Bucket] = buckets or []
        self.classes = classes
        self.records = classes is not None  # format 2.0
        self._geometry: dict[tuple[int, int, int], Bucket] = {}

    def bucket(self, bi: int, h: int, w: int) -> Bucket:
        """The bucket (geometry, codec, constants) of an ``h x w`` level of bucket or class ``bi``."""
        if self.classes is None:
            return self.buckets[bi]
        key = (bi, size_class(h), size_class(w))
        b = self._geometry.get(key)
        if b is None:
            d, enc = self.classes[bi]
            spec = BucketSpec.for_record(d, h, w)
            ps = enc.quantizer.param_shape(spec.channels, spec.height, spec.width)
            b = self._geometry[key] = Bucket(dict(spec.to_dict(), slots=0, params_shape=list(ps) if ps else None), enc)
        return b

    def pick_level(self, i: int, *, max_bytes: int | None = None, target_size: int | None = None,
                   region: Region | None = None) -> int:
        """The level ``levels="auto"`` reads (see :meth:`qpyr.read.store.Store.pick_level`)."""
        check_auto(max_bytes, target_size)
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
            est = self.level_bytes(i, li, region)
            if est <= max_bytes:
                return li
        smallest = self.level_bytes(i, nl - 1, region)
        raise BudgetError(f"Item {self.catalog.names[i]!r}: no level fits max_bytes={max_bytes} "
                          f"(the coarsest, level {nl - 1}, stores {smallest} bytes).")

    def level_bytes(self, i: int, li: int, region: Region | None) -> int:
        """Stored bytes of item ``i``'s level ``li``; for a ``region``, those of the chunks it
        intersects, estimated pro rata."""
        bi, _slot, h, w, nbytes = self.catalog.levels[li][i, :5].tolist()
        if region is None:
            return int(nbytes)
        b = self.bucket(bi, h, w)
        y0, x0, y1, x1 = self.window(i, li, h, w, region)
        ny, nx = -(-h // b.th), -(-w // b.tw)
        ty = -(-y1 // b.th) - y0 // b.th
        tx = -(-x1 // b.tw) - x0 // b.tw
        return int(math.ceil(nbytes * (ty * tx) / (ny * nx)))

    def levels(self, i: int, levels: Any, max_bytes: int | None, target_size: int | None,
               region: Region | None) -> list[int]:
        """The levels a read of item ``i`` returns: ``levels`` as a level, a list of levels, None
        (all of the item's levels) or ``"auto"``."""
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
            try:
                out = [_integer(x) for x in levels]
            except (TypeError, ValueError):
                raise InputError(f'Expected levels as int, list of ints, None or "auto". Got {levels!r}.') from None
        if max_bytes is not None or target_size is not None:
            raise InputError('max_bytes= and target_size= apply to levels="auto".')
        for li in out:
            if not 0 <= li < nl:
                raise ItemNotFoundError(f"Item {self.catalog.names[i]!r} has levels 0..{nl - 1}; level {li} was asked for.")
        return out

    def window(self, i: int, li: int, h: int, w: int, region: Region | None) -> tuple[int, int, int, int]:
        """Level-``li`` window ``(y0, x0, y1, x1)`` of a level-0 ``region`` (whole level if None)."""
        if region is None:
            return 0, 0, h, w
        try:
            y0, x0, y1, x1 = (_integer(v) for v in region)
        except (TypeError, ValueError):
            raise InputError(f"Expected region=(y0, x0, y1, x1) in level-0 pixels. Got {region!r}.") from None
        H, W = self.catalog.sources[i, 2:4].tolist()
        if not (0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W):
            raise InputError(f"Item {self.catalog.names[i]!r} is {H}x{W}; region {tuple(region)} is not a non-empty "
                             "(y0, x0, y1, x1) inside it.")
        # level pixel j covers level-0 pixels [j * 2**li, (j + 1) * 2**li)
        return y0 >> li, x0 >> li, min(h, -((-y1) >> li)), min(w, -((-x1) >> li))

    def plan(self, i: int, li: int, region: Region | None) -> PlannedRead:
        """The chunks of item ``i``'s level ``li`` that the window of ``region`` intersects."""
        row = self.catalog.levels[li][i]
        bi, slot, h, w = row[:4].tolist()
        b = self.bucket(bi, h, w)
        y0, x0, y1, x1 = self.window(i, li, h, w, region)
        th, tw, k, ny, nx = b.th, b.tw, b.k, b.ny, b.nx
        if self.records:
            ntx = -(-w // tw)
            tiles = [("", ty * ntx + tx, ty, tx) for ty in range(y0 // th, -(-y1 // th))
                     for tx in range(x0 // tw, -(-x1 // tw))]
            return PlannedRead(i, li, b, slot, y0, x0, y1, x1, tiles,
                               (slot, int(row[6]), int(row[4]), -(-h // th) * ntx))
        srow, sl = divmod(slot, k)
        chunks = []
        for ty in range(y0 // th, -(-y1 // th)):
            for tx in range(x0 // tw, -(-x1 // tw)):
                chunks.append((f"{b.data_prefix}{srow}/0/{ty // ny}/{tx // nx}",
                               (sl * ny + ty % ny) * nx + tx % nx, ty, tx))
        return PlannedRead(i, li, b, slot, y0, x0, y1, x1, chunks)


def _integer(v: Any) -> int:
    """``v`` as an int when it is one (Python or numpy integer, not bool); else ValueError, so
    that ``0.5`` is refused rather than truncated to ``0``."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(v)
    return int(v)
