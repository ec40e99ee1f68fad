"""Shard objects of a format-2.0 record heap (spec/format.md §8, "Records and shards").

The records of one level are bytes in the rows of a Zarr ``uint8 [tasks, task_shards *
shard_bytes]`` array (row ``t``: pack task ``t``'s records, back to back), chunked by
``shard_bytes``: each chunk object is a *shard*. A shard object is one standard zstd frame
whose content is exactly ``shard_bytes`` bytes: the shard's used bytes as *raw* (stored) blocks of
:data:`BLOCK` bytes, then *RLE* blocks of zeros up to ``shard_bytes``. So

* a stock Zarr reader decodes it with its ``zstd`` codec (the array's codec chain is
  ``bytes`` + ``zstd``) and sees the records at their offsets, zeros after them;
* the object costs its used bytes plus 3 bytes per 128 KiB (block headers), 9 bytes of frame
  header and 4 bytes per 128 KiB of unused tail: no padding is stored;
* logical byte ``x < used`` sits at physical byte ``HEADER + 3 * (x // BLOCK + 1) + x``, so a
  reader fetches any record with one ranged read of exactly its bytes (plus the block headers
  inside it, which :func:`unframe` removes).
"""

from __future__ import annotations

import numpy as np

from qpyr.errors import FormatError

__all__ = ["BLOCK", "HEADER", "encode_frame", "span", "unframe", "parse_frame", "pieces", "frame_nbytes", "used_of"]

#: Bytes of one stored (raw) block: zstd's largest block.
BLOCK = 1 << 17
#: Frame header: magic (4) + frame header descriptor (1, single segment, 4-byte content size) + content size (4).
HEADER = 9
_MAGIC = (0xFD2FB528).to_bytes(4, "little")
_FHD = 0b10100000  # Frame_Content_Size_flag = 2 (4 bytes), Single_Segment_flag = 1, no checksum, no dictionary
_RAW, _RLE = 0, 1


def _block_header(kind: int, size: int, last: bool) -> bytes:
    return (int(last) | (kind << 1) | (size << 3)).to_bytes(3, "little")


def frame_nbytes(used: int, shard_bytes: int) -> int:
    """Size of the shard object holding ``used`` bytes."""
    raw = -(-used // BLOCK)
    rle = -(-(shard_bytes - used) // BLOCK)
    return HEADER + 3 * raw + used + 4 * rle


def encode_frame(used: bytes | bytearray | memoryview, shard_bytes: int) -> bytes:
    """The shard object for ``used`` bytes (``0 < len(used) <= shard_bytes < 2**32``)."""
    n = len(used)
    if not 0 < n <= shard_bytes < 2**32:
        raise ValueError(f"a shard holds 1..{shard_bytes} bytes; got {n}")
    mv = memoryview(used)
    parts: list[bytes | memoryview] = [_MAGIC, bytes([_FHD]), shard_bytes.to_bytes(4, "little")]
    tail = shard_bytes - n
    for x in range(0, n, BLOCK):
        size = min(BLOCK, n - x)
        parts.append(_block_header(_RAW, size, last=tail == 0 and x + size == n))
        parts.append(mv[x:x + size])
    while tail > 0:
        size = min(BLOCK, tail)
        tail -= size
        parts.append(_block_header(_RLE, size, last=tail == 0))
        parts.append(b"\0")
    return b"".join(parts)


def span(o0: int, o1: int) -> tuple[int, int]:
    """Physical byte range ``[p0, p1)`` of logical bytes ``[o0, o1)`` (``o0 < o1 <= used``) of a shard."""
    return HEADER + 3 * (o0 // BLOCK + 1) + o0, HEADER + 3 * ((o1 - 1) // BLOCK + 1) + o1


def unframe(blob: bytes | memoryview, o0: int, o1: int) -> bytes | memoryview:
    """Logical bytes ``[o0, o1)`` from ``blob`` = the physical range :func:`span` gives for them."""
    first, last = o0 // BLOCK, (o1 - 1) // BLOCK
    if first == last:
        return blob
    mv = memoryview(blob)
    parts = []
    a = 0
    for b in range(first, last + 1):
        lo = max(o0, b * BLOCK)
        hi = min(o1, (b + 1) * BLOCK)
        parts.append(mv[a:a + hi - lo])
        a += hi - lo + 3  # skip the next block's header
    return b"".join(parts)


def parse_frame(obj: bytes | memoryview, shard_bytes: int, used: int, where: str) -> memoryview:
    """The ``used`` logical bytes of a whole shard object, its framing checked exactly as
    :func:`encode_frame` writes it (anything else is a :class:`FormatError` naming ``where``)."""
    mv = memoryview(obj)
    if len(mv) != frame_nbytes(used, shard_bytes):
        raise FormatError(f"{where}: shard object is {len(mv)} bytes; a shard of {used} used bytes is "
                          f"{frame_nbytes(used, shard_bytes)}.")
    if bytes(mv[:4]) != _MAGIC or mv[4] != _FHD or int.from_bytes(mv[5:9], "little") != shard_bytes:
        raise FormatError(f"{where}: not a qpyr shard frame (zstd header of stored blocks of {shard_bytes} bytes).")
    out = bytearray(used)
    p, x = HEADER, 0
    tail = shard_bytes - used
    while x < used:
        size = min(BLOCK, used - x)
        if bytes(mv[p:p + 3]) != _block_header(_RAW, size, last=tail == 0 and x + size == used):
            raise FormatError(f"{where}: stored block at logical byte {x} has a wrong header.")
        out[x:x + size] = mv[p + 3:p + 3 + size]
        p += 3 + size
        x += size
    while tail > 0:
        size = min(BLOCK, tail)
        tail -= size
        if bytes(mv[p:p + 4]) != _block_header(_RLE, size, last=tail == 0) + b"\0":
            raise FormatError(f"{where}: the zero tail after {used} used bytes has a wrong block header.")
        p += 4
    return memoryview(out)


def pieces(offset: int, length: int, shard_bytes: int) -> list[tuple[int, int, int]]:
    """``[(shard j, o0, o1)]``: where record bytes ``[offset, offset + length)`` of a task's row lie."""
    out = []
    x, end = offset, offset + length
    while x < end:
        j = x // shard_bytes
        hi = min(end, (j + 1) * shard_bytes)
        out.append((j, x - j * shard_bytes, hi - j * shard_bytes))
        x = hi
    return out


def used_of(table: np.ndarray, task: int, shard: int, task_shards: int) -> int:
    """Used bytes of shard ``(task, shard)`` from a level's shard table (``int64 [n, 4]``:
    task, shard, used bytes, object bytes; sorted), or -1 when the table lacks it."""
    key = task * task_shards + shard
    keys = table[:, 0] * task_shards + table[:, 1]
    k = int(np.searchsorted(keys, key))
    if k < len(keys) and keys[k] == key:
        return int(table[k, 2])
    return -1
