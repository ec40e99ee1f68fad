"""Project what a corpus costs as a qpyr store — bytes and dollars — from a packed sample.

The method (``spec/estimate.md`` states it in full), one module per step:

1. **List** (:mod:`~qpyr.estimate.sources`, :mod:`~qpyr.estimate.sampling`). Stream the sources
   with :func:`qpyr.inputs.discover`, count them (or stop at ``count``) and keep a seeded uniform
   reservoir of ``header_sample`` references (memory O(header_sample), not O(corpus)).
2. **Probe** (:mod:`~qpyr.estimate.probe`, cheap). Read each reservoir image's header — channels,
   size, dtype — and its file size. This fixes the corpus's size distribution, pyramid shapes
   and bucket layout.
3. **Pack** (:mod:`~qpyr.estimate.packing`, :mod:`~qpyr.estimate.baselines`, expensive). Pack
   ``sample`` of the probed images — one per stratum of file size, so small and large files are
   both represented — into a ``memory://`` store per policy, plus JPEG q90 files per level,
   recording stored bytes and quality per item and level.
4. **Project.** A regression estimator (:mod:`~qpyr.estimate.regression`: stored bytes ~
   pyramid samples + file bytes, fitted on the packed sample, applied to the probed covariates)
   gives the data bytes and a seeded bootstrap the 90 % interval; a layout model
   (:mod:`~qpyr.estimate.layout_model`: format 2.0, the pack tasks' records filled into shards,
   shard framing, per-level documents, catalog, manifest; :mod:`~qpyr.estimate.layout_model_1x`
   for ``format="1"``) adds the store's structural bytes, objects and read requests.
5. **Price** (:mod:`~qpyr.estimate.pricing`). The projected objects and usage go through
   :mod:`qpyr.estimate.cost`, once per access pattern (streaming and random reads).

All byte figures are stored bytes including metadata (what a bucket bills). An existing store
is estimated by :func:`qpyr.estimate.existing.estimate_store` instead.
"""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qpyr.errors import InputError, InputNotFoundError, QpyrError
from qpyr.estimate import layout_model, layout_model_1x
from qpyr.estimate.baselines import JPEG_POLICY, LABELS, jpeg_sample, policy_list
from qpyr.estimate.layout_model import ACCESS_PATTERNS, StoreLayout, integer_histogram
from qpyr.estimate.options import (
    CONFIDENCE,
    DEFAULT_SAMPLE,
    HEADER_SAMPLE_FACTOR,
    HEADER_SAMPLE_MIN,
    QUALITY_SAMPLE,
    EstimateInputError,
    check_format,
    check_int,
)
from qpyr.estimate.packing import Packed, level_quality, pack_sample
from qpyr.estimate.planner import Planner, storage_factors
from qpyr.estimate.prices import PriceTable
from qpyr.estimate.pricing import CostTerms
from qpyr.estimate.probe import Geom, level_shapes, probe
from qpyr.estimate.regression import BOOTSTRAP, DataProjection, covariates, normalize_file_bytes, project_data
from qpyr.estimate.results import EstimateResult, Interval, LevelEstimate, PolicyEstimate, SampleInfo
from qpyr.estimate.sampling import reservoir, stratified_choice
from qpyr.estimate.sources import describe_source, expand_sources, is_store
from qpyr.io.inputs import InputRef
from qpyr.policies.threads import single_threaded

__all__ = ["estimate"]

_MAX_FAILURES_SHOWN = 5


def estimate(
    sources: Any,
    *,
    policies: Sequence[str] | str | None = None,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    count: int | None = None,
    providers: Sequence[str] | str | None = None,
    months: float = 12,
    reads_per_month: float = 0,
    read_levels: Iterable[int] | int | None = None,
    egress_fraction: float = 0,
    prices: str | os.PathLike[str] | PriceTable | None = None,
    storage_options: dict[str, Any] | None = None,
    header_sample: int | None = None,
    progress: bool = False,
    format: str = "2.0",  # noqa: A002
    shard_bytes: int | None = None,
) -> EstimateResult:
    """Project the stored bytes and dollars of packing ``sources`` under each policy.

    Args:
        sources: directories, globs, files, URLs / bucket prefixes, file lists (``@list.txt`` or an
            existing ``.txt``/``.lst`` file: one path or URL per line), arrays — as
            :func:`qpyr.pack` takes them.
        policies: policy specs to compare (default: ``mixed`` and
            :data:`qpyr.policies.DEFAULT_POLICY`). The
            baselines fp32, fp16, lossless and JPEG q90 per level are always included.
        sample: images to pack (seeded, stratified by file size).
        seed: seed of every random choice (reservoir, strata, bootstrap): same inputs and seed,
            same result.
        count: corpus size to project to, instead of the listed count (the listing still supplies
            the sample and stops after ``count`` entries).
        providers: ``provider:class`` keys (or a bare provider for all its classes, or ``"all"``);
            default :data:`~qpyr.estimate.options.DEFAULT_PROVIDERS`.
        months: how long the corpus is kept (> 0).
        reads_per_month: full reads of the corpus per month (training epochs), >= 0.
        read_levels: levels each read touches (default all).
        egress_fraction: share (0..1) of the bytes read that leave the provider.
        prices: price file path or :class:`PriceTable` (default: the shipped table).
        storage_options: fsspec options for URL sources.
        header_sample: images whose header and file size are probed (default
            ``max(2000, 20 * sample)``, capped by the corpus).
        progress: show a progress bar on stderr while packing the sample.
        format: store format projected: ``"2.0"`` (default, what :func:`qpyr.pack` writes) or
            ``"1"`` (the 1.x layout of ``qpyr.pack(..., format="1")``).
        shard_bytes: format 2.0 shard size, as ``qpyr.pack(..., shard_bytes=)`` (default 32 MiB).

    Raises:
        InputNotFoundError: a source matches nothing or lists no images.
        InputError: every sampled image was unreadable.
        EstimateInputError: an argument is out of range.
        PriceTableError / UnknownStorageClassError: bad price file or storage class.
    """
    sample = check_int("sample", sample, 1)
    seed = check_int("seed", seed, 0)
    if count is not None:
        count = check_int("count", count, 1)
    terms = CostTerms.check(providers=providers, months=months, reads_per_month=reads_per_month,
                            read_levels=read_levels, egress_fraction=egress_fraction, prices=prices)
    hs = max(HEADER_SAMPLE_MIN, HEADER_SAMPLE_FACTOR * sample) if header_sample is None else \
        check_int("header_sample", header_sample, 1)
    hs = max(hs, sample)
    plist = policy_list(policies)
    major, shard_bytes = check_format(format, shard_bytes)

    expanded = expand_sources(sources, storage_options)
    for s in expanded:
        if isinstance(s, str) and is_store(s, storage_options):
            raise EstimateInputError("sources", f"{s!r} is a qpyr store: estimate it alone with "
                                     "estimate_store() (CLI: qpyr estimate STORE).")

    # -- list and probe ------------------------------------------------------------------
    from itertools import islice

    from qpyr.io.inputs import discover

    rng = random.Random(seed)
    stream: Iterable[InputRef] = discover(expanded, storage_options=storage_options)
    if count is not None:
        stream = islice(stream, count)
    listed, kept = reservoir(stream, hs, rng)
    if listed == 0:
        raise InputNotFoundError("The sources hold no images.")
    n_total = count if count is not None else listed
    refs = [r for _, r in kept]
    probed, failures = _probe_all(refs)
    probe_failed = len(failures)
    if not probed:
        raise InputError(f"All {len(refs)} sampled images are unreadable; first error: {failures[0]}")

    # -- stratified packed sample ----------------------------------------------------------
    m = len(probed)
    use_file = all(g.file_bytes for _, g in probed) and len({g.file_bytes for _, g in probed}) > 1
    geoms = normalize_file_bytes([g for _, g in probed]) if use_file else [g for _, g in probed]
    strat_key = "file_bytes" if use_file else "pixels"
    if sample >= m:
        chosen = list(range(m))
        strat_key = "none"
    else:
        keyval = [float(g.file_bytes or 0) if use_file else float(g.channels * g.height * g.width) for g in geoms]
        chosen = stratified_choice(keyval, sample, rng)
    arrays, names, sample_geoms, load_failures, loaded = _load_sample([(probed[j][0], geoms[j]) for j in chosen])
    sampled = [chosen[i] for i in loaded]  # probe index of each packed image
    load_failed = len(load_failures)
    failures += load_failures
    if not arrays:
        raise InputError(f"All {len(chosen) + probe_failed} sampled images are unreadable; "
                         f"first error: {failures[0]}")
    n = len(arrays)
    unreadable = 1 - (m / len(refs)) * (n / len(chosen))
    n_readable = n_total * (1 - unreadable)
    if n < 3 and n < m:
        raise InputError(f"Only {n} sampled image(s) could be packed; an interval needs at least 3 "
                         f"(first error: {failures[0] if failures else 'none'}).")

    # -- pack ----------------------------------------------------------------------------
    # quality on an evenly spaced subset of the (randomly ordered) packed sample
    qidx = sorted({int(i) for i in np.linspace(0, n - 1, min(n, QUALITY_SAMPLE)).round()})
    packed, (jb, js, jp, converted) = _pack_all([p for p, _, _ in plist], arrays, names, qidx, progress,
                                                major, shard_bytes)

    # -- project -------------------------------------------------------------------------
    nlev_p = max(len(level_shapes(g.height, g.width)) for g in geoms)
    xs = covariates(sample_geoms, nlev_p, use_file)
    xp = covariates(geoms, nlev_p, use_file)
    level_items = n_readable * (xp[:, :, 0] > 0).mean(axis=0)
    # The probe saw every image of the corpus, in listing (= pack) order: simulate tasks exactly.
    exact = count is None and len(refs) == listed
    notes: list[str] = []
    projs: list[_Proj] = []
    for spec, base, req in plist:
        pk = packed[spec]
        planner = Planner(spec, pk, sample_geoms)
        if not planner.shape_only:
            notes.append(f"policy {spec}: encodings depend on pixel content; the bucket layout of unsampled "
                         "images is modelled from the sample's encoding frequencies per level.")
        xs_p = xs * storage_factors(planner, sample_geoms, xs.shape[1])[:, :, None]
        xp_p = xp * storage_factors(planner, geoms, xp.shape[1])[:, :, None]
        dp = project_data(pk.y, xs_p, xp_p, n_readable, (seed, zlib.crc32(spec.encode())))
        pred = np.einsum("mlk,k->ml", xp_p, dp.coef)
        model = layout_model if major >= 2 else layout_model_1x
        if major >= 2:
            # record sizes: measured where the image was packed, predicted elsewhere — the
            # prediction scaled per level by the sample's measured / predicted bytes (the pooled
            # fit apportions bytes to levels less well than it predicts their total), so that
            # each level's records fill shards as they would
            nl = min(pred.shape[1], pk.y.shape[1])
            rows = np.array(sampled, int)
            got, want = pred[rows, :nl].sum(axis=0), pk.y[:, :nl].sum(axis=0)
            scale = np.ones(pred.shape[1])
            scale[:nl] = np.where((got > 0) & (want > 0), want / np.where(got > 0, got, 1.0), 1.0)
            pred = pred * scale[None, :]
            pred[rows[:, None], np.arange(nl)[None, :]] = pk.y[:, :nl]
        lay = model.project_layout(planner, geoms, pred, n_readable, model.calibrate(pk, n), xp.shape[1],
                                   exact_order=exact, seed=seed)
        if not pk.measured:
            # The bytes store skipped quality measurement: its catalog's quality table held NaN,
            # which compresses away; a real pack stores two float32 per lossy image-level.
            qual = level_quality(pk.ssim, pk.psnr, pk.y > 0)
            lay.overhead += 8.0 * sum(level_items[li] for li, q in enumerate(qual)
                                      if li < len(level_items) and not q[2])
        projs.append(_Proj(spec, LABELS.get(spec, spec), "qpyr", base, req, dp, lay, pk.ssim, pk.psnr, pk.y > 0, None))
    dpj = project_data(jb, xs, xp, n_readable, (seed, zlib.crc32(JPEG_POLICY.encode())))
    projs.append(_Proj(JPEG_POLICY, LABELS[JPEG_POLICY], "jpeg", True, False, dpj, None, js, jp, jb > 0, jb[jb > 0]))
    if converted:
        notes.append(f"JPEG baseline: {converted} of {n} sampled images are not 8-bit gray/RGB and were mapped "
                     "to it (alpha/extra channels dropped, 16-bit / 257, other types scaled to their range).")

    # -- price ---------------------------------------------------------------------------
    totals = {pr.spec: pr.data.total.mean + pr.overhead for pr in projs}
    results = [_policy_estimate(pr, level_items, n_readable, totals, terms) for pr in projs]
    if probe_failed or load_failed:
        notes.append(f"{probe_failed + load_failed} sampled image(s) were unreadable and skipped; the projection "
                     f"assumes the same unreadable share ({unreadable:.2%}) of the corpus, which a real pack "
                     "would refuse until they are removed.")
    if major < 2:
        notes.append("projected for the format 1.x layout (qpyr.pack(..., format='1')): size-class buckets with "
                     "shard indexes; its reader fetches ranges whatever the access order, so both access patterns "
                     "cost the same.")
    return EstimateResult(
        mode="sample",
        sources=tuple(describe_source(s) for s in expanded),
        items=int(n_total), items_from="count" if count is not None else "listed", listed=int(listed),
        readable_items=float(n_readable), confidence=CONFIDENCE,
        sample=SampleInfo(seed=seed, requested=sample, probed=len(refs), probe_failed=probe_failed, packed=n,
                          load_failed=load_failed, failures=tuple(failures[:_MAX_FAILURES_SHOWN]),
                          stratified_by=strat_key, bootstrap=BOOTSTRAP if n < m else 0,
                          quality_measured=len(qidx)),
        **terms.result_fields(), policies=tuple(results), notes=tuple(notes),
        store_format="2.0" if major >= 2 else "1.x", shard_bytes=shard_bytes if major >= 2 else None,
    )


def _probe_all(refs: list[InputRef]) -> tuple[list[tuple[InputRef, Geom]], list[str]]:
    """Probe every reference (8 threads for URLs: header reads are latency-bound); returns the
    readable ones with their geometry, in order, and the error messages of the others."""

    def probe_one(ref: InputRef) -> Geom | str:
        try:
            return probe(ref)
        except QpyrError as e:
            return str(e)

    if any(isinstance(r.source, str) and "://" in r.source for r in refs):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as ex:
            got = list(ex.map(probe_one, refs))
    else:
        got = [probe_one(r) for r in refs]
    probed: list[tuple[InputRef, Geom]] = []
    failures: list[str] = []
    for r, g in zip(refs, got, strict=True):
        if isinstance(g, str):
            failures.append(g)
        else:
            probed.append((r, g))
    return probed, failures


def _load_sample(chosen: list[tuple[InputRef, Geom]]
                 ) -> tuple[list[np.ndarray], list[str], list[Geom], list[str], list[int]]:
    """Load the chosen images; returns (arrays [C, H, W], unique names, geometries of the loaded
    arrays with the probe's file bytes and format, error messages of those that failed, the
    positions in ``chosen`` of those loaded)."""
    from qpyr.io.inputs import load

    arrays: list[np.ndarray] = []
    names: list[str] = []
    sample_geoms: list[Geom] = []
    failures: list[str] = []
    loaded: list[int] = []
    for k, (ref, g) in enumerate(chosen):
        try:
            a = load(ref)
        except QpyrError as e:
            failures.append(str(e))
            continue
        loaded.append(k)
        arrays.append(a)
        names.append(ref.name if ref.name not in names else f"{ref.name}#{len(names)}")
        sample_geoms.append(Geom(int(a.shape[0]), int(a.shape[1]), int(a.shape[2]), a.dtype.name, g.file_bytes, g.format))
    return arrays, names, sample_geoms, failures, loaded


def _pack_all(specs: list[str], arrays: list[np.ndarray], names: list[str], qidx: list[int],
              progress: bool, layout: int = 2, shard_bytes: int | None = None
              ) -> tuple[dict[str, Packed], tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Pack the sample with every policy and encode it as JPEG q90 per level (with a progress bar
    on request)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(arrays) * (len(specs) + 1), unit="img", desc="estimate: packing sample", leave=False)

    def tick() -> None:
        if bar is not None:
            bar.update(1)

    packed: dict[str, Packed] = {}
    try:
        with single_threaded():
            for spec in specs:
                packed[spec] = pack_sample(spec, arrays, names, qidx, tick, layout=layout, shard_bytes=shard_bytes)
            jpeg = jpeg_sample(arrays, qidx, tick)
    finally:
        if bar is not None:
            bar.close()
    return packed, jpeg


@dataclass
class _Proj:
    """One policy's projection before pricing."""

    spec: str
    label: str
    kind: str
    baseline: bool
    requested: bool
    data: DataProjection
    layout: StoreLayout | None  # qpyr policies
    ssim: np.ndarray
    psnr: np.ndarray
    present: np.ndarray
    jpeg_sizes: np.ndarray | None  # JPEG baseline: sampled file sizes

    @property
    def overhead(self) -> float:
        return self.layout.overhead if self.layout is not None else 0.0


def _policy_estimate(pr: _Proj, level_items: np.ndarray, n_readable: float, totals: dict[str, float],
                     terms: CostTerms) -> PolicyEstimate:
    dp = pr.data
    ov = pr.overhead
    proj = Interval(dp.total.mean + ov, dp.total.low + ov, dp.total.high + ov)
    nl = max(len(dp.per_level), len(level_items))
    per_level = np.pad(dp.per_level, (0, nl - len(dp.per_level)))
    items_l = np.pad(level_items, (0, nl - len(level_items)))
    qual = level_quality(pr.ssim, pr.psnr, pr.present)
    levels = []
    for li in range(nl):
        if items_l[li] <= 0:
            continue
        s_, p_, ex = qual[li] if li < len(qual) else (None, None, False)
        levels.append(LevelEstimate(li, float(items_l[li]), float(per_level[li] / items_l[li]),
                                    float(per_level[li]), s_, p_, ex))
    touched = [li for li in range(nl) if terms.read_levels is None or li in terms.read_levels]
    data_read = float(sum(per_level[li] for li in touched))
    items_read = float(sum(items_l[li] for li in touched))
    reads: dict[str, tuple[float, float]] = {}  # access pattern -> (bytes, requests) of one full read
    if pr.layout is not None:
        lay = pr.layout
        layout = integer_histogram(lay.histogram, proj.mean)
        for name in ACCESS_PATTERNS:
            lr = lay.reads[name]
            extra_b = sum(float(lr.extra_bytes[li]) for li in touched if li < len(lr.extra_bytes))
            extra_r = sum(float(lr.extra_requests[li]) for li in touched if li < len(lr.extra_requests))
            reads[name] = (data_read + extra_b + lay.open_bytes, lr.per_item * items_read + extra_r + lay.open_requests)
    else:  # JPEG files: one GET per file read, in any order
        sizes = pr.jpeg_sizes if pr.jpeg_sizes is not None else np.zeros(0)
        nobj = float(items_l.sum())
        layout = integer_histogram([(float(s), nobj / sizes.size) for s in sizes], proj.mean)
        reads = {name: (data_read, items_read) for name in ACCESS_PATTERNS}
    costs = terms.costs(layout, proj, reads)
    fp32 = totals.get("fp32")
    jpeg = totals.get(JPEG_POLICY)
    return PolicyEstimate(
        policy=pr.spec, label=pr.label, kind=pr.kind, baseline=pr.baseline, requested=pr.requested,
        bytes_per_image=proj.scaled(1 / n_readable), projected_bytes=proj, data_bytes=float(dp.total.mean),
        overhead_bytes=float(ov), objects=int(layout.objects), levels=tuple(levels),
        ratio_vs_fp32=fp32 / proj.mean if fp32 and proj.mean > 0 else None,
        ratio_vs_jpeg=jpeg / proj.mean if jpeg and proj.mean > 0 else None,
        costs=costs, reads={k: (rq, rb) for k, (rb, rq) in reads.items()},
    )
