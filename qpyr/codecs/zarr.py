"""qpyr's codecs for stock zarr-python, registered through the ``zarr.codecs`` entry points.

With qpyr installed, ``zarr.open_array(...)`` on a qpyr store decodes ``qpyr.dct`` and
``qpyr.lossless`` and ``qpyr.tiles`` chunks through these classes (zarr-python finds them by entry point; the
user does not import qpyr). They wrap the same encode/decode as qpyr's own reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from zarr.abc.codec import ArrayBytesCodec

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

__all__ = ["DctZarrCodec", "LosslessZarrCodec", "TilesZarrCodec"]


@dataclass(frozen=True)
class _QpyrZarrCodec(ArrayBytesCodec):
    """Array→bytes codec delegating to a qpyr chunk codec."""

    config: str  # canonical JSON of the codec's configuration (hashable)
    codec_name: ClassVar[str] = ""
    is_fixed_size = False

    def __init__(self, *, configuration: dict[str, Any] | None = None, config: str | None = None) -> None:
        conf = json.loads(config) if config is not None else (configuration or {})
        object.__setattr__(self, "config", json.dumps(conf, sort_keys=True))
        self._chunk_codec()  # validate now

    def _chunk_codec(self) -> Any:
        from qpyr.codecs import codec_from_dict

        return codec_from_dict({"name": self.codec_name, "configuration": json.loads(self.config)})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _QpyrZarrCodec:
        return cls(configuration=dict(data.get("configuration") or {}))

    def to_dict(self) -> dict[str, Any]:
        conf = json.loads(self.config)
        return {"name": self.codec_name, "configuration": conf} if conf else {"name": self.codec_name}

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        dtype = chunk_spec.dtype.to_native_dtype()
        arr = self._chunk_codec().decode(chunk_bytes.to_bytes(), tuple(chunk_spec.shape), np.dtype(dtype))
        return chunk_spec.prototype.nd_buffer.from_numpy_array(np.ascontiguousarray(arr))

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        data = self._chunk_codec().encode(np.ascontiguousarray(chunk_array.as_numpy_array()))
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError(f"{self.codec_name} output size depends on the data.")


@dataclass(frozen=True, init=False)
class DctZarrCodec(_QpyrZarrCodec):
    codec_name: ClassVar[str] = "qpyr.dct"


@dataclass(frozen=True, init=False)
class LosslessZarrCodec(_QpyrZarrCodec):
    codec_name: ClassVar[str] = "qpyr.lossless"


@dataclass(frozen=True, init=False)
class TilesZarrCodec(_QpyrZarrCodec):
    """Per-tile classes (saliency policy). Pruned tiles decode as NaN: stock readers see the
    stored values; qpyr's reader fills them from the next coarser level."""

    codec_name: ClassVar[str] = "qpyr.tiles"
