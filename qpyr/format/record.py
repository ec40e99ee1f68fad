"""The record of one item's level (format 2.0, spec/format.md §8.2 "Records").

A record is self-delimiting given what the catalog and the bucket already say (the level's
``h x w``, the tile size, the quantizer's parameter shape)::

    record = params ‖ table ‖ hcrc ‖ tile_0 ‖ tile_1 ‖ …      (tiles in row-major order)

* ``params``: the item's quantization parameters, float32 little endian, C order, of shape
  ``quantizer.param_shape(C, h, w)`` (absent when the encoding has none);
* ``table``: for more than one tile, one uint32 LE per tile: its length in bytes (absent for one);
* ``hcrc``: crc32c of ``params ‖ table`` (present when either is);
* ``tile_i``: the chunk codec's bytes followed by their crc32c, exactly a 1.x inner chunk.

So a single-tile level without parameters (every default-policy level up to 512 px) is just its
chunk bytes, and a region read of a large level fetches the header, then only the tiles it touches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qpyr.errors import ChecksumError, FormatError
from qpyr.format.shard import crc32c

__all__ = ["RecordShape", "build_record"]


@dataclass(frozen=True)
class RecordShape:
    """What a reader knows of a record before fetching it: its tile count and parameter bytes."""

    n_tiles: int
    params_nbytes: int

    @classmethod
    def of(cls, quantizer: Any, channels: int, h: int, w: int, tile_hw: tuple[int, int]) -> RecordShape:
        """The shape of the record of an ``h x w`` level cut in ``tile_hw`` tiles, whose encoding
        has ``quantizer`` (its ``param_shape(C, h, w)`` gives the parameters, None for none)."""
        th, tw = tile_hw
        ps = quantizer.param_shape(channels, h, w)
        return cls(-(-h // th) * -(-w // tw), 4 * int(np.prod(ps)) if ps is not None else 0)

    @property
    def header_nbytes(self) -> int:
        table = 4 * self.n_tiles if self.n_tiles > 1 else 0
        body = self.params_nbytes + table
        return body + 4 if body else 0

    def parse_header(self, header: bytes | memoryview, length: int, where: str) -> tuple[bytes, np.ndarray]:
        """``(params bytes, tile start offsets [n_tiles + 1])`` of a record of ``length`` bytes whose
        first :attr:`header_nbytes` bytes are ``header``; offsets are relative to the record."""
        hn = self.header_nbytes
        if length < hn + 4 * self.n_tiles:
            raise FormatError(f"{where}: record of {length} bytes is too short for its {self.n_tiles} tile(s).")
        if len(header) < hn:
            raise FormatError(f"{where}: record header is truncated.")
        if hn:
            body = bytes(header[:hn - 4])
            if crc32c(body) != int.from_bytes(header[hn - 4:hn], "little"):
                raise ChecksumError(f"{where}: record header crc32c mismatch (the stored bytes were altered).")
        else:
            body = b""
        params = body[:self.params_nbytes]
        if self.n_tiles > 1:
            lens = np.frombuffer(body, "<u4", self.n_tiles, self.params_nbytes).astype(np.int64)
            if (lens < 4).any() or int(lens.sum()) != length - hn:
                raise FormatError(f"{where}: record tile table does not add up to the record's {length} bytes.")
        else:
            lens = np.array([length - hn], np.int64)
        offs = np.empty(self.n_tiles + 1, np.int64)
        offs[0] = hn
        np.cumsum(lens, out=offs[1:])
        offs[1:] += hn
        return params, offs


def build_record(tiles: list[bytes], params: np.ndarray | None) -> bytes:
    """The record of ``tiles`` (row-major, crc included) and ``params`` (float32 or None)."""
    head = b"" if params is None else np.ascontiguousarray(params, "<f4").tobytes()
    if len(tiles) > 1:
        head += np.array([len(t) for t in tiles], "<u4").tobytes()
    if head:
        head += crc32c(head).to_bytes(4, "little")
    return head + b"".join(tiles)
