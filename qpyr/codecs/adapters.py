"""qpyr's own codecs (``qpyr.dct``, ``qpyr.lossless``) as chunk codecs.

Those codecs work on one image tile ``[C, H, W]``; a Zarr chunk of a bucket is ``[1, C, H, W]``.
These adapters bridge the two, give the codecs their place in a Zarr codec chain (they are
array→bytes codecs and replace ``bytes``), convert constructor errors to
:class:`~qpyr.errors.CodecError`, and say whether the codec is lossy (the writer then measures
quality on the decoded chunks, exactly as a reader will see them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from qpyr.errors import CodecError

__all__ = ["DctChunkCodec", "LosslessChunkCodec"]


@dataclass(frozen=True)
class _Adapter:
    """What both adapters share: ``inner`` (the wrapped codec), construction from keyword
    arguments or a codec document (errors become :class:`CodecError`) and the document round
    trip. Subclasses name the wrapped codec's class in ``_inner_class``."""

    inner: Any

    @staticmethod
    def _inner_class() -> Any:
        raise NotImplementedError

    @classmethod
    def create(cls, **config: Any) -> Self:
        try:
            return cls(cls._inner_class()(**config))
        except CodecError:
            raise
        except (ValueError, TypeError) as e:
            raise CodecError(str(e)) from e

    @classmethod
    def from_dict(cls, d: Any) -> Self:
        try:
            return cls(cls._inner_class().from_dict(d))
        except CodecError:
            raise
        except (ValueError, TypeError) as e:
            raise CodecError(str(e)) from e

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = self.inner.to_dict()
        if not d.get("configuration"):
            d = {"name": d["name"]}
        return d

    def zarr_chain(self, dtype: np.dtype[Any]) -> list[dict[str, Any]]:
        return [self.to_dict()]


@dataclass(frozen=True)
class DctChunkCodec(_Adapter):
    """``qpyr.dct`` (8x8 DCT, optional YCbCr 4:2:0) on uint8 chunks. Lossy."""

    lossy: ClassVar[bool] = True
    name: ClassVar[str] = "qpyr.dct"

    @staticmethod
    def _inner_class() -> Any:
        from qpyr.codecs.dct import DctCodec

        return DctCodec

    def pad(self, stored: np.ndarray, height: int, width: int) -> np.ndarray:
        """Pad an item's ``[C, h, w]`` samples to the bucket's ``[C, height, width]``: block-constant
        fill past the 16-aligned extent, which the DCT codes in almost no bits."""
        if stored.dtype != np.uint8:  # encode() rejects it; pad like every other codec meanwhile
            c, h, w = stored.shape
            return np.pad(stored, ((0, 0), (0, height - h), (0, width - w)), mode="edge")
        from qpyr.codecs.dct import pad_for_dct

        return pad_for_dct(stored, height, width)

    def encode(self, chunk: np.ndarray) -> bytes:
        if chunk.dtype != np.uint8:
            raise CodecError(f"qpyr.dct encodes uint8 samples. Got {chunk.dtype}.")
        if self.inner.quality == "chunk":
            raise CodecError("qpyr.dct with quality 'chunk' only decodes (each chunk header holds its quality); "
                             "encode with a concrete quality 1..100.")
        data: bytes = self.inner.encode(chunk[0])
        return data

    def simulate(self, chunk: np.ndarray) -> np.ndarray:
        """``decode(encode(chunk))`` without entropy coding (bit-exact; for quality searches)."""
        if chunk.dtype != np.uint8:
            raise CodecError(f"qpyr.dct encodes uint8 samples. Got {chunk.dtype}.")
        out: np.ndarray = self.inner.simulate(chunk[0])
        return out[None]

    def decode(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        if np.dtype(dtype) != np.uint8 or len(shape) != 4 or shape[0] != 1:
            raise CodecError(f"qpyr.dct decodes [1, C, H, W] uint8 chunks. Got {shape} {dtype}.")
        out: np.ndarray = self.inner.decode(data, shape[1:])
        return out[None]


@dataclass(frozen=True)
class LosslessChunkCodec(_Adapter):
    """``qpyr.lossless`` (spatial predictor + entropy coder) on 8/16-bit chunks. Lossless."""

    lossy: ClassVar[bool] = False
    name: ClassVar[str] = "qpyr.lossless"

    @staticmethod
    def _inner_class() -> Any:
        from qpyr.codecs.lossless import LosslessCodec

        return LosslessCodec

    def encode(self, chunk: np.ndarray) -> bytes:
        data: bytes = self.inner.encode(chunk[0])
        return data

    def decode(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        if len(shape) != 4 or shape[0] != 1:
            raise CodecError(f"qpyr.lossless decodes [1, C, H, W] chunks. Got {shape}.")
        out: np.ndarray = self.inner.decode(data, shape[1:], dtype)
        return out[None]
