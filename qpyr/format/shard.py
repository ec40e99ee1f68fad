"""Zarr v3 ``sharding_indexed`` shards, written and read directly.

A shard object is the concatenation of its encoded inner chunks followed by the index: ``n``
little-endian ``(offset, nbytes)`` uint64 pairs (C order over the shard's chunk grid; both
``2**64 - 1`` for a missing chunk) and the crc32c of those ``16 n`` bytes (4 bytes, little
endian). Every inner chunk ends with its own crc32c. This is byte-for-byte what zarr-python
reads and writes with ``index_location="end"`` and ``index_codecs=[bytes, crc32c]``.
"""

from __future__ import annotations

import google_crc32c
import numpy as np

from qpyr.errors import ChecksumError, FormatError

__all__ = ["MISSING", "crc32c", "add_crc", "strip_crc", "encode_shard", "index_nbytes", "parse_index"]

MISSING = np.uint64(2**64 - 1)


def crc32c(data: bytes | memoryview) -> int:
    return int(google_crc32c.value(bytes(data)))


def add_crc(data: bytes) -> bytes:
    """Append the crc32c of ``data`` (Zarr's ``crc32c`` codec)."""
    return data + crc32c(data).to_bytes(4, "little")


def strip_crc(data: bytes, where: str) -> bytes:
    """Check and remove a trailing crc32c; ``where`` names the chunk in the error."""
    if len(data) < 4:
        raise ChecksumError(f"{where}: {len(data)} bytes is too short to hold a crc32c.")
    body, stored = data[:-4], int.from_bytes(data[-4:], "little")
    if crc32c(body) != stored:
        raise ChecksumError(f"{where}: crc32c mismatch (the stored bytes were altered or truncated).")
    return body


def index_nbytes(n_chunks: int) -> int:
    return 16 * n_chunks + 4


def encode_shard(chunks: dict[int, bytes], n_chunks: int) -> bytes:
    """Build a shard from encoded inner chunks (flat index → bytes, crc included)."""
    index = np.full((n_chunks, 2), MISSING, dtype="<u8")
    parts: list[bytes] = []
    off = 0
    for i in sorted(chunks):
        b = chunks[i]
        index[i] = (off, len(b))
        parts.append(b)
        off += len(b)
    parts.append(add_crc(index.tobytes()))
    return b"".join(parts)


def parse_index(tail: bytes, n_chunks: int, shard_size: int, where: str) -> np.ndarray:
    """Parse and check a shard index (the last ``16 n + 4`` bytes of a shard).

    Returns ``[n, 2]`` uint64 (offset, nbytes) with ``MISSING`` rows for absent chunks. Raises
    :class:`ChecksumError` on a bad crc and :class:`FormatError` if an entry points outside
    the shard.
    """
    if len(tail) != index_nbytes(n_chunks):
        raise FormatError(f"{where}: shard of {shard_size} bytes is too short for its index.")
    body = strip_crc(tail, f"{where} (shard index)")
    idx = np.frombuffer(body, dtype="<u8").reshape(n_chunks, 2)
    present = idx[:, 0] != MISSING
    data_end = shard_size - index_nbytes(n_chunks)
    if present.any():
        ends = idx[present, 0] + idx[present, 1]
        if int(ends.max()) > data_end or (idx[present, 1] < 4).any():
            raise FormatError(f"{where}: shard index points outside the shard's data.")
    return idx
