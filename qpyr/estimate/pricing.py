"""Dollars of a projection: which storage classes to price, from which table, and the
:class:`~qpyr.estimate.results.CostEstimate` of a projected layout and usage per class
(the arithmetic itself is :mod:`qpyr.estimate.cost`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from qpyr.estimate.cost import Layout, ReadPattern, Usage, estimate_cost
from qpyr.estimate.options import DEFAULT_PROVIDERS, check_float, check_read_levels
from qpyr.estimate.prices import PriceTable, load_prices
from qpyr.estimate.results import AccessCost, CostEstimate, Interval

__all__ = ["CostTerms", "policy_costs", "price_table", "provider_keys"]


@dataclass(frozen=True)
class CostTerms:
    """The checked cost arguments that :func:`~qpyr.estimate.estimate` and
    :func:`~qpyr.estimate.estimate_store` share: which storage classes of which price table,
    kept how long, read how often, which levels, and how much of it leaves the provider."""

    table: PriceTable
    keys: tuple[str, ...]
    months: float
    reads_per_month: float
    read_levels: tuple[int, ...] | None
    egress_fraction: float

    @classmethod
    def check(cls, *, providers: Sequence[str] | str | None, months: float, reads_per_month: float,
              read_levels: Iterable[int] | int | None, egress_fraction: float,
              prices: str | os.PathLike[str] | PriceTable | None) -> CostTerms:
        """Check the arguments (:class:`~qpyr.estimate.options.EstimateInputError` naming the
        first bad one) and load the price table."""
        months = check_float("months", months, 0.0, open_lo=True)
        reads_per_month = check_float("reads_per_month", reads_per_month, 0.0)
        egress_fraction = check_float("egress_fraction", egress_fraction, 0.0, 1.0)
        levels = check_read_levels(read_levels)
        table = price_table(prices)
        return cls(table, tuple(provider_keys(table, providers)), months, reads_per_month, levels, egress_fraction)

    def costs(self, layout: Layout, proj: Interval, reads: dict[str, tuple[float, float]]) -> tuple[CostEstimate, ...]:
        """:func:`policy_costs` of a projection under these terms; ``reads``: per access pattern
        (``streaming`` first), the (bytes, GET requests) of one full read."""
        return policy_costs(self.table, self.keys, layout, proj, self.months, self.reads_per_month, reads,
                            self.egress_fraction)

    def result_fields(self) -> dict[str, Any]:
        """The :class:`~qpyr.estimate.results.EstimateResult` fields these terms fill."""
        return {"months": self.months, "reads_per_month": self.reads_per_month, "read_levels": self.read_levels,
                "egress_fraction": self.egress_fraction, "prices_origin": self.table.origin,
                "prices_as_of": self.table.as_of}


def price_table(prices: str | os.PathLike[str] | PriceTable | None) -> PriceTable:
    """A :class:`PriceTable` as given, or loaded from a file (default: the shipped table)."""
    if isinstance(prices, PriceTable):
        return prices
    return load_prices(prices)


def provider_keys(table: PriceTable, providers: Sequence[str] | None) -> list[str]:
    """``provider:class`` keys; a bare ``provider`` means all its classes, ``all`` every class."""
    if providers is None:
        keys = [k for k in DEFAULT_PROVIDERS if k in table.keys()]
        return keys or table.keys()
    if isinstance(providers, str):
        providers = [providers]
    out: list[str] = []
    for p in providers:
        p = str(p).strip().lower()
        if p == "all":
            found = table.keys()
        elif ":" not in p and any(pr.key == p for pr in table.providers):
            found = [c.key for pr in table.providers if pr.key == p for c in pr.classes]
        else:
            found = [table.get(p).key]  # raises listing the known names
        out += [k for k in found if k not in out]
    return out


def policy_costs(table: PriceTable, keys: Sequence[str], layout: Layout, proj: Interval, months: float,
                 reads_per_month: float, reads: dict[str, tuple[float, float]],
                 egress_fraction: float) -> tuple[CostEstimate, ...]:
    """Dollars per class in ``keys`` of storing ``layout`` (whose total is ``proj.mean``) for
    ``months`` and reading it ``reads_per_month`` times a month, once per access pattern of
    ``reads`` (name -> (bytes, GET requests) of one full read; the first one, ``streaming``, also
    fills the top-level read figures). Storage and the totals carry the byte interval ``proj``
    through (object sizes and read bytes scaled by low/mean and high/mean); the other figures are
    at the mean. Writes are one PUT per object whatever the access pattern."""
    out = []
    for key in keys:
        sc = table.get(key)
        access: dict[str, AccessCost] = {}
        first = None
        for name, (read_bytes, read_requests) in reads.items():
            runs = []
            for b in (proj.mean, proj.low, proj.high):
                f = b / proj.mean if proj.mean > 0 else 1.0
                lay = layout if b == proj.mean else _scale_layout(layout, f)
                pat = (ReadPattern(read_bytes * f, read_requests, reads_per_month),) if reads_per_month > 0 else ()
                runs.append(estimate_cost(sc, lay, Usage(months=months, read_patterns=pat, egress_fraction=egress_fraction)))
            mid, lo, hi = runs
            first = first or (mid, lo, hi)
            access[name] = AccessCost(
                read_requests_per_month=mid.read_requests_per_month, read_bytes_per_month=mid.read_bytes_per_month,
                reads_per_month=mid.reads_per_month, egress_per_month=mid.egress_per_month,
                total_over_months=Interval(mid.total_over_months, lo.total_over_months, hi.total_over_months))
        assert first is not None
        mid, lo, hi = first
        top = next(iter(access.values()))
        out.append(CostEstimate(
            storage_class=mid.storage_class, billable_bytes=mid.billable_bytes,
            storage_per_month=Interval(mid.storage_per_month, lo.storage_per_month, hi.storage_per_month),
            billed_months=mid.billed_months, storage_total=mid.storage_total, write_once=mid.write_once,
            read_requests_per_month=top.read_requests_per_month, read_bytes_per_month=top.read_bytes_per_month,
            reads_per_month=top.reads_per_month, egress_per_month=top.egress_per_month,
            total_over_months=top.total_over_months, access=access,
        ))
    return tuple(out)


def _scale_layout(layout: Layout, f: float) -> Layout:
    if layout.size_histogram is not None:
        return Layout.from_histogram([(s * f, c) for s, c in layout.size_histogram])
    if layout.object_sizes is not None:
        return Layout.from_sizes([s * f for s in layout.object_sizes])
    return Layout(total_bytes=layout.total_bytes * f, objects=layout.objects)
