"""Raw bit I/O of ``qpyr.dct``: the MSB-first bit stream of extra bits and signs (written by
the ``ctx`` encoder, read by the version-2 decoder; version 4 reads it in
:mod:`qpyr._kernels.rans`)."""

from __future__ import annotations

import numpy as np

from qpyr.errors import CodecError

_LOW_MASK = (np.int64(1) << np.arange(33, dtype=np.int64)) - 1  # [w] = 2^w - 1


class _BitWriter:
    def __init__(self) -> None:
        self.vals: list[np.ndarray] = []
        self.widths: list[np.ndarray] = []

    def write(self, values: np.ndarray, widths: np.ndarray | int) -> None:
        v = np.asarray(values, dtype=np.int64).ravel()
        w = np.broadcast_to(np.asarray(widths, dtype=np.int64), v.shape).ravel()
        self.vals.append(v)
        self.widths.append(w)

    def getvalue(self) -> bytes:
        if not self.vals:
            return b""
        v = np.concatenate(self.vals)
        w = np.concatenate(self.widths)
        total = int(w.sum())
        bits = np.zeros(total, dtype=np.uint8)
        start = np.cumsum(w) - w
        for j in range(int(w.max(initial=0))):
            sel = w > j
            bits[start[sel] + j] = (v[sel] >> (w[sel] - 1 - j)) & 1
        return np.packbits(bits).tobytes()


class _BitReader:
    """Vectorised MSB-first reader of fields up to 25 bits wide: each field is cut out of the
    big-endian 32-bit window starting at its first byte (no per-bit unpacking)."""

    def __init__(self, data: bytes) -> None:
        self.bytes = np.frombuffer(data + b"\0\0\0\0", dtype=np.uint8).astype(np.int64)
        self.nbits = 8 * len(data)
        self.pos = 0
        self._words: np.ndarray | None = None

    @property
    def words(self) -> np.ndarray:
        """``words[i]``: the big-endian 32-bit window starting at byte ``i`` (built once, so a
        read gathers one word per field instead of four bytes)."""
        if self._words is None:
            b = self.bytes
            self._words = (b[:-3] << 24) | (b[1:-2] << 16) | (b[2:-1] << 8) | b[3:]
        return self._words

    def read(self, widths: np.ndarray | int, count: int | None = None) -> np.ndarray:
        if count is not None:
            w = np.full(count, int(widths), dtype=np.int64)
        else:
            w = np.asarray(widths, dtype=np.int64)
        if w.size == 0:
            return np.zeros(0, dtype=np.int64)
        end = np.cumsum(w)
        total = int(end[-1])
        if self.pos + total > self.nbits:
            raise CodecError("Corrupt qpyr.dct data: raw bit stream is truncated.")
        start = end - w
        start += self.pos
        word = self.words[start >> 3]
        self.pos += total
        start &= 7
        start += w
        word >>= 32 - start
        word &= _LOW_MASK[w]
        return word
