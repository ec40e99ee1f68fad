"""Parameter parsers shared by the policies: ``key=value`` strings to typed, range-checked values.

Every parser raises :class:`~qpyr.errors.PolicyError` naming the key, in the
"Expected X. Got Y." form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from qpyr.codecs.quant import Quantizer, StoredType
from qpyr.errors import PolicyError

_N = TypeVar("_N", int, float)

#: The parameters of an integer quantizer (``int8``, ``int4``; ``int8_``/``int4_`` prefixed in ``mixed``).
_INT_KEYS = ("scheme", "granularity", "block", "range", "clamp")


def _check_keys(name: str, params: dict[str, str], valid: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listing = ", ".join(valid) if valid else "none"
        raise PolicyError(f"Unknown parameter(s) {unknown} for policy {name!r}; valid: {listing}.")


def _parse_bool(key: str, v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise PolicyError(f"Expected true/false for {key}. Got {v!r}.")


def _parse_in_range(key: str, v: str, lo: _N, hi: _N, kind: Callable[[str], _N], what: str) -> _N:
    """``kind(v)`` if it parses and lies in ``lo..hi``, else a PolicyError naming ``key``."""
    try:
        x = kind(v)
    except ValueError:
        raise PolicyError(f"Expected {what} for {key}. Got {v!r}.") from None
    if not lo <= x <= hi:
        raise PolicyError(f"Expected {key} in {lo}..{hi}. Got {x}.")
    return x


def _parse_int(key: str, v: str, lo: int, hi: int) -> int:
    return _parse_in_range(key, v, lo, hi, int, "an integer")


def _parse_float(key: str, v: str, lo: float, hi: float) -> float:
    return _parse_in_range(key, v, lo, hi, float, "a number")


def _parse_range(key: str, v: str) -> tuple[float, float]:
    try:
        lo_s, hi_s = v.split("..")
        return float(lo_s), float(hi_s)
    except ValueError:
        raise PolicyError(f"Expected {key}=LO..HI (e.g. 0..1). Got {v!r}.") from None


def _parse_entropy(params: dict[str, str], default: str = "ctx") -> str:
    e = params.get("entropy", default)
    if e not in ("ctx", "fast", "jfif"):
        raise PolicyError("Expected entropy=ctx (smallest), entropy=fast (zstd) or entropy=jfif (JPEG stream, "
                          f"fastest decode). Got {e!r}.")
    return e


def _parse_tables(params: dict[str, str], default: str) -> str:
    t = params.get("tables", default)
    if t not in ("annexk", "ssim"):
        raise PolicyError(f"Expected tables=annexk (JPEG Annex K) or tables=ssim (qpyr's, for SSIM targets). Got {t!r}.")
    return t


def _int_quantizer(bits: int, params: dict[str, str], prefix: str = "") -> Quantizer:
    """The ``bits``-bit quantizer that the :data:`_INT_KEYS` parameters (each under ``prefix``) ask for."""

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


def _spec(name: str, params: tuple[tuple[str, str], ...]) -> str:
    """``name[:k=v,...]``: a policy's canonical spec from its (sorted) parameters as given."""
    return name + (":" + ",".join(f"{k}={v}" for k, v in params) if params else "")
