"""Array layout: how items of one level are grouped into Zarr arrays, chunks and shards.

Items of a level are grouped into *buckets* by (encoding, channels, size class). A bucket is a
Zarr array ``[slots, C, H, W]``; each item occupies one slot, its valid extent ``h x w`` in the
top-left corner (the catalog records it). Size classes round a side up to a multiple of a
quarter octave (``max(16, 2**floor(log2 side) / 4)``), so padding is < 25 % per side and a
corpus of mixed sizes needs few buckets. Chunks are whole items for sides <= 512 and 256-px
tiles above (so region reads touch only intersecting tiles). Chunks wholly outside an item's
extent are never written (they read back as the fill value and cost nothing).

Shards hold ``items_per_shard`` whole slots; a packing task owns a contiguous, shard-aligned
range of ``slots_per_task`` slots in every bucket, so concurrent writers never share a shard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from qpyr.errors import InputError

__all__ = ["size_class", "tile_side", "BucketSpec", "record_class_path", "TARGET_SHARD_BYTES", "MAX_SHARD_SIDE"]

#: Target raw (uncompressed) bytes per shard when choosing items per shard.
TARGET_SHARD_BYTES = 32 * 2**20
#: Largest shard side in pixels along H and W (huge images get several shards per item).
MAX_SHARD_SIDE = 4096
#: Sides above this are chunked in tiles of :data:`TILE` pixels.
WHOLE_CHUNK_MAX = 512
TILE = 256


def size_class(side: int) -> int:
    """Round ``side`` up to its size class (multiple of 16, < 25 % larger for sides >= 64)."""
    if side < 1:
        raise InputError(f"Expected a positive side. Got {side}.")
    q = max(16, 2 ** int(math.floor(math.log2(side))) // 4)
    return -(-side // q) * q


def tile_side(cls_side: int) -> int:
    """Chunk side for a size class."""
    return cls_side if cls_side <= WHOLE_CHUNK_MAX else TILE


def record_class_path(level: int, encoding_id: str, dtype: str, channels: int) -> str:
    """Format 2.0: the key of a record class (bucket entry without geometry, spec/format.md §8.6)."""
    return f"levels/{level}/{encoding_id}/{dtype}_c{channels}"


@dataclass(frozen=True)
class BucketSpec:
    """Geometry of one bucket array. Deterministic from its key, so independent writers agree."""

    level: int
    encoding_id: str
    channels: int
    height: int  # size class along H (logical samples)
    width: int   # size class along W (logical samples, before nibble packing)
    packed: bool
    dtype: str   # numpy name of the stored sample type (lossless levels keep the source's)
    slots_per_task: int

    @property
    def path(self) -> str:
        return f"levels/{self.level}/{self.encoding_id}/{self.dtype}_c{self.channels}_h{self.height}_w{self.width}"

    @property
    def itemsize(self) -> int:
        return int(np.dtype(self.dtype).itemsize)

    @property
    def chunk_hw(self) -> tuple[int, int]:
        return tile_side(self.height), tile_side(self.width)

    @property
    def stored_width(self) -> int:
        return (self.width + 1) // 2 if self.packed else self.width

    @property
    def stored_chunk_w(self) -> int:
        tw = self.chunk_hw[1]
        return (tw + 1) // 2 if self.packed else tw

    @property
    def shard_hw(self) -> tuple[int, int]:
        th, tw = self.chunk_hw
        sh = min(-(-self.height // th) * th, max(th, MAX_SHARD_SIDE // th * th))
        sw = min(-(-self.width // tw) * tw, max(tw, MAX_SHARD_SIDE // tw * tw))
        return sh, sw

    @property
    def items_per_shard(self) -> int:
        sh, sw = self.shard_hw
        raw = self.channels * sh * sw * self.itemsize / (2 if self.packed else 1)
        k = max(1, int(TARGET_SHARD_BYTES // max(raw, 1)))
        k = 2 ** int(math.floor(math.log2(k)))
        return min(k, self.slots_per_task)

    @property
    def task_slots(self) -> int:
        """Slots each task owns in this bucket (a multiple of items_per_shard)."""
        k = self.items_per_shard
        return -(-self.slots_per_task // k) * k

    @property
    def chunks_per_shard(self) -> tuple[int, int, int]:
        """(items, tile rows, tile cols) of inner chunks in one shard."""
        th, _ = self.chunk_hw
        sh, sw = self.shard_hw
        return self.items_per_shard, sh // th, sw // self.chunk_hw[1]

    @property
    def shard_grid_hw(self) -> tuple[int, int]:
        sh, sw = self.shard_hw
        return -(-self.height // sh), -(-self.width // sw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "level": self.level, "encoding": self.encoding_id,
            "channels": self.channels, "height": self.height, "width": self.width,
            "packed": self.packed, "dtype": self.dtype, "slots_per_task": self.slots_per_task,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BucketSpec:
        b = cls(
            level=int(d["level"]), encoding_id=str(d["encoding"]), channels=int(d["channels"]),
            height=int(d["height"]), width=int(d["width"]), packed=bool(d["packed"]),
            dtype=str(d["dtype"]), slots_per_task=int(d["slots_per_task"]),
        )
        return b

    @classmethod
    def for_record(cls, d: dict[str, Any], height: int, width: int) -> BucketSpec:
        """Format 2.0: the geometry of an ``height x width`` record of record class ``d`` — the
        size classes of its sides (§8.1), as the writer chose them; no slots."""
        return cls(level=int(d["level"]), encoding_id=str(d["encoding"]), channels=int(d["channels"]),
                   height=size_class(height), width=size_class(width), packed=bool(d["packed"]),
                   dtype=str(d["dtype"]), slots_per_task=1)

    @property
    def record_class(self) -> dict[str, Any]:
        """Format 2.0: the manifest entry of this geometry's record class (without counts)."""
        return {"path": record_class_path(self.level, self.encoding_id, self.dtype, self.channels),
                "level": self.level, "encoding": self.encoding_id, "channels": self.channels,
                "packed": self.packed, "dtype": self.dtype}

    # -- chunk addressing ------------------------------------------------------------
    def chunk_location(self, slot: int, ty: int, tx: int) -> tuple[str, int]:
        """(shard key relative to the array, flat inner-chunk index) of tile (ty, tx) of a slot."""
        k, ny, nx = self.chunks_per_shard
        sgy, sgx = ty // ny, tx // nx
        key = f"c/{slot // k}/0/{sgy}/{sgx}"
        inner = ((slot % k) * ny + (ty % ny)) * nx + (tx % nx)
        return key, inner

    @property
    def n_inner(self) -> int:
        k, ny, nx = self.chunks_per_shard
        return k * ny * nx

