"""Standard Zarr v3 byte codecs (``zstd``, ``blosc``) as qpyr chunk codecs.

Chunks are C-ordered little-endian samples (Zarr's ``bytes`` codec) compressed by zstd, or by
blosc with byte shuffling (which groups the high and low bytes of multi-byte samples: float16
and uint16 levels compress far better). Decoding validates the declared size against the
expected chunk size *before* allocating, so hostile bytes cannot force a giant allocation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from qpyr.codecs._config import parse_config
from qpyr.errors import CodecError

__all__ = ["ZstdCodec", "BloscCodec"]


def _bytes_codec(dtype: np.dtype[Any]) -> dict[str, Any]:
    if dtype.itemsize == 1:
        return {"name": "bytes"}
    return {"name": "bytes", "configuration": {"endian": "little"}}


def _as_le_bytes(chunk: np.ndarray) -> np.ndarray:
    dt = chunk.dtype.newbyteorder("<") if chunk.dtype.itemsize > 1 else chunk.dtype
    return np.ascontiguousarray(chunk, dtype=dt)


def _from_le(raw: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize
    if len(raw) != n:
        raise CodecError(f"Expected {n} decoded bytes for a chunk of shape {shape}. Got {len(raw)}.")
    le = dt.newbyteorder("<") if dt.itemsize > 1 else dt
    return np.frombuffer(raw, dtype=le).reshape(shape)


@dataclass(frozen=True, kw_only=True)
class ZstdCodec:
    """``bytes`` + ``zstd``. ``level`` in -7..22 (default 3)."""

    level: int = 3
    name: str = "zstd"

    def __post_init__(self) -> None:
        if isinstance(self.level, bool) or not isinstance(self.level, int) or not -7 <= self.level <= 22:
            raise CodecError(f"Expected zstd level in -7..22. Got {self.level!r}.")

    def to_dict(self) -> dict[str, Any]:
        conf = {} if self.level == 3 else {"level": self.level}
        return {"name": "zstd", "configuration": conf} if conf else {"name": "zstd"}

    @classmethod
    def from_dict(cls, d: Any) -> ZstdCodec:
        return cls(**parse_config(d, "zstd", {"level"}))

    def zarr_chain(self, dtype: np.dtype[Any]) -> list[dict[str, Any]]:
        return [_bytes_codec(dtype), {"name": "zstd", "configuration": {"level": self.level, "checksum": False}}]

    def encode(self, chunk: np.ndarray) -> bytes:
        return zstandard.ZstdCompressor(level=self.level).compress(_as_le_bytes(chunk).tobytes())

    def decode(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        try:
            params = zstandard.get_frame_parameters(data)
            if params.content_size not in (zstandard.CONTENTSIZE_UNKNOWN, n):
                raise CodecError(f"zstd frame declares {params.content_size} bytes; expected {n}.")
            raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=n)
        except zstandard.ZstdError as e:
            raise CodecError(f"Corrupt zstd chunk: {e}.") from e
        return _from_le(raw, shape, dtype)


_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


@dataclass(frozen=True, kw_only=True)
class BloscCodec:
    """``bytes`` + ``blosc`` (zstd inside, byte shuffle by default). ``clevel`` in 0..9."""

    clevel: int = 5
    shuffle: str = "shuffle"
    name: str = "blosc"

    def __post_init__(self) -> None:
        if isinstance(self.clevel, bool) or not isinstance(self.clevel, int) or not 0 <= self.clevel <= 9:
            raise CodecError(f"Expected blosc clevel in 0..9. Got {self.clevel!r}.")
        if self.shuffle not in _SHUFFLES:
            raise CodecError(f"Expected blosc shuffle in {sorted(_SHUFFLES)}. Got {self.shuffle!r}.")

    def to_dict(self) -> dict[str, Any]:
        conf: dict[str, Any] = {}
        if self.clevel != 5:
            conf["clevel"] = self.clevel
        if self.shuffle != "shuffle":
            conf["shuffle"] = self.shuffle
        return {"name": "blosc", "configuration": conf} if conf else {"name": "blosc"}

    @classmethod
    def from_dict(cls, d: Any) -> BloscCodec:
        return cls(**parse_config(d, "blosc", {"clevel", "shuffle"}))

    def zarr_chain(self, dtype: np.dtype[Any]) -> list[dict[str, Any]]:
        return [
            _bytes_codec(dtype),
            {"name": "blosc", "configuration": {
                "cname": "zstd", "clevel": self.clevel, "shuffle": self.shuffle,
                "typesize": int(np.dtype(dtype).itemsize), "blocksize": 0,
            }},
        ]

    def encode(self, chunk: np.ndarray) -> bytes:
        from numcodecs import blosc

        a = _as_le_bytes(chunk)
        return bytes(blosc.compress(a, b"zstd", self.clevel, _SHUFFLES[self.shuffle]))

    def decode(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        from numcodecs import blosc

        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if len(data) < 16:
            raise CodecError(f"Corrupt blosc chunk: {len(data)} bytes is shorter than its header.")
        nbytes, _blocksize, cbytes = struct.unpack_from("<III", data, 4)
        if nbytes != n or cbytes != len(data):
            raise CodecError(
                f"Corrupt blosc chunk: header declares {nbytes} bytes ({cbytes} compressed); "
                f"expected {n} ({len(data)} compressed)."
            )
        try:
            raw = blosc.decompress(data)
        except Exception as e:  # numcodecs raises RuntimeError on corrupt input
            raise CodecError(f"Corrupt blosc chunk: {e}.") from e
        return _from_le(bytes(raw), shape, dtype)
