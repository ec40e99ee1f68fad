"""Chunk codecs: stored samples of one chunk ↔ bytes.

Every codec is a small immutable class with a validating keyword-only constructor,
``to_dict()`` / ``from_dict()`` in Zarr's ``{"name": ..., "configuration": {...}}`` form, and pure
``encode`` / ``decode``. :func:`codec_from_dict` looks codecs up in :data:`REGISTRY`.
``zarr_chain(dtype)`` gives the Zarr v3 codec chain (inside ``sharding_indexed``, before
``crc32c``) that stock Zarr readers use for the same bytes.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from qpyr.codecs.adapters import DctChunkCodec, LosslessChunkCodec
from qpyr.codecs.standard import BloscCodec, ZstdCodec
from qpyr.codecs.tiles import TilesChunkCodec
from qpyr.errors import CodecError

__all__ = ["ChunkCodec", "REGISTRY", "codec_from_dict", "register_codec", "is_lossy", "ZstdCodec", "BloscCodec",
           "DctChunkCodec", "LosslessChunkCodec", "TilesChunkCodec"]


@runtime_checkable
class ChunkCodec(Protocol):
    """What the writer and reader need from a chunk codec."""

    @property
    def name(self) -> str:  # a class constant or a frozen field: read-only either way
        ...

    def to_dict(self) -> dict[str, Any]: ...

    def zarr_chain(self, dtype: np.dtype[Any]) -> list[dict[str, Any]]: ...

    def encode(self, chunk: np.ndarray) -> bytes: ...

    def decode(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray: ...


REGISTRY: dict[str, type] = {
    "zstd": ZstdCodec,
    "blosc": BloscCodec,
    "qpyr.dct": DctChunkCodec,
    "qpyr.lossless": LosslessChunkCodec,
    "qpyr.tiles": TilesChunkCodec,
}


def register_codec(name: str, cls: type) -> None:
    """Register a chunk codec class under ``name``; a clash with another class raises."""
    if REGISTRY.get(name, cls) is not cls:
        raise CodecError(f"A different codec is already registered as {name!r}.")
    REGISTRY[name] = cls


def codec_from_dict(d: Any) -> ChunkCodec:
    """Build a codec from its JSON config; unknown names list the known ones."""
    if not isinstance(d, dict) or not isinstance(d.get("name"), str):
        raise CodecError(f"Expected a codec object {{'name': ..., 'configuration': ...}}. Got {d!r}.")
    cls = REGISTRY.get(d["name"])
    if cls is None:
        raise CodecError(f"Unknown codec {d['name']!r}; known codecs: {sorted(REGISTRY)}.")
    codec: ChunkCodec = cls.from_dict(d)  # type: ignore[attr-defined]
    return codec


def is_lossy(codec: Any) -> bool:
    """True when decoding the codec's bytes does not give back the exact stored samples."""
    return bool(getattr(codec, "lossy", False))
