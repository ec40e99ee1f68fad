"""Pure cost arithmetic for ``qpyr estimate``.

Units used throughout (see spec/prices.md):

* sizes are in **bytes**; prices are per **GB = 10**9 bytes** (``BYTES_PER_GB``),
  the decimal unit providers quote.  Providers that bill per GiB are therefore
  over-estimated by at most ~7.4 % (conservative);
* money is USD; request prices are per 1,000 requests;
* a month is ``365 / 12`` days (``DAYS_PER_MONTH``), so a 365-day minimum storage
  duration is exactly 12 months;
* list prices are flat (first pricing tier); volume tiers are not modelled.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from qpyr.errors import CostInputError
from qpyr.estimate.prices import PriceTable, StorageClass

__all__ = [
    "BYTES_PER_GB",
    "DAYS_PER_MONTH",
    "CostBreakdown",
    "CostInputError",
    "Layout",
    "ReadPattern",
    "Usage",
    "billable_bytes",
    "estimate_all",
    "estimate_cost",
]

BYTES_PER_GB = 1_000_000_000
DAYS_PER_MONTH = 365 / 12
_SUM_RTOL = 1e-9  # relative tolerance when sizes must add up to total_bytes


def _number(name: str, value: object, *, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CostInputError(name, f"expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise CostInputError(name, f"must be finite, got {value!r}")
    if number < 0:
        raise CostInputError(name, f"must be non-negative, got {value!r}")
    if upper is not None and number > upper:
        raise CostInputError(name, f"must be at most {upper}, got {value!r}")
    return number


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CostInputError(name, f"expected a non-negative integer, got {value!r}")
    if value < 0:
        raise CostInputError(name, f"must be non-negative, got {value!r}")
    return int(value)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= max(1e-6, _SUM_RTOL * max(abs(a), abs(b)))


@dataclass(frozen=True)
class Layout:
    """How a corpus is stored: ``objects`` objects holding ``total_bytes`` bytes.

    Optionally give the exact per-object sizes (``object_sizes``, bytes) or a
    histogram (``size_histogram``: ``(size_bytes, count)`` pairs) so that
    minimum-billable-size effects are exact; they must agree with
    ``objects`` and ``total_bytes``.  Without them, all objects are assumed to
    be the mean size, which is a lower bound on the billable bytes.
    Prefer :meth:`from_sizes` / :meth:`from_histogram`.
    """

    total_bytes: float
    objects: int
    object_sizes: tuple[float, ...] | None = None
    size_histogram: tuple[tuple[float, int], ...] | None = None

    def __post_init__(self) -> None:
        total = _number("total_bytes", self.total_bytes)
        objects = _count("objects", self.objects)
        object.__setattr__(self, "total_bytes", total)
        object.__setattr__(self, "objects", objects)
        if objects == 0 and total > 0:
            raise CostInputError("objects", "is 0 but total_bytes is positive")
        if self.object_sizes is not None and self.size_histogram is not None:
            raise CostInputError("object_sizes", "give object_sizes or size_histogram, not both")
        if self.object_sizes is not None:
            sizes = tuple(
                _number(f"object_sizes[{i}]", s) for i, s in enumerate(self.object_sizes)
            )
            object.__setattr__(self, "object_sizes", sizes)
            if len(sizes) != objects:
                raise CostInputError(
                    "object_sizes", f"has {len(sizes)} entries but objects is {objects}"
                )
            if not _close(math.fsum(sizes), total):
                raise CostInputError(
                    "object_sizes", f"sum to {math.fsum(sizes)} bytes, not total_bytes={total}"
                )
        if self.size_histogram is not None:
            hist = tuple(
                (
                    _number(f"size_histogram[{i}].size", size),
                    _count(f"size_histogram[{i}].count", count),
                )
                for i, (size, count) in enumerate(self.size_histogram)
            )
            object.__setattr__(self, "size_histogram", hist)
            n = sum(c for _, c in hist)
            if n != objects:
                raise CostInputError("size_histogram", f"counts sum to {n} but objects is {objects}")
            s = math.fsum(size * c for size, c in hist)
            if not _close(s, total):
                raise CostInputError(
                    "size_histogram", f"sizes x counts sum to {s} bytes, not total_bytes={total}"
                )

    @classmethod
    def from_sizes(cls, sizes: Iterable[float]) -> Layout:
        """Layout of objects with exactly these sizes (bytes)."""
        t = tuple(sizes)
        for i, s in enumerate(t):
            _number(f"object_sizes[{i}]", s)
        return cls(total_bytes=math.fsum(t), objects=len(t), object_sizes=t)

    @classmethod
    def from_histogram(
        cls,
        histogram: Mapping[int, int] | Mapping[float, int] | Iterable[tuple[float, int]],
    ) -> Layout:
        """Layout from ``{size_bytes: count}`` or ``(size_bytes, count)`` pairs."""
        pairs = tuple(histogram.items() if isinstance(histogram, Mapping) else histogram)
        for i, (size, count) in enumerate(pairs):
            _number(f"size_histogram[{i}].size", size)
            _count(f"size_histogram[{i}].count", count)
        return cls(
            total_bytes=math.fsum(size * count for size, count in pairs),
            objects=sum(count for _, count in pairs),
            size_histogram=pairs,
        )


@dataclass(frozen=True)
class ReadPattern:
    """A partial read, e.g. one pyramid level: bytes and GET requests per read."""

    bytes_per_read: float
    requests_per_read: float
    reads_per_month: float

    def __post_init__(self) -> None:
        _number("bytes_per_read", self.bytes_per_read)
        _number("requests_per_read", self.requests_per_read)
        _number("reads_per_month", self.reads_per_month)


@dataclass(frozen=True)
class Usage:
    """How the corpus is used.

    ``months``: how long it is kept (then deleted).  ``reads_per_month``: full
    corpus reads per month (each = ``total_bytes`` bytes and ``objects`` GETs).
    ``read_patterns``: additional partial reads.  ``egress_fraction``: share
    (0..1) of the bytes read that leave the provider's network.
    """

    months: float
    reads_per_month: float = 0.0
    read_patterns: tuple[ReadPattern, ...] = ()
    egress_fraction: float = 0.0

    def __post_init__(self) -> None:
        _number("months", self.months)
        _number("reads_per_month", self.reads_per_month)
        _number("egress_fraction", self.egress_fraction, upper=1.0)
        patterns = tuple(self.read_patterns)
        for i, p in enumerate(patterns):
            if not isinstance(p, ReadPattern):
                raise CostInputError(f"read_patterns[{i}]", f"expected a ReadPattern, got {p!r}")
        object.__setattr__(self, "read_patterns", patterns)


@dataclass(frozen=True)
class CostBreakdown:
    """Estimated cost of one layout + usage in one storage class (USD)."""

    storage_class: str  # "provider:class"
    billable_bytes: float  # bytes billed per month, incl. minimum sizes and overheads
    storage_per_month: float  # USD / month
    billed_months: float  # max(months, minimum storage duration in months)
    storage_total: float  # USD = storage_per_month * billed_months
    write_once: float  # USD, one PUT per object
    read_requests_per_month: float  # GET requests / month
    read_bytes_per_month: float  # bytes / month
    reads_per_month: float  # USD / month: GET requests + retrieval
    egress_bytes_per_month: float  # bytes / month leaving the provider
    egress_per_month: float  # USD / month beyond the free allowance
    total_over_months: float  # USD = write_once + storage_total + months * (reads + egress)


def _billable_data_bytes(sc: StorageClass, layout: Layout) -> float:
    floor = float(sc.min_billable_object_bytes)
    if layout.object_sizes is not None:
        return math.fsum(max(s, floor) for s in layout.object_sizes)
    if layout.size_histogram is not None:
        return math.fsum(max(s, floor) * c for s, c in layout.size_histogram)
    # Mean-size assumption: exact when all objects are >= floor or equal-sized.
    return max(float(layout.total_bytes), layout.objects * floor)


def billable_bytes(sc: StorageClass, layout: Layout) -> float:
    """Bytes billed per month: data (each object at least ``min_billable_object_bytes``)
    plus per-object overheads (both the class-rate and standard-rate parts)."""
    overhead = sc.overhead_bytes_per_object + sc.overhead_standard_bytes_per_object
    return _billable_data_bytes(sc, layout) + layout.objects * overhead


def estimate_cost(sc: StorageClass, layout: Layout, usage: Usage) -> CostBreakdown:
    """Cost of keeping ``layout`` in storage class ``sc`` under ``usage``."""
    if not isinstance(layout, Layout):
        raise CostInputError("layout", f"expected a Layout, got {layout!r}")
    if not isinstance(usage, Usage):
        raise CostInputError("usage", f"expected a Usage, got {usage!r}")
    n = layout.objects
    class_rate_bytes = _billable_data_bytes(sc, layout) + n * sc.overhead_bytes_per_object
    standard_rate_bytes = n * sc.overhead_standard_bytes_per_object
    storage_per_month = (
        class_rate_bytes / BYTES_PER_GB * sc.storage_per_gb_month
        + standard_rate_bytes / BYTES_PER_GB * sc.overhead_standard_per_gb_month
    )
    billed_months = max(float(usage.months), sc.min_storage_days / DAYS_PER_MONTH)
    if n == 0:
        billed_months = float(usage.months)
    storage_total = storage_per_month * billed_months

    write_once = n / 1000 * sc.write_per_1k

    read_requests = usage.reads_per_month * n + math.fsum(
        p.requests_per_read * p.reads_per_month for p in usage.read_patterns
    )
    read_bytes = usage.reads_per_month * layout.total_bytes + math.fsum(
        p.bytes_per_read * p.reads_per_month for p in usage.read_patterns
    )
    reads_cost = (
        read_requests / 1000 * sc.read_per_1k + read_bytes / BYTES_PER_GB * sc.retrieval_per_gb
    )

    egress_bytes = usage.egress_fraction * read_bytes
    free_gb = (
        sc.egress_free_gb_per_month
        + sc.egress_free_stored_multiple * layout.total_bytes / BYTES_PER_GB
    )
    egress_cost = max(0.0, egress_bytes / BYTES_PER_GB - free_gb) * sc.egress_per_gb

    total = write_once + storage_total + usage.months * (reads_cost + egress_cost)
    return CostBreakdown(
        storage_class=sc.key,
        billable_bytes=class_rate_bytes + standard_rate_bytes,
        storage_per_month=storage_per_month,
        billed_months=billed_months,
        storage_total=storage_total,
        write_once=write_once,
        read_requests_per_month=read_requests,
        read_bytes_per_month=read_bytes,
        reads_per_month=reads_cost,
        egress_bytes_per_month=egress_bytes,
        egress_per_month=egress_cost,
        total_over_months=total,
    )


def estimate_all(
    table: PriceTable,
    layout: Layout,
    usage: Usage,
    keys: Iterable[str] | None = None,
) -> list[CostBreakdown]:
    """``estimate_cost`` for each ``provider:class`` in ``keys`` (default: all),
    cheapest ``total_over_months`` first (ties keep table order)."""
    classes = list(table) if keys is None else [table.get(k) for k in keys]
    results = [estimate_cost(sc, layout, usage) for sc in classes]
    return sorted(results, key=lambda r: r.total_over_months)
