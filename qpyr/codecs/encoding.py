"""Encodings: what a policy chooses for one level of one item.

An encoding = a :class:`~qpyr.quant.Quantizer` (stored sample type, scale/zero-point) + a chunk
codec (bytes stage). It is immutable, round-trips through JSON, and has a stable ``id``
(``<label>-<8 hex of sha256 of its canonical JSON>``) used in array paths and the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from qpyr.codecs import BloscCodec, ChunkCodec, ZstdCodec, codec_from_dict
from qpyr.codecs.quant import Quantizer, StoredType
from qpyr.errors import PolicyError

__all__ = ["Encoding", "default_codec"]


def default_codec(q: Quantizer, source_dtype: np.dtype[Any] | None = None) -> ChunkCodec:
    """The bytes stage a quantizer gets unless one is given: zstd for 1-byte samples, blosc
    with byte shuffle (zstd inside) for multi-byte samples."""
    if q.dtype is StoredType.SOURCE:
        itemsize = np.dtype(source_dtype).itemsize if source_dtype is not None else 1
    else:
        itemsize = q.storage_dtype(np.dtype(np.uint8)).itemsize
    return ZstdCodec() if itemsize == 1 else BloscCodec()


@dataclass(frozen=True, kw_only=True)
class Encoding:
    """Quantizer + chunk codec for one level."""

    quantizer: Quantizer
    codec: ChunkCodec

    def to_dict(self) -> dict[str, Any]:
        return {"quantizer": self.quantizer.to_dict(), "codec": self.codec.to_dict()}

    @classmethod
    def from_dict(cls, d: Any) -> Encoding:
        if not isinstance(d, dict) or set(d) != {"quantizer", "codec"}:
            raise PolicyError(f"Expected an encoding object with 'quantizer' and 'codec'. Got {d!r}.")
        return cls(quantizer=Quantizer.from_dict(d["quantizer"]), codec=codec_from_dict(d["codec"]))

    @property
    def label(self) -> str:
        """Short human label, e.g. ``uint8-channel``, ``float16``, ``lossless``."""
        q = self.quantizer
        conf = self.codec.to_dict().get("configuration", {})
        if self.codec.name == "qpyr.dct":
            tail = ("-ssim" if conf.get("family") == "ssim" else "") + (f"-{conf['entropy']}" if conf.get("entropy", "ctx") != "ctx" else "")
            q = conf.get("quality", 90)
            return f"dct-q{'var' if q == 'chunk' else q}-{conf.get('chroma', '420')}{tail}"
        if self.codec.name == "qpyr.tiles":  # per-tile precision (saliency policy)
            return f"tiles-t{conf.get('tile', 64)}"
        if q.dtype is StoredType.SOURCE:
            return "lossless"
        parts = [q.dtype.value]
        if q.is_integer:
            if q.scheme.value != "affine":
                parts.append("sym")
            if q.granularity.value != "level":
                parts.append(q.granularity.value + (str(q.block) if q.granularity.value == "block" else ""))
        return "-".join(parts)

    @property
    def id(self) -> str:
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return f"{self.label}-{hashlib.sha256(canon.encode()).hexdigest()[:8]}"
