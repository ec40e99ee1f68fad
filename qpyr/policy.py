"""Precision policies: which encoding each level of an item gets.

Spec syntax (CLI ``--policy`` and Python): ``NAME[:key=value,...]``, e.g. ``int8``,
``int4:granularity=block,block=8``, ``mixed:fp16_min=256,int8_min=64``.

=============  ===============================================================================
``lossless``   every level stored exactly in the source dtype (uint8 stays uint8, uint16 stays
               uint16, float32 stays float32); the default (see :data:`DEFAULT_POLICY`)
``fp32``       every level as float32 (normalized units)
``fp16``       every level as float16 (exact for 8-bit sources)
``bf16``       every level as bfloat16
``int8``       every level as 8-bit codes with scale/zero-point (uint8 affine by default)
``int4``       every level as 4-bit codes, two per byte (uint4 affine by default)
``mixed``      the classic hierarchy: short side >= ``fp16_min`` (256) → fp16, >= ``int8_min``
               (64) → int8, smaller → int4
=============  ===============================================================================

Integer policies take ``scheme`` (affine|symmetric), ``granularity`` (level|channel|block),
``block``, ``range`` (``lo..hi`` in normalized units) and ``clamp`` (true|false).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .encoding import Encoding, default_codec
from .errors import PolicyError
from .quant import Quantizer, StoredType

__all__ = ["Policy", "DEFAULT_POLICY", "parse_policy", "POLICIES", "UniformPolicy", "MixedPolicy"]

#: The default policy. Photos for ML are 8-bit; storing them ``lossless`` keeps every pixel
#: (so training sees exactly the source) and is *smaller* than fp16 (1 byte/sample + zstd vs
#: 2) and int8 (same bytes, plus parameters, and lossy for non-8-bit sources). Lossy policies
#: are an explicit choice until quality-floor policies exist.
DEFAULT_POLICY = "lossless"


@runtime_checkable
class Policy(Protocol):
    """Chooses an encoding per level from the built pyramid."""

    @property
    def spec(self) -> str:
        """Canonical spec string (recorded in the manifest)."""
        ...

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        """Return one :class:`Encoding` per level (``levels[l]`` is ``[C, h_l, w_l]``)."""
        ...


def _parse_bool(key: str, v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise PolicyError(f"Expected true/false for {key}. Got {v!r}.")


def _parse_int(key: str, v: str, lo: int, hi: int) -> int:
    try:
        n = int(v)
    except ValueError:
        raise PolicyError(f"Expected an integer for {key}. Got {v!r}.") from None
    if not lo <= n <= hi:
        raise PolicyError(f"Expected {key} in {lo}..{hi}. Got {n}.")
    return n


def _parse_range(key: str, v: str) -> tuple[float, float]:
    try:
        lo_s, hi_s = v.split("..")
        return float(lo_s), float(hi_s)
    except ValueError:
        raise PolicyError(f"Expected {key}=LO..HI (e.g. 0..1). Got {v!r}.") from None


_INT_KEYS = ("scheme", "granularity", "block", "range", "clamp")


def _int_quantizer(bits: int, params: dict[str, str], prefix: str = "") -> Quantizer:
    def get(k: str) -> str | None:
        return params.get(prefix + k)

    scheme = get("scheme") or "affine"
    if scheme not in ("affine", "symmetric"):
        raise PolicyError(f"Expected {prefix}scheme affine|symmetric. Got {scheme!r}.")
    gran = get("granularity") or "level"
    if gran not in ("level", "channel", "block"):
        raise PolicyError(f"Expected {prefix}granularity level|channel|block. Got {gran!r}.")
    if bits == 8:
        dtype = StoredType.INT8 if scheme == "symmetric" else StoredType.UINT8
    else:
        dtype = StoredType.INT4 if scheme == "symmetric" else StoredType.UINT4
    kw: dict[str, Any] = {"dtype": dtype, "scheme": scheme, "granularity": gran}
    if get("block") is not None:
        kw["block"] = _parse_int(prefix + "block", get("block") or "", 2, 256)
    if get("range") is not None:
        kw["range"] = _parse_range(prefix + "range", get("range") or "")
    if get("clamp") is not None:
        kw["clamp"] = _parse_bool(prefix + "clamp", get("clamp") or "")
    return Quantizer(**kw)


@dataclass(frozen=True)
class UniformPolicy:
    """One quantizer on every level."""

    name: str
    quantizer: Quantizer
    params: tuple[tuple[str, str], ...] = ()

    @property
    def spec(self) -> str:
        return self.name + (":" + ",".join(f"{k}={v}" for k, v in self.params) if self.params else "")

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        enc = Encoding(quantizer=self.quantizer, codec=default_codec(self.quantizer, source_dtype))
        return [enc] * len(levels)


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
        return "mixed" + (":" + ",".join(f"{k}={v}" for k, v in self.params) if self.params else "")

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        fp16 = Quantizer(dtype=StoredType.FLOAT16)
        out = []
        for lv in levels:
            short = min(lv.shape[1], lv.shape[2])
            q = fp16 if short >= self.fp16_min else self.int8 if short >= self.int8_min else self.int4
            out.append(Encoding(quantizer=q, codec=default_codec(q, source_dtype)))
        return out


def _float_policy(name: str, dtype: StoredType) -> Callable[[dict[str, str]], Policy]:
    def make(params: dict[str, str]) -> Policy:
        _check_keys(name, params, ("clamp",))
        clamp = _parse_bool("clamp", params["clamp"]) if "clamp" in params else False
        return UniformPolicy(name, Quantizer(dtype=dtype, clamp=clamp), tuple(sorted(params.items())))

    return make


def _int_policy(name: str, bits: int) -> Callable[[dict[str, str]], Policy]:
    def make(params: dict[str, str]) -> Policy:
        _check_keys(name, params, _INT_KEYS)
        return UniformPolicy(name, _int_quantizer(bits, params), tuple(sorted(params.items())))

    return make


def _lossless(params: dict[str, str]) -> Policy:
    _check_keys("lossless", params, ())
    return UniformPolicy("lossless", Quantizer(dtype=StoredType.SOURCE))


_MIXED_KEYS = ("fp16_min", "int8_min") + tuple("int8_" + k for k in _INT_KEYS) + tuple("int4_" + k for k in _INT_KEYS)


def _mixed(params: dict[str, str]) -> Policy:
    _check_keys("mixed", params, _MIXED_KEYS)
    kw: dict[str, Any] = {}
    if "fp16_min" in params:
        kw["fp16_min"] = _parse_int("fp16_min", params["fp16_min"], 1, 2**31)
    if "int8_min" in params:
        kw["int8_min"] = _parse_int("int8_min", params["int8_min"], 1, 2**31)
    kw["int8"] = _int_quantizer(8, params, "int8_")
    kw["int4"] = _int_quantizer(4, params, "int4_")
    return MixedPolicy(params=tuple(sorted(params.items())), **kw)


#: name → (factory, one-line description). Later policies register here.
POLICIES: dict[str, tuple[Callable[[dict[str, str]], Policy], str]] = {
    "lossless": (_lossless, "every level exact in the source dtype (default)"),
    "fp32": (_float_policy("fp32", StoredType.FLOAT32), "every level float32"),
    "fp16": (_float_policy("fp16", StoredType.FLOAT16), "every level float16"),
    "bf16": (_float_policy("bf16", StoredType.BFLOAT16), "every level bfloat16"),
    "int8": (_int_policy("int8", 8), "every level 8-bit codes + scale/zero-point"),
    "int4": (_int_policy("int4", 4), "every level 4-bit codes (two per byte) + scale/zero-point"),
    "mixed": (_mixed, "fp16 / int8 / int4 by level short side (>=256 / >=64 / smaller)"),
}

_VALID_KEYS: dict[str, tuple[str, ...]] = {
    "lossless": (), "fp32": ("clamp",), "fp16": ("clamp",), "bf16": ("clamp",),
    "int8": _INT_KEYS, "int4": _INT_KEYS, "mixed": _MIXED_KEYS,
}


def _check_keys(name: str, params: dict[str, str], valid: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listing = ", ".join(valid) if valid else "none"
        raise PolicyError(f"Unknown parameter(s) {unknown} for policy {name!r}; valid: {listing}.")


def parse_policy(spec: str | Policy | None) -> Policy:
    """Parse ``NAME[:key=value,...]`` (or pass a :class:`Policy` through)."""
    if spec is None:
        spec = DEFAULT_POLICY
    if not isinstance(spec, str):
        if isinstance(spec, Policy):
            return spec
        raise PolicyError(f"Expected a policy spec string or Policy object. Got {spec!r}.")
    name, _, rest = spec.strip().partition(":")
    if name not in POLICIES:
        raise PolicyError(f"Unknown policy {name!r}; valid policies: {', '.join(POLICIES)}.")
    params: dict[str, str] = {}
    if rest:
        for part in rest.split(","):
            k, eq, v = part.partition("=")
            if not eq or not k.strip():
                raise PolicyError(f"Expected key=value in policy {spec!r}. Got {part!r}.")
            if k.strip() in params:
                raise PolicyError(f"Parameter {k.strip()!r} given twice in policy {spec!r}.")
            params[k.strip()] = v.strip()
    return POLICIES[name][0](params)
