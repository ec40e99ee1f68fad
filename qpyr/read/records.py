"""The I/O half of a read of a format-2.0 store: records to :class:`~qpyr.read.payload.LevelPayload` s.

A planned read names its record (task row, offset, length, tile count). Whole-record reads
(every single-tile level, and any read covering all of a level's tiles) fetch the record's
exact bytes in one ranged read; a region read of a multi-tile record fetches its header first,
then only the tiles it touches. Ranges of one batch are grouped by shard and merged where they
touch, so neighbouring records come in one request.

With a *shard buffer* (:meth:`RecordFetcher.buffer_shards`, what epoch-order readers use), a
shard is fetched whole, once, with one request, and the records of later reads are sliced
from it; the buffer holds at most the given number of bytes (least recently used shards go).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from qpyr.errors import FormatError
from qpyr.format import heap
from qpyr.format.catalog import Catalog
from qpyr.format.record import RecordShape
from qpyr.io.storage import ObjectStore
from qpyr.read.fetch import Fetcher
from qpyr.read.payload import LevelPayload
from qpyr.read.selection import PlannedRead

__all__ = ["RecordFetcher"]

#: A piece of a read: (task, shard, logical start, logical end) within the shard.
_Piece = tuple[int, int, int, int]


class RecordFetcher(Fetcher):
    """Fetches planned reads of a format-2.0 store (records in shards of ``shard_bytes``)."""

    def __init__(self, ostore: ObjectStore, catalog: Catalog, records: dict[str, Any]):
        super().__init__(ostore, catalog)
        self.S = int(records["shard_bytes"])
        self.M = int(records["task_shards"])
        self._buffer: OrderedDict[tuple[int, int, int], memoryview] = OrderedDict()
        self._buffer_bytes = 0
        self._buffer_max = 0
        self._buf_lock = threading.Lock()

    # ------------------------------------------------------------------ shard buffer
    def buffer_shards(self, max_bytes: int) -> None:
        """Fetch whole shards (one request each) and keep up to ``max_bytes`` of them (0: off)."""
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        with self._buf_lock:
            self._buffer_max = int(max_bytes)
            self._evict()

    def _evict(self) -> None:
        while self._buffer and self._buffer_bytes > self._buffer_max:
            _, v = self._buffer.popitem(last=False)
            self._buffer_bytes -= len(v)

    def key(self, level: int, task: int, j: int) -> str:
        return f"levels/{level}/c/{task}/{j}"

    def _used(self, r: PlannedRead, task: int, j: int) -> int:
        used = heap.used_of(self.catalog.shards[r.level], task, j, self.M)
        if used < 0:
            raise FormatError(f"{self.where(r)}: shard {self.key(r.level, task, j)} is not in the shard table.")
        return used

    def _whole_shards(self, r_of: dict[tuple[int, int, int], PlannedRead]) -> dict[tuple[int, int, int], memoryview]:
        """The used bytes of shards ``(level, task, j)``, from the buffer or fetched whole together."""
        out: dict[tuple[int, int, int], memoryview] = {}
        need = []
        with self._buf_lock:
            for k in r_of:
                hit = self._buffer.get(k)
                if hit is not None:
                    self._buffer.move_to_end(k)
                    out[k] = hit
                else:
                    need.append(k)
        if need:
            keys = [self.key(*k) for k in need]
            try:
                blobs = self._os.read_many(keys)
            except FileNotFoundError as e:
                raise FormatError(f"{self.where(r_of[need[0]])}: shard {e.args[0] if e.args else keys[0]} is missing.") from None
            for k, key, blob in zip(need, keys, blobs, strict=True):
                r = r_of[k]
                out[k] = heap.parse_frame(blob, self.S, self._used(r, k[1], k[2]), f"{self.where(r)}: shard {key}")
            with self._buf_lock:
                for k in need:
                    if k not in self._buffer:
                        self._buffer[k] = out[k]
                        self._buffer_bytes += len(out[k])
                self._evict()
        return out

    # ------------------------------------------------------------------ ranges
    def _get(self, wants: list[tuple[PlannedRead, int, int]]) -> list[bytes | memoryview]:
        """Bytes ``[a, b)`` of the task rows of each ``(read, a, b)``, in one batch."""
        pieces: list[list[_Piece]] = []
        for r, a, b in wants:
            task = _record(r)[0]
            pieces.append([(task, j, o0, o1) for j, o0, o1 in heap.pieces(a, b - a, self.S)])
        # (level, task, shard) -> a read that needs it (named in errors)
        r_of = {(r.level, p[0], p[1]): r for (r, _, _), ps in zip(wants, pieces, strict=True) for p in ps}
        if self._buffer_max > 0:
            got = self._whole_shards(r_of)
            return [_join([got[(r.level, t, j)][o0:o1] for t, j, o0, o1 in ps])
                    for (r, _, _), ps in zip(wants, pieces, strict=True)]
        # ranged reads: per shard, merge touching logical ranges, one request per merged range
        flat = sorted({(r.level, *p) for (r, _, _), ps in zip(wants, pieces, strict=True) for p in ps})
        merged: list[list[int]] = []
        for lv, t, j, o0, o1 in flat:
            if merged and merged[-1][:3] == [lv, t, j] and o0 <= merged[-1][4]:
                merged[-1][4] = max(merged[-1][4], o1)
            else:
                merged.append([lv, t, j, o0, o1])
        keys = [self.key(lv, t, j) for lv, t, j, _, _ in merged]
        spans = [heap.span(o0, o1) for *_, o0, o1 in merged]
        for (lv, t, j, _o0, o1) in merged:
            if o1 > self._used(r_of[(lv, t, j)], t, j):
                raise FormatError(f"{self.where(r_of[(lv, t, j)])}: record runs past shard {self.key(lv, t, j)}.")
        try:
            blobs = self._os.read_ranges(keys, [p0 for p0, _ in spans], [p1 for _, p1 in spans])
        except FileNotFoundError as e:
            key = str(e.args[0]) if e.args else keys[0]
            raise FormatError(f"{self.where(wants[0][0])}: shard {key} is missing.") from None
        logical: dict[tuple[int, int, int], list[Any]] = {}
        for (lv, t, j, o0, o1), key, (p0, p1), blob in zip(merged, keys, spans, blobs, strict=True):
            if len(blob) != p1 - p0:
                raise FormatError(f"{self.where(r_of[(lv, t, j)])}: shard {key} is truncated.")
            logical.setdefault((lv, t, j), []).append((o0, heap.unframe(blob, o0, o1)))
        out = []
        for (r, _, _), ps in zip(wants, pieces, strict=True):
            parts = []
            for t, j, o0, o1 in ps:
                for m0, data in logical[(r.level, t, j)]:
                    if m0 <= o0 and o1 - m0 <= len(data):
                        parts.append(memoryview(data)[o0 - m0:o1 - m0])
                        break
            out.append(_join(parts))
        return out

    # ------------------------------------------------------------------ fetch
    def fetch(self, reqs: list[PlannedRead], *, coefficients: bool = False, pin: bool = False,
              finish: Callable[[LevelPayload], Any] | None = None) -> list[Any]:
        shapes = [self._shape(r) for r in reqs]
        whole = [len(r.chunks) == _record(r)[3] or s.header_nbytes == 0 for r, s in zip(reqs, shapes, strict=True)]
        # region reads of multi-tile records: the header first (tile table, parameters)
        partial = [i for i, w in enumerate(whole) if not w]
        headers = dict(zip(partial, self._get([(reqs[i], _record(reqs[i])[1], _record(reqs[i])[1] + shapes[i].header_nbytes)
                                               for i in partial]), strict=True)) if partial else {}
        wants: list[tuple[PlannedRead, int, int]] = []
        # per read: (chunk index, which of its ranges, start in that range's bytes, end)
        layout: list[list[tuple[int, int, int, int]]] = []
        nwant: list[int] = []  # ranges per read
        params: list[bytes] = []
        for i, r in enumerate(reqs):
            _task, off, nbytes, _n = _record(r)
            if whole[i]:
                wants.append((r, off, off + nbytes))
                layout.append([])
                nwant.append(1)
                params.append(b"")
                continue
            p, offs = shapes[i].parse_header(headers[i], nbytes, self.where(r))
            params.append(p)
            # the window's tiles, one range per run of consecutive tiles (a tile row of it)
            runs = _runs(sorted(c[1] for c in r.chunks))
            for first, last in runs:
                wants.append((r, off + int(offs[first]), off + int(offs[last + 1])))
            lay = []
            for ci, (_, inner, _, _) in enumerate(r.chunks):
                k = next(k for k, (f, z) in enumerate(runs) if f <= inner <= z)
                base = int(offs[runs[k][0]])
                lay.append((ci, k, int(offs[inner]) - base, int(offs[inner + 1]) - base))
            layout.append(lay)
            nwant.append(len(runs))
        blobs = self._get(wants)
        outs = []
        at = 0
        for i, r in enumerate(reqs):
            mine = [memoryview(b) for b in blobs[at:at + nwant[i]]]
            at += nwant[i]
            if whole[i]:
                mv = mine[0]
                p, offs = shapes[i].parse_header(mv[:shapes[i].header_nbytes], len(mv), self.where(r))
                params[i] = p
                layout[i] = [(ci, 0, int(offs[inner]), int(offs[inner + 1])) for ci, (_, inner, _, _) in enumerate(r.chunks)]
            o = self._start_payload(r, coefficients, pin)
            for ci, k, a, b in layout[i]:
                self._check_place(r, ci, mine[k][a:b], o, f"record of task row {_record(r)[0]}")
            payload = self._finish_payload(r, o, self._record_params(r, params[i]))
            # finished while its samples are still in cache (a batch's are not, by its end)
            outs.append(payload if finish is None else finish(payload))
        return outs

    def _shape(self, r: PlannedRead) -> RecordShape:
        b = r.b
        h, w = self.catalog.levels[r.level][r.i, 2:4].tolist()
        return RecordShape.of(b.enc.quantizer, b.spec.channels, h, w, (b.th, b.tw))

    def _record_params(self, r: PlannedRead, raw: bytes | memoryview) -> torch.Tensor | None:
        b = r.b
        if b.params_shape is None:
            return None
        h, w = self.catalog.levels[r.level][r.i, 2:4].tolist()
        ps = b.enc.quantizer.param_shape(b.spec.channels, h, w)
        return torch.from_numpy(np.frombuffer(bytes(raw), "<f4").reshape(ps).astype(np.float32))


def _record(r: PlannedRead) -> tuple[int, int, int, int]:
    """``(task, offset, bytes, tiles)`` of a format-2.0 planned read."""
    if r.record is None:  # pragma: no cover - the 2.0 planner always sets it
        raise FormatError("internal: a format 2.0 read without a record address")
    return r.record


def _runs(tiles: list[int]) -> list[tuple[int, int]]:
    """``[(first, last)]`` runs of consecutive numbers in sorted ``tiles``."""
    out: list[tuple[int, int]] = []
    for t in tiles:
        if out and out[-1][1] == t - 1:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def _join(parts: list[Any]) -> bytes | memoryview:
    return parts[0] if len(parts) == 1 else b"".join(parts)
