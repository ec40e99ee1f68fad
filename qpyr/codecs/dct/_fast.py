"""The ``fast`` entropy mode of ``qpyr.dct``: one zstd frame over frequency-major int8
coefficient planes (spec/codecs/dct.md §6.5)."""

from __future__ import annotations

import struct
import threading
from typing import Any

import numpy as np

from qpyr.codecs.dct._contexts import _dc_residual, _dc_undo
from qpyr.codecs.dct._header import NAME
from qpyr.codecs.dct._tables import _MAXC, ZIGZAG
from qpyr.errors import CodecError

_ZSTD_LEVEL = 19
_ESC = -128  # int8 AC value marking an escape (|v| > 127); the value follows in the escape list


def _fast_encode(coefs: list[np.ndarray]) -> bytes:
    import zstandard

    parts: list[bytes] = []
    escapes: list[np.ndarray] = []
    for q in coefs:
        by, bx, _ = q.shape
        z = q.reshape(by * bx, 64)[:, ZIGZAG].T  # [64 zigzag, n]
        r = _dc_residual(z[0].reshape(by, bx).astype(np.int64)).ravel().astype("<i2")
        parts.append(r.view(np.uint8).reshape(-1, 2).T.tobytes())  # low bytes, then high bytes
        ac = z[1:]
        rows = np.flatnonzero((ac != 0).any(axis=1))
        k = int(rows[-1]) + 1 if rows.size else 0
        ac = ac[:k]
        big = np.abs(ac) > 127
        parts.append(bytes([k]) + np.where(big, _ESC, ac).astype(np.int8).tobytes())
        escapes.append(ac[big])
    esc = np.concatenate(escapes).astype("<i2")
    parts.append(struct.pack("<I", esc.size) + esc.tobytes())
    raw = b"".join(parts)
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=True).compress(raw)


_TLS = threading.local()


def _zstd_decompressor() -> Any:
    """One ``ZstdDecompressor`` per thread (creating one is a sizeable part of a small chunk's
    decode; instances must not be shared between threads)."""
    d = getattr(_TLS, "zstd_d", None)
    if d is None:
        import zstandard

        d = _TLS.zstd_d = zstandard.ZstdDecompressor()
    return d


def _fast_decode(data: bytes, dims: list[tuple[int, int]]) -> tuple[np.ndarray, ...]:
    import zstandard

    n_all = sum(by * bx for by, bx in dims)
    bound = 2 * n_all + len(dims) + 63 * n_all + 4 + 2 * 63 * n_all
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as e:
        raise CodecError(f"Corrupt {NAME} data: bad zstd frame ({e}).") from e
    if not 0 <= size <= bound:
        raise CodecError(f"Corrupt {NAME} data: zstd content size {size} outside 0..{bound}.")
    try:
        raw = _zstd_decompressor().decompress(data, max_output_size=size)
    except zstandard.ZstdError as e:
        _TLS.zstd_d = None  # start the next frame from a fresh context
        raise CodecError(f"Corrupt {NAME} data: bad zstd frame ({e}).") from e
    if len(raw) != size:
        raise CodecError(f"Corrupt {NAME} data: zstd frame length mismatch.")
    buf = np.frombuffer(raw, dtype=np.uint8)
    pos = 0
    planes: list[np.ndarray] = []
    acs: list[np.ndarray] = []
    for by, bx in dims:
        n = by * bx
        if pos + 2 * n + 1 > buf.size:
            raise CodecError(f"Corrupt {NAME} data: fast payload truncated.")
        r = (buf[pos : pos + n].astype(np.int64) | (buf[pos + n : pos + 2 * n].astype(np.int64) << 8)).astype(np.int16)
        dc = _dc_undo(r.astype(np.int64).reshape(by, bx))
        if np.abs(dc).max() > _MAXC:
            raise CodecError(f"Corrupt {NAME} data: DC coefficient out of range.")
        k = int(buf[pos + 2 * n])
        pos += 2 * n + 1
        if k > 63 or pos + k * n > buf.size:
            raise CodecError(f"Corrupt {NAME} data: bad AC row count {k} or truncated.")
        ac = buf[pos : pos + k * n].view(np.int8).reshape(k, n)
        pos += k * n
        out = np.zeros((64, by, bx), dtype=np.int16)  # natural order, frequency-major
        out[0] = dc
        out.reshape(64, n)[ZIGZAG[1 : k + 1]] = ac
        planes.append(out)
        acs.append(ac)
    if pos + 4 > buf.size:
        raise CodecError(f"Corrupt {NAME} data: fast payload truncated.")
    (ne,) = struct.unpack_from("<I", raw, pos)
    pos += 4
    if pos + 2 * ne != buf.size:
        raise CodecError(f"Corrupt {NAME} data: escape list length mismatch.")
    if ne:
        vals = np.frombuffer(raw, dtype="<i2", count=ne, offset=pos)
        if np.abs(vals.astype(np.int64)).max() > _MAXC:
            raise CodecError(f"Corrupt {NAME} data: AC coefficient out of range.")
        j = 0
        for out, ac in zip(planes, acs, strict=True):
            kk, n = ac.shape
            idx = np.flatnonzero(ac.ravel() == _ESC)
            if j + idx.size > ne:
                raise CodecError(f"Corrupt {NAME} data: too few escape values.")
            out.reshape(64, n)[ZIGZAG[1 : kk + 1][idx // n], idx % n] = vals[j : j + idx.size]
            j += idx.size
        if j != ne:
            raise CodecError(f"Corrupt {NAME} data: unused escape values.")
    else:
        for ac in acs:
            if ac.size and (ac == _ESC).any():
                raise CodecError(f"Corrupt {NAME} data: escape without a value.")
    return tuple(p.transpose(1, 2, 0) for p in planes)  # [by, bx, 64] views
