"""The ``mixed`` policy: the stored type of each level from its size (fp16, int8, int4).

``mixed:fp16_min=256,int8_min=64``: levels whose short side is >= ``fp16_min`` are fp16, >=
``int8_min`` int8, smaller int4. The int8 and int4 quantizers take the integer parameters of
:mod:`qpyr.policies.uniform` prefixed ``int8_`` / ``int4_`` (e.g. ``int4_granularity=channel``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qpyr.codecs.encoding import Encoding, default_codec
from qpyr.codecs.quant import Quantizer, StoredType
from qpyr.errors import PolicyError
from qpyr.policies._params import _INT_KEYS, _int_quantizer, _parse_int, _spec

__all__ = ["MixedPolicy", "MIXED_KEYS", "parse"]

#: The parameters of ``mixed``.
MIXED_KEYS = ("fp16_min", "int8_min") + tuple("int8_" + k for k in _INT_KEYS) + tuple("int4_" + k for k in _INT_KEYS)


@dataclass(frozen=True)
class MixedPolicy:
    """fp16 for levels whose short side >= ``fp16_min``, int8 for >= ``int8_min``, else int4."""

    fp16_min: int = 256
    int8_min: int = 64
    int8: Quantizer = field(default_factory=lambda: Quantizer(dtype=StoredType.UINT8))
    int4: Quantizer = field(default_factory=lambda: Quantizer(dtype=StoredType.UINT4))
    params: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.fp16_min < self.int8_min:
            raise PolicyError(
                f"Expected fp16_min >= int8_min (thresholds in order). Got fp16_min={self.fp16_min}, "
                f"int8_min={self.int8_min}."
            )

    @property
    def spec(self) -> str:
        return _spec("mixed", self.params)

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        fp16 = Quantizer(dtype=StoredType.FLOAT16)
        out = []
        for lv in levels:
            short = min(lv.shape[1], lv.shape[2])
            q = fp16 if short >= self.fp16_min else self.int8 if short >= self.int8_min else self.int4
            out.append(Encoding(quantizer=q, codec=default_codec(q, source_dtype)))
        return out


def parse(params: dict[str, str]) -> MixedPolicy:
    """``mixed`` from its parameters (keys already checked against :data:`MIXED_KEYS`)."""
    kw: dict[str, Any] = {}
    if "fp16_min" in params:
        kw["fp16_min"] = _parse_int("fp16_min", params["fp16_min"], 1, 2**31)
    if "int8_min" in params:
        kw["int8_min"] = _parse_int("int8_min", params["int8_min"], 1, 2**31)
    kw["int8"] = _int_quantizer(8, params, "int8_")
    kw["int4"] = _int_quantizer(4, params, "int4_")
    return MixedPolicy(params=tuple(sorted(params.items())), **kw)
