"""Dollars of a projection: which storage classes to price, from which table, and the
:class:`~qpyr.estimate.results.CostEstimate` of a projected layout and usage per class
(the arithmetic itself is :mod:`qpyr.estimate.cost`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from qpyr.estimate.cost import Layout, ReadPattern, Usage, estimate_cost
from qpyr.estimate.options import DEFAULT_PROVIDERS
from qpyr.estimate.prices import PriceTable, load_prices
from qpyr.estimate.results import CostEstimate, Interval

__all__ = ["policy_costs", "price_table", "provider_keys"]


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
                 reads_per_month: float, read_bytes: float, read_requests: float,
                 egress_fraction: float) -> tuple[CostEstimate, ...]:
    """Dollars per class in ``keys`` of storing ``layout`` (whose total is ``proj.mean``) for
    ``months`` and reading ``read_bytes`` in ``read_requests`` GETs ``reads_per_month`` times a
    month. Storage and the total carry the byte interval ``proj`` through (object sizes and read
    bytes scaled by low/mean and high/mean); the other figures are at the mean."""
    patterns = (ReadPattern(bytes_per_read=read_bytes, requests_per_read=read_requests,
                            reads_per_month=reads_per_month),) if reads_per_month > 0 else ()
    usage = Usage(months=months, read_patterns=patterns, egress_fraction=egress_fraction)
    out = []
    for key in keys:
        sc = table.get(key)
        mid = estimate_cost(sc, layout, usage)
        ends = []
        for b in (proj.low, proj.high):
            f = b / proj.mean if proj.mean > 0 else 1.0
            lay = _scale_layout(layout, f)
            pat = (ReadPattern(read_bytes * f, read_requests, reads_per_month),) if patterns else ()
            ends.append(estimate_cost(sc, lay, Usage(months=months, read_patterns=pat, egress_fraction=egress_fraction)))
        lo, hi = ends
        out.append(CostEstimate(
            storage_class=mid.storage_class, billable_bytes=mid.billable_bytes,
            storage_per_month=Interval(mid.storage_per_month, lo.storage_per_month, hi.storage_per_month),
            billed_months=mid.billed_months, storage_total=mid.storage_total, write_once=mid.write_once,
            read_requests_per_month=mid.read_requests_per_month, read_bytes_per_month=mid.read_bytes_per_month,
            reads_per_month=mid.reads_per_month, egress_per_month=mid.egress_per_month,
            total_over_months=Interval(mid.total_over_months, lo.total_over_months, hi.total_over_months),
        ))
    return tuple(out)


def _scale_layout(layout: Layout, f: float) -> Layout:
    if layout.size_histogram is not None:
        return Layout.from_histogram([(s * f, c) for s, c in layout.size_histogram])
    if layout.object_sizes is not None:
        return Layout.from_sizes([s * f for s in layout.object_sizes])
    return Layout(total_bytes=layout.total_bytes * f, objects=layout.objects)
