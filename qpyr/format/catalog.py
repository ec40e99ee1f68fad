"""The item catalog of a store (spec/format.md, "Catalog"): as the reader holds it, and as the
commit streams it out.

One row per item: its name, its source (dtype code, channels, height, width, level count) and,
per level, where its samples are stored and how well they reproduce the source.
:class:`Catalog` is the checked, in-memory table of a committed store; :class:`CatalogWriter`
writes the catalog arrays of one generation block by block (memory: one chunk per array) and
keeps each level's running ``level_summary``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qpyr.format.documents import encode_plain_chunk, plain_array_doc
from qpyr.format.manifest import DECISIONS, LEVEL_COLUMNS, SHARD_COLUMNS
from qpyr.io.storage import ObjectStore

__all__ = ["Catalog", "CatalogWriter"]


@dataclass(frozen=True, eq=False)
class Catalog:
    """A checked catalog (read-only by convention: the arrays are shared with the reader).

    Attributes:
        names: item names, in item order (unique).
        sources: ``int64 [N, 5]``: dtype code, channels, height, width, level count.
        levels: one ``int64 [N, columns]`` table per level (``-1`` rows: item lacks it); the
            columns are ``manifest.LEVEL_COLUMNS`` (1.x) or ``LEVEL_COLUMNS_2`` (2.0).
        quality: one ``float32 [N, 2]`` table per level: PSNR and RGB-SSIM (NaN: not measured).
        shards: format 2.0: one ``int64 [n, 4]`` table per level of its shard objects
            (``manifest.SHARD_COLUMNS``, sorted by task then shard); empty for 1.x.
        index: name -> item number.
    """

    names: list[str]
    sources: np.ndarray
    levels: list[np.ndarray]
    quality: list[np.ndarray]
    shards: list[np.ndarray] = field(default_factory=list)
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {n: i for i, n in enumerate(self.names)})


class _RowSink:
    """Writes one plain array (§4.3) chunk by chunk as rows arrive: memory is one chunk.

    Rows beyond the last item are zero padding (as :func:`~qpyr.format.documents.encode_plain_chunks`
    writes them), and an empty array still gets its one chunk, so the objects are byte-identical to
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
        self.os.write(f"{self.key}/c/{self.chunk}{self.rest}", encode_plain_chunk(self.buf))
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
        self.os.write(f"{self.key}/zarr.json", plain_array_doc(
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


class CatalogWriter:
    """Streams catalog rows into the catalog arrays of one generation (§7) under ``base``
    (:func:`~qpyr.format.manifest.catalog_path`), ``chunk_rows`` rows per chunk.

    Call :meth:`add` per block of items in item order, then :meth:`close` (writes the last
    chunks and the array documents). ``n`` is the item count so far, ``levels`` one sink per
    level seen, ``name_bytes`` the UTF-8 bytes of all names.
    """

    def __init__(self, ostore: ObjectStore, base: str, chunk_rows: int, columns: int = len(LEVEL_COLUMNS)):
        self.os, self.base, self.cr, self.columns = ostore, base, chunk_rows, columns
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
            tab = _RowSink(self.os, f"{self.base}/level_{j}", self.cr, (self.columns,), np.int64, ["item", "field"])
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
                dec = [DECISIONS[int(d)] for d in tab[present, 5]]
                q64 = (quals64[li] if quals64 is not None else q.astype(np.float64))[present]
                self.stats[li].add(shapes, q64[:, 0], q64[:, 1], eids[li], dec)
            else:
                sink.pad(m, -1)
                self.quality[li].pad(m, np.nan)
        self.n += m

    def close(self) -> None:
        for s in (self.names, self.offsets, self.sources, *self.levels, *self.quality):
            s.close()

    def write_shards(self, tables: list[np.ndarray]) -> None:
        """Format 2.0: the ``shards_{l}`` tables (``int64 [n, 4]`` each, sorted)."""
        for li, t in enumerate(tables):
            sink = _RowSink(self.os, f"{self.base}/shards_{li}", self.cr, (len(SHARD_COLUMNS),), np.int64,
                            ["shard", "field"])
            sink.extend(np.asarray(t, np.int64).reshape(-1, len(SHARD_COLUMNS)))
            sink.close()

    def level_summary(self, stored_bytes: dict[str, int]) -> list[dict[str, Any]]:
        """The manifest's ``level_summary``: one entry per level, with ``stored_bytes[str(level)]``
        (0 when absent) as the level's stored bytes."""
        return [st.summary(li, stored_bytes.get(str(li), 0)) for li, st in enumerate(self.stats)]
