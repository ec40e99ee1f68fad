"""The I/O half of a read: planned chunks to :class:`~qpyr.read.payload.LevelPayload` s on the CPU.

Shard indexes and parameter chunks are cached per open store (the missing ones fetched in one
batch), every chunk's byte range goes out in one batch with adjacent ranges coalesced (s3fs
runs the batch concurrently), each range is crc32c-checked, decoded by the chunk codec and
staged into the payload's samples (or kept as a split codec's coefficients).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from qpyr.codecs.quant import Granularity, value_scale_for
from qpyr.errors import ChecksumError, FormatError, QpyrError
from qpyr.format import manifest as fmt
from qpyr.format.catalog import Catalog
from qpyr.format.shard import MISSING, crc32c, parse_index
from qpyr.io.storage import ObjectStore
from qpyr.read.bucket import Bucket
from qpyr.read.payload import LevelPayload
from qpyr.read.selection import PlannedRead

__all__ = ["Fetcher"]

_CPU = torch.device("cpu")

#: Shard indexes kept per open store (a 256-item shard's index is 4 KiB).
_INDEX_CACHE = 4096
#: Parameter chunks (one per shard row) kept per open store.
_PARAM_CACHE = 256


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


class Fetcher:
    """Fetches planned reads from ``ostore`` for a store whose items are in ``catalog``;
    holds the store's shard-index and parameter caches (shared by threads)."""

    def __init__(self, ostore: ObjectStore, catalog: Catalog):
        self._os = ostore
        self.catalog = catalog
        self._shard_index: OrderedDict[str, list[list[int]]] = OrderedDict()
        self._param_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()

    def where(self, r: PlannedRead) -> str:
        """``"<url>: item '<name>' level <l>"``: how errors name a read."""
        return f"{self._os.url}: item {self.catalog.names[r.i]!r} level {r.level}"

    # ------------------------------------------------------------------ caches
    def _load_indexes(self, need: dict[str, tuple[Bucket, PlannedRead]]) -> dict[str, list[list[int]]]:
        keys = list(need)
        try:
            tails = self._os.read_ranges(keys, [-need[k][0].index_nbytes for k in keys], [None] * len(keys))
        except FileNotFoundError as e:
            key = str(e.args[0]) if e.args else "?"
            r = need[key][1] if key in need else next(iter(need.values()))[1]
            raise FormatError(f"{self.where(r)}: shard {key} is missing.") from None
        got = {}
        for key, tail in zip(keys, tails, strict=True):
            b, r = need[key]
            # a short tail is the whole (truncated) shard; otherwise the entries are checked
            # against the chunk ranges actually returned
            size = len(tail) if len(tail) < b.index_nbytes else 2**63
            got[key] = parse_index(tail, b.n_inner, size, f"{self.where(r)} shard {key}").tolist()
        with self._cache_lock:
            for key, idx in got.items():
                self._shard_index[key] = idx
                if len(self._shard_index) > _INDEX_CACHE:
                    self._shard_index.popitem(last=False)
        return got

    def _indexes(self, reqs: list[PlannedRead]) -> dict[str, list[list[int]]]:
        """Shard indexes of ``reqs``: from the cache, the rest fetched in one batch (held
        locally, so a batch touching more shards than the cache holds still has all of them)."""
        idx_of: dict[str, list[list[int]]] = {}
        need: dict[str, tuple[Bucket, PlannedRead]] = {}
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
        return idx_of

    def _params(self, reqs: list[PlannedRead]) -> dict[str, torch.Tensor]:
        """Parameter chunks (one per shard row) of ``reqs``, from the cache or fetched together."""
        out: dict[str, torch.Tensor] = {}
        need: dict[str, tuple[Bucket, PlannedRead]] = {}
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
            raise FormatError(f"{self.where(next(iter(need.values()))[1])}: quantization parameters are "
                              f"missing ({e.args[0] if e.args else keys[0]}).") from None
        for key, data in zip(keys, blobs, strict=True):
            b, r = need[key]
            arr = fmt.decode_plain_chunk(data, (b.k,) + b.params_shape, np.dtype(np.float32),  # type: ignore[operator]
                                         f"{self.where(r)} qparams")
            out[key] = torch.from_numpy(np.array(arr, dtype=np.float32))
        with self._cache_lock:
            for key in keys:
                self._param_cache[key] = out[key]
                if len(self._param_cache) > _PARAM_CACHE:
                    self._param_cache.popitem(last=False)
        return out

    # ------------------------------------------------------------------ fetch
    def fetch(self, reqs: list[PlannedRead], *, coefficients: bool = False, pin: bool = False,
              finish: Callable[[LevelPayload], Any] | None = None) -> list[Any]:
        """One payload per planned read, all byte ranges fetched in one batch.

        ``coefficients=True`` keeps split codecs' output as coefficients; ``pin=True`` stages
        samples in pinned memory (where there is a GPU). ``finish`` is applied to each payload
        as soon as it is complete (2.0 stores: right after its entropy decoding, while its
        samples are in cache) and its results are returned instead.
        """
        idx_of = self._indexes(reqs)
        params = self._params(reqs)
        # byte spans of every chunk, grouped by shard, then coalesced where they touch
        by_shard: dict[str, list[tuple[int, int, int, int]]] = {}
        for ri, r in enumerate(reqs):
            for ci, (key, inner, ty, tx) in enumerate(r.chunks):
                off, nb = idx_of[key][inner]
                if off == MISSING:
                    raise FormatError(f"{self.where(r)}: chunk ({ty}, {tx}) is missing from shard {key}.")
                if nb > r.b.max_chunk_nbytes:
                    raise FormatError(f"{self.where(r)}: chunk ({ty}, {tx}) of shard {key} claims {nb} bytes; a chunk "
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
                raise FormatError(f"{self.where(reqs[g[0][2]])}: shard {key} is truncated.")
            mv = memoryview(blob)
            for off, nb, ri, ci in g:
                a = off - base
                self._check_place(reqs[ri], ci, mv[a:a + nb], outs[ri], f"shard {key}")
        done = [self._finish_payload(r, o, self._slot_params(r, params)) for r, o in zip(reqs, outs, strict=True)]
        return done if finish is None else [finish(p) for p in done]

    # ------------------------------------------------------------------ staging
    def _check_place(self, r: PlannedRead, ci: int, chunk: memoryview, o: dict[str, Any], where: str) -> None:
        """crc32c-check one encoded chunk (codec bytes + crc) and decode it into payload ``o``."""
        nb = len(chunk)
        view = chunk[:nb - 4]
        body: Any = view if (_crc_buffer is not None and r.b.takes_buffer) else bytes(view)
        crc = _crc_buffer(view) if _crc_buffer is not None else crc32c(body)
        if nb < 4 or crc != int.from_bytes(chunk[nb - 4:nb], "little"):
            _, _, ty, tx = r.chunks[ci]
            raise ChecksumError(f"{self.where(r)} chunk ({ty}, {tx}) of {where}: crc32c mismatch "
                                "(the stored bytes were altered or truncated).")
        self._place(r, ci, body, o)

    def _slot_params(self, r: PlannedRead, params_of: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Format 1.x: the parameters of ``r``'s slot, cropped to the item's blocks."""
        b = r.b
        if b.params_shape is None:
            return None
        params = params_of[b.params_key(r.slot)][r.slot % b.k].clone()
        if b.enc.quantizer.granularity is Granularity.BLOCK:
            bs = b.enc.quantizer.block
            h, w = self.catalog.levels[r.level][r.i, 2:4].tolist()
            params = params[:, :, :-(-h // bs), :-(-w // bs)].contiguous()
        return params

    def _start_payload(self, r: PlannedRead, coefficients: bool, pin: bool) -> dict[str, Any]:
        b = r.b
        if coefficients and b.split is not None:
            return {"tiles": []}
        x0s, x1s = (r.x0 // 2, -(-r.x1 // 2)) if b.spec.packed else (r.x0, r.x1)
        # pinned staging only where there is a GPU to copy to (pinning needs the CUDA runtime)
        t = torch.empty((b.spec.channels, r.y1 - r.y0, x1s - x0s), dtype=b.torch_dtype,
                        pin_memory=pin and torch.cuda.is_available())
        return {"samples": t, "np": t.numpy(), "x0s": x0s}

    def _place(self, r: PlannedRead, ci: int, body: bytes, o: dict[str, Any]) -> None:
        b = r.b
        _, _, ty, tx = r.chunks[ci]
        try:
            if "tiles" in o:
                co = b.split.decode_coefficients(body, b.chunk_shape[1:])  # type: ignore[union-attr]
                o["tiles"].append((ty * b.th - r.y0, tx * b.tw - r.x0, co))
                return
            tile: torch.Tensor | None = None
            if b.split is not None:
                # split codecs reconstruct to a tensor that is the payload itself when one
                # chunk covers the window, and is copied into the staging buffer otherwise
                co = b.split.decode_coefficients(body, b.chunk_shape[1:])
                tile = b.split.reconstruct(co, _CPU, b.torch_dtype)
                chunk = tile.numpy()[None]
            else:
                chunk = b.enc.codec.decode(body, b.chunk_shape, b.dtype)
        except QpyrError as e:
            raise type(e)(f"{self.where(r)} chunk ({ty}, {tx}): {e}") from e
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

    def _finish_payload(self, r: PlannedRead, o: dict[str, Any], params: torch.Tensor | None) -> LevelPayload:
        b = r.b
        common = dict(quantizer=b.enc.quantizer, value_scale=_VALUE_SCALES[int(self.catalog.sources[r.i, 0])],
                      height=r.y1 - r.y0, width=r.x1 - r.x0, origin=(r.y0, r.x0), stored_dtype=b.dtype_name,
                      channels=b.spec.channels, params=params, pruned=b.pruned)
        if "tiles" in o:
            return LevelPayload(**common, codec=b.split, tiles=tuple(o["tiles"]),  # type: ignore[arg-type]
                                tile_shape=b.chunk_shape[1:])
        return LevelPayload(**common, samples=o["samples"], col=r.x0 - 2 * o["x0s"] if b.spec.packed else 0)  # type: ignore[arg-type]
