"""What the estimator returns: typed, immutable results whose ``to_dict()`` is the
``qpyr estimate --json`` document (``spec/schemas/estimate.schema.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qpyr.errors import QpyrError

__all__ = ["AccessCost", "CostEstimate", "EstimateResult", "Interval", "LevelEstimate", "PolicyEstimate", "SampleInfo"]


@dataclass(frozen=True)
class Interval:
    """A projection: ``mean`` and the ``low`` .. ``high`` interval (90 % unless stated)."""

    mean: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}

    def scaled(self, factor: float) -> Interval:
        return Interval(self.mean * factor, self.low * factor, self.high * factor)


@dataclass(frozen=True)
class LevelEstimate:
    """One pyramid level of one policy, over the corpus.

    ``items``: corpus images that have this level; ``bytes_per_image``: mean stored data bytes of
    the level per image that has it; ``projected_bytes``: the level's data bytes over the corpus
    (shard indexes and metadata are counted in :attr:`PolicyEstimate.overhead_bytes`).
    ``ssim`` / ``psnr``: means over the packed sample (SSIM Wang 2004 RGB mean; PSNR over all
    channels, peak 255 for 8-bit) — ``psnr`` None with ``exact`` True means lossless.
    """

    level: int
    items: float
    bytes_per_image: float
    projected_bytes: float
    ssim: float | None
    psnr: float | None
    exact: bool

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "items": self.items, "bytes_per_image": self.bytes_per_image,
                "projected_bytes": self.projected_bytes, "ssim": self.ssim, "psnr": self.psnr,
                "exact": self.exact}


@dataclass(frozen=True)
class AccessCost:
    """Reads (USD) of one access pattern in one storage class: ``streaming`` (epoch order, whole
    shards, one GET per shard per level read) or ``random`` (map-style, one ranged GET per
    item-level), each plus opening the store. ``total_over_months`` (with the byte interval) is
    writes + storage + months x (these reads + their egress)."""

    read_requests_per_month: float
    read_bytes_per_month: float
    reads_per_month: float  # USD / month: GETs + retrieval
    egress_per_month: float
    total_over_months: Interval

    def to_dict(self) -> dict[str, Any]:
        return {"read_requests_per_month": self.read_requests_per_month,
                "read_bytes_per_month": self.read_bytes_per_month, "reads_per_month": self.reads_per_month,
                "egress_per_month": self.egress_per_month, "total_over_months": self.total_over_months.to_dict()}


@dataclass(frozen=True)
class CostEstimate:
    """Dollars (USD) of one policy in one ``provider:class`` (see :class:`~qpyr.estimate.cost.CostBreakdown`).

    ``storage_per_month`` and ``total_over_months`` carry the byte interval through; the other
    figures are at the mean. The read figures (requests, bytes, reads, egress, total) are those
    of the ``streaming`` access pattern; ``access`` holds every pattern's (``streaming``,
    ``random``).
    """

    storage_class: str
    billable_bytes: float
    storage_per_month: Interval
    billed_months: float
    storage_total: float
    write_once: float
    read_requests_per_month: float
    read_bytes_per_month: float
    reads_per_month: float
    egress_per_month: float
    total_over_months: Interval
    access: dict[str, AccessCost] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "storage_class": self.storage_class, "billable_bytes": self.billable_bytes,
            "storage_per_month": self.storage_per_month.to_dict(), "billed_months": self.billed_months,
            "storage_total": self.storage_total, "write_once": self.write_once,
            "read_requests_per_month": self.read_requests_per_month,
            "read_bytes_per_month": self.read_bytes_per_month, "reads_per_month": self.reads_per_month,
            "egress_per_month": self.egress_per_month, "total_over_months": self.total_over_months.to_dict(),
            "access": {k: v.to_dict() for k, v in self.access.items()},
        }


@dataclass(frozen=True)
class PolicyEstimate:
    """Projection for one policy (or the JPEG baseline) over the whole corpus."""

    policy: str  # canonical policy spec, or "jpeg-q90"
    label: str
    kind: str  # "qpyr" | "jpeg"
    baseline: bool
    requested: bool
    bytes_per_image: Interval  # projected_bytes / readable images
    projected_bytes: Interval  # whole corpus, data + overhead
    data_bytes: float  # mean, sum of the levels' projected_bytes
    overhead_bytes: float  # shard indexes, array metadata, catalog, manifest
    objects: int
    levels: tuple[LevelEstimate, ...]
    ratio_vs_fp32: float | None  # fp32 pyramid bytes / these bytes
    ratio_vs_jpeg: float | None  # JPEG q90 bytes / these bytes
    costs: tuple[CostEstimate, ...]
    #: per access pattern (``streaming``, ``random``): GET requests and bytes of one full read
    #: of the levels read, opening the store included (JPEG files: one GET per file either way)
    reads: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "label": self.label, "kind": self.kind, "baseline": self.baseline,
            "requested": self.requested, "bytes_per_image": self.bytes_per_image.to_dict(),
            "projected_bytes": self.projected_bytes.to_dict(), "data_bytes": self.data_bytes,
            "overhead_bytes": self.overhead_bytes, "objects": self.objects,
            "levels": [lv.to_dict() for lv in self.levels], "ratio_vs_fp32": self.ratio_vs_fp32,
            "ratio_vs_jpeg": self.ratio_vs_jpeg, "costs": [c.to_dict() for c in self.costs],
            "reads": {k: {"requests": rq, "bytes": rb} for k, (rq, rb) in self.reads.items()},
        }


@dataclass(frozen=True)
class SampleInfo:
    """How the sample was drawn and what failed (unreadable images are skipped and counted)."""

    seed: int
    requested: int
    probed: int  # headers read
    probe_failed: int
    packed: int
    load_failed: int
    failures: tuple[str, ...]  # the first few error messages
    stratified_by: str  # "file_bytes" | "pixels" | "none"
    bootstrap: int
    quality_measured: int  # packed images whose SSIM/PSNR were measured

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "requested": self.requested, "probed": self.probed,
                "probe_failed": self.probe_failed, "packed": self.packed, "load_failed": self.load_failed,
                "failures": list(self.failures), "stratified_by": self.stratified_by, "bootstrap": self.bootstrap,
                "quality_measured": self.quality_measured}


@dataclass(frozen=True)
class EstimateResult:
    """What :func:`~qpyr.estimate.estimate` / :func:`~qpyr.estimate.estimate_store` return; ``to_dict()`` is the ``--json`` document
    (``spec/schemas/estimate.schema.json``)."""

    mode: str  # "sample" | "store"
    sources: tuple[str, ...]
    items: int  # corpus images (listed, given by count, or in the store)
    items_from: str  # "listed" | "count" | "store"
    listed: int | None  # images the listing produced (None when not listed)
    readable_items: float  # items x (1 - unreadable fraction of the sample)
    confidence: float
    sample: SampleInfo | None
    months: float
    reads_per_month: float
    read_levels: tuple[int, ...] | None  # None: every level
    egress_fraction: float
    prices_origin: str
    prices_as_of: str
    policies: tuple[PolicyEstimate, ...]
    notes: tuple[str, ...]
    #: the store format projected ("2.0" or "1.x"; an existing store: its own) and its shard size
    store_format: str = "2.0"
    shard_bytes: int | None = None

    def policy(self, name: str) -> PolicyEstimate:
        """The estimate of policy ``name`` (a spec as given or canonical, or ``"jpeg-q90"``)."""
        for p in self.policies:
            if p.policy == name:
                return p
        try:
            from qpyr.policies import parse_policy

            canon = parse_policy(name).spec
        except QpyrError:
            canon = name
        for p in self.policies:
            if p.policy == canon:
                return p
        raise KeyError(f"No policy {name!r} in this estimate; have {[p.policy for p in self.policies]}.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "qpyr_estimate": "1.1",
            "mode": self.mode,
            "sources": list(self.sources),
            "corpus": {"items": self.items, "items_from": self.items_from, "listed": self.listed,
                       "readable_items": self.readable_items},
            "sample": self.sample.to_dict() if self.sample is not None else None,
            "confidence": self.confidence,
            "usage": {"months": self.months, "reads_per_month": self.reads_per_month,
                      "read_levels": list(self.read_levels) if self.read_levels is not None else None,
                      "egress_fraction": self.egress_fraction},
            "prices": {"origin": self.prices_origin, "as_of": self.prices_as_of, "currency": "USD"},
            "store": {"format": self.store_format, "shard_bytes": self.shard_bytes},
            "policies": [p.to_dict() for p in self.policies],
            "notes": list(self.notes),
        }
