"""The ``lossless`` policy and the exact encoding other policies fall back to.

``lossless[:codec=qpyr|zstd]``: every level stored exactly in the source dtype (uint8 stays
uint8, uint16 stays uint16, float32 stays float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qpyr.codecs.encoding import Encoding, default_codec
from qpyr.codecs.quant import Quantizer, StoredType
from qpyr.errors import PolicyError
from qpyr.policies._params import _spec

__all__ = ["LosslessPolicy", "lossless_encoding", "parse"]


def lossless_encoding(source_dtype: np.dtype[Any], channels: int, *, portable: bool = False) -> Encoding:
    """Exact storage: qpyr.lossless for 8/16-bit integer levels of 1-4 channels, else zstd/blosc."""
    q = Quantizer(dtype=StoredType.SOURCE)
    dt = np.dtype(source_dtype)
    if not portable and dt in (np.uint8, np.uint16, np.int8, np.int16) and 1 <= channels <= 4:
        from qpyr.codecs import LosslessChunkCodec

        return Encoding(quantizer=q, codec=LosslessChunkCodec.create())
    return Encoding(quantizer=q, codec=default_codec(q, source_dtype))


@dataclass(frozen=True)
class LosslessPolicy:
    """Every level exact in the source dtype. ``codec=qpyr`` (default): the qpyr.lossless
    predictive codec for 8/16-bit levels of <= 4 channels (spec/codecs/lossless.md),
    zstd/blosc otherwise; ``codec=zstd``: standard Zarr codecs only, so stock Zarr readers
    without qpyr installed read every level."""

    codec: str = "qpyr"
    params: tuple[tuple[str, str], ...] = ()

    @property
    def spec(self) -> str:
        return _spec("lossless", self.params)

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        return [lossless_encoding(source_dtype, lv.shape[0], portable=self.codec == "zstd") for lv in levels]


def parse(params: dict[str, str]) -> LosslessPolicy:
    """``lossless`` from its parameters (keys already checked)."""
    codec = params.get("codec", "qpyr")
    if codec not in ("qpyr", "zstd"):
        raise PolicyError(f"Expected lossless codec qpyr or zstd. Got {codec!r}.")
    return LosslessPolicy(codec, tuple(sorted(params.items())))
