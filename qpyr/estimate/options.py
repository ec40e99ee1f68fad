"""Arguments of the estimator: their defaults and their checks.

Kept free of heavy imports: the ``qpyr estimate`` parser reads its defaults from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from qpyr.errors import EstimateInputError

__all__ = [
    "CONFIDENCE",
    "DEFAULT_PROVIDERS",
    "DEFAULT_SAMPLE",
    "HEADER_SAMPLE_FACTOR",
    "HEADER_SAMPLE_MIN",
    "QUALITY_SAMPLE",
    "EstimateInputError",
    "check_float",
    "check_format",
    "check_int",
    "check_read_levels",
]

#: Nominal coverage of the reported intervals.
CONFIDENCE = 0.90
DEFAULT_SAMPLE = 200
#: Images whose header and file size are probed: ``max(HEADER_SAMPLE_MIN, HEADER_SAMPLE_FACTOR * sample)``.
HEADER_SAMPLE_MIN = 2000
HEADER_SAMPLE_FACTOR = 20
#: Packed images whose SSIM/PSNR are measured (measuring costs more than packing).
QUALITY_SAMPLE = 64
#: Storage classes priced when none are asked for (those present in the price table).
DEFAULT_PROVIDERS = (
    "aws-s3:standard",
    "aws-s3:standard-ia",
    "gcs:standard",
    "cloudflare-r2:standard",
    "backblaze-b2:standard",
)


def check_int(name: str, value: object, lo: int) -> int:
    """``value`` as an int >= ``lo`` (bools and floats are refused)."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise EstimateInputError(name, f"expected an integer >= {lo}, got {value!r}")
    if value < lo:
        raise EstimateInputError(name, f"expected an integer >= {lo}, got {value!r}")
    return int(value)


def check_float(name: str, value: object, lo: float, hi: float | None = None, *, open_lo: bool = False) -> float:
    """``value`` as a finite float in [``lo``, ``hi``] (``open_lo``: > ``lo``)."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EstimateInputError(name, f"expected a number, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v) or (v <= lo if open_lo else v < lo) or (hi is not None and v > hi)
    if bad:
        rng = f"{'>' if open_lo else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
        raise EstimateInputError(name, f"expected a finite number {rng}, got {value!r}")
    return v


def check_read_levels(levels: Iterable[int] | int | None) -> tuple[int, ...] | None:
    """Sorted distinct levels (each an int >= 0), or None for every level."""
    if levels is None:
        return None
    if isinstance(levels, int):
        levels = [levels]
    return tuple(sorted({check_int("read_levels", lv, 0) for lv in levels}))


def check_format(format: str, shard_bytes: int | None) -> tuple[int, int]:  # noqa: A002
    """(format major, shard bytes) of the ``format`` / ``shard_bytes`` arguments."""
    from qpyr.format.manifest import SHARD_BYTES, SHARD_BYTES_RANGE

    fs = str(format).strip().lower()
    if fs not in ("1", "1.x", "2", "2.0"):
        raise EstimateInputError("format", f"expected '2.0' (default) or '1' (the 1.x layout), got {format!r}")
    major = fs[0]
    if shard_bytes is None:
        return int(major), SHARD_BYTES
    lo, hi = SHARD_BYTES_RANGE
    sb = check_int("shard_bytes", shard_bytes, lo)
    if sb > hi:
        raise EstimateInputError("shard_bytes", f"expected an integer in {lo}..{hi}, got {shard_bytes!r}")
    return int(major), sb
