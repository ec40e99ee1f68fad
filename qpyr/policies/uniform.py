"""Uniform policies: one stored type on every level (``fp32``, ``fp16``, ``bf16``, ``int8``, ``int4``).

Float policies take ``clamp`` (true|false). Integer policies take ``scheme``
(affine|symmetric), ``granularity`` (level|channel|block), ``block``, ``range`` (``lo..hi`` in
normalized units) and ``clamp``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qpyr.codecs.encoding import Encoding, default_codec
from qpyr.codecs.quant import Quantizer, StoredType
from qpyr.policies._params import _int_quantizer, _parse_bool, _spec

__all__ = ["UniformPolicy", "float_policy", "int_policy"]


@dataclass(frozen=True)
class UniformPolicy:
    """One quantizer on every level."""

    name: str
    quantizer: Quantizer
    params: tuple[tuple[str, str], ...] = ()

    @property
    def spec(self) -> str:
        return _spec(self.name, self.params)

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        enc = Encoding(quantizer=self.quantizer, codec=default_codec(self.quantizer, source_dtype))
        return [enc] * len(levels)


def float_policy(name: str, dtype: StoredType) -> Callable[[dict[str, str]], UniformPolicy]:
    """The factory of policy ``name``: every level as float ``dtype`` (``clamp`` optional)."""

    def make(params: dict[str, str]) -> UniformPolicy:
        clamp = _parse_bool("clamp", params["clamp"]) if "clamp" in params else False
        return UniformPolicy(name, Quantizer(dtype=dtype, clamp=clamp), tuple(sorted(params.items())))

    return make


def int_policy(name: str, bits: int) -> Callable[[dict[str, str]], UniformPolicy]:
    """The factory of policy ``name``: every level as ``bits``-bit codes with scale/zero-point."""

    def make(params: dict[str, str]) -> UniformPolicy:
        return UniformPolicy(name, _int_quantizer(bits, params), tuple(sorted(params.items())))

    return make
