"""The ``dct`` policy and the DCT encodings that the lossy policies choose among.

``dct:quality=Q,chroma=420|444,tables=annexk|ssim,entropy=ctx|fast|jfif``: every level as
8x8 DCT (``qpyr.dct``) at quality ``Q`` (1..100, default 90).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from qpyr.codecs.encoding import Encoding
from qpyr.codecs.quant import Quantizer, StoredType
from qpyr.errors import PolicyError
from qpyr.policies._params import _parse_entropy, _parse_int, _parse_tables, _spec

__all__ = ["DctPolicy", "dct_encoding", "entropy_for", "pool_dct_quality", "parse"]


def dct_encoding(quality: int, chroma: str, source_dtype: np.dtype[Any], family: str = "ssim",
                 entropy: str = "ctx") -> Encoding:
    """DCT encoding of a level: 8-bit codes, then ``qpyr.dct`` with ``family`` tables
    (``"ssim"``: qpyr's flat tables, fewer bytes at equal SSIM; ``"annexk"``: JPEG's).

    8/16-bit sources map [0, 1] onto 0..255 (for 8-bit sources the codes are the pixels
    themselves); float and other sources use a per-level affine uint8 range from the data.
    """
    from qpyr.codecs import DctChunkCodec

    dt = np.dtype(source_dtype)
    if dt in (np.uint8, np.uint16):
        q = Quantizer(dtype=StoredType.UINT8, range=(0.0, 1.0), clamp=True)
    else:
        q = Quantizer(dtype=StoredType.UINT8)
    return Encoding(quantizer=q, codec=DctChunkCodec.create(quality=quality, chroma=chroma, family=family, entropy=entropy))


def entropy_for(entropy: str, channels: int) -> str:
    """The DCT entropy mode a level of ``channels`` channels gets: ``jfif`` codes JPEG's 1 or 3
    channels only, so other levels of a ``jfif`` policy use ``ctx``."""
    return "ctx" if entropy == "jfif" and channels not in (1, 3) else entropy


@dataclass(frozen=True)
class DctPolicy:
    """``dct:quality=Q,chroma=420|444,tables=annexk|ssim``: that DCT encoding on every level
    (``tables=annexk`` by default, so ``quality`` means what it means for JPEG)."""

    quality: int = 90
    chroma: str = "420"
    params: tuple[tuple[str, str], ...] = ()
    family: str = "annexk"
    entropy: str = "ctx"

    @property
    def spec(self) -> str:
        return _spec("dct", self.params)

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        return [dct_encoding(self.quality, self.chroma, source_dtype, self.family, entropy_for(self.entropy, lv.shape[0]))
                for lv in levels]


def pool_dct_quality(e: Any) -> Any:
    """Store a searched DCT level under the encoding with ``quality: "chunk"``.

    Quality searches give every item its own DCT quality. Keyed by quality, a corpus would
    scatter over ~60 buckets per level (each with its own partly filled shards, index and
    metadata) instead of one; the quality is in every chunk's header anyway (spec/codecs/dct.md
    §3), so the bucket's encoding records ``"chunk"`` and decoders read it per chunk.
    """
    if getattr(e.encoding.codec, "name", "") != "qpyr.dct":
        return e
    from qpyr.codecs import DctChunkCodec

    conf = dict(e.encoding.codec.to_dict().get("configuration", {}))
    if conf.get("quality") == "chunk" or "tables" in conf:
        return e
    conf["quality"] = "chunk"
    enc = Encoding(quantizer=e.encoding.quantizer, codec=DctChunkCodec.create(**conf))
    e.encoding = enc
    e.spec = dataclasses.replace(e.spec, encoding_id=enc.id)
    return e


def parse(params: dict[str, str]) -> DctPolicy:
    """``dct`` from its parameters (keys already checked)."""
    q = _parse_int("quality", params["quality"], 1, 100) if "quality" in params else 90
    ch = params.get("chroma", "420")
    if ch not in ("420", "444"):
        raise PolicyError(f"Expected chroma 420 or 444. Got {ch!r}.")
    return DctPolicy(q, ch, tuple(sorted(params.items())), _parse_tables(params, "annexk"), _parse_entropy(params))
