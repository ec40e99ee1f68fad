"""The chunk header of ``qpyr.dct``: magic, version, flags, shape and quantisation tables
(spec/codecs/dct.md §3), written by the encoder and parsed and checked by the decoder."""

from __future__ import annotations

import struct

import numpy as np

from qpyr.codecs.dct._tables import ijg_tables
from qpyr.errors import CodecError

NAME = "qpyr.dct"
MAGIC = b"QDCT"
VERSION = 2  # 1: ctx entropy only (flags bits 3, 4 zero); 2 adds the fast mode and default models
VERSION_JFIF = 3  # 3 adds flags bit 6 (entropy="jfif"); written only by jfif streams
VERSION_CTX = 4  # 4: the ctx mode's compiled rANS coder (symbol order, integer models); written by ctx streams
_FLAG_JFIF = 64
_FLAG_ABBREV = 128  # with bit 6: the JPEG stream omits DQT and DHT (header tables, standard Huffman tables)


def _pack_header(flags: int, c: int, h: int, w: int, quality: int | str, tables: tuple[tuple[int, ...], ...] | None) -> bytes:
    """The header of a chunk: version 3 when ``flags`` has the ``jfif`` bit, 2 with the
    ``fast`` bit, else (``ctx``) 4; the
    ``quality`` byte, or (with ``tables``) their count and the tables."""
    version = VERSION_JFIF if flags & _FLAG_JFIF else (VERSION if flags & 8 else VERSION_CTX)
    head = MAGIC + struct.pack("<BBIIH", version, flags, h, w, c)
    if tables is None:
        head += struct.pack("<B", quality)
    else:
        head += struct.pack("<B", len(tables))
        head += np.array(tables, dtype="<u2").tobytes()
    return head


def _parse_header(data: bytes) -> tuple[int, int, int, int, np.ndarray, int]:
    """``(flags, C, H, W, tables uint16 [2, 64], body offset)``; the version is ``data[4]``."""
    if len(data) < 17 or data[:4] != MAGIC:
        raise CodecError(f"Expected {NAME} data starting with {MAGIC!r}. Got {data[:4]!r}.")
    version, flags, h, w, c = struct.unpack_from("<BBIIH", data, 4)
    if version not in (1, VERSION, VERSION_JFIF, VERSION_CTX):
        raise CodecError(f"Expected {NAME} format version 1..{VERSION_CTX}. Got {version}.")
    allowed = {1: 7, VERSION: 63, VERSION_JFIF: 255, VERSION_CTX: 55}[version]
    if (flags & ~allowed or (flags & 24) == 24 or (flags & 36) == 36 or (flags & _FLAG_JFIF and flags & 24)
            or (flags & _FLAG_ABBREV and not flags & _FLAG_JFIF)):
        raise CodecError(f"Corrupt {NAME} header: unknown flags {flags:#x} for version {version}.")
    pos = 16
    if flags & 4:
        if len(data) < pos + 1:
            raise CodecError(f"Corrupt {NAME} header: truncated.")
        n = data[pos]
        pos += 1
        if n not in (1, 2) or len(data) < pos + 128 * n:
            raise CodecError(f"Corrupt {NAME} header: bad table count {n} or truncated tables.")
        t = np.frombuffer(data, dtype="<u2", count=64 * n, offset=pos).reshape(n, 64)
        if t.min() < 1:
            raise CodecError(f"Corrupt {NAME} header: zero quantisation step.")
        tables = np.concatenate([t, t]) if n == 1 else t.copy()
        pos += 128 * n
    else:
        if len(data) < pos + 1:
            raise CodecError(f"Corrupt {NAME} header: truncated.")
        q = data[pos]
        pos += 1
        if not 1 <= q <= 100:
            raise CodecError(f"Corrupt {NAME} header: quality {q} outside 1..100.")
        tables = ijg_tables(q, "ssim" if flags & 32 else "annexk")
    return flags, c, h, w, tables.astype(np.uint16), pos



def chunk_quality(data: bytes) -> int | None:
    """The quality a ``qpyr.dct`` chunk was encoded with (its header byte), or ``None`` for
    chunks with explicit tables. Lets tools report the per-item quality of ``"chunk"`` buckets."""
    flags, _c, _h, _w, _tables, _pos = _parse_header(bytes(data[:17 + 256]))
    return None if flags & 4 else int(data[16])
