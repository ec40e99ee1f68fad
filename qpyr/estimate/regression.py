"""Extrapolation of the data bytes from the packed sample to the corpus: covariates from the
probe, a two-phase regression estimator, and its bootstrap interval (``spec/estimate.md``,
Method 4-5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qpyr.estimate.probe import Geom, level_shapes
from qpyr.estimate.results import Interval

__all__ = ["BOOTSTRAP", "DataProjection", "covariates", "normalize_file_bytes", "project_data"]

#: Bootstrap replicates of the packed sample.
BOOTSTRAP = 1000


def normalize_file_bytes(geoms: list[Geom]) -> list[Geom]:
    """File bytes rescaled per (file format, channels) to the group's mean samples per file byte
    over the probe, so that a JPEG and a PNG (or a gray and an RGB file) of equal complexity weigh
    the same: a corpus of mixed formats would otherwise confound format with content."""
    import dataclasses

    tot: dict[tuple[str, int], list[float]] = {}
    for g in geoms:
        t = tot.setdefault((g.format, g.channels), [0.0, 0.0])
        t[0] += g.channels * g.height * g.width
        t[1] += g.file_bytes or 0.0
    out = []
    for g in geoms:
        samples, nbytes = tot[(g.format, g.channels)]
        out.append(dataclasses.replace(g, file_bytes=(g.file_bytes or 0.0) * samples / nbytes) if nbytes > 0 else g)
    return out


def covariates(geoms: Sequence[Geom], nlev: int, use_file: bool) -> np.ndarray:
    """[items, levels, k] covariates: pyramid samples of the level and (``use_file``) the file's
    bytes apportioned to the level by its share of the pyramid's samples."""
    x = np.zeros((len(geoms), nlev, 2 if use_file else 1))
    for i, g in enumerate(geoms):
        s = np.array([g.channels * hh * ww for hh, ww in level_shapes(g.height, g.width)], float)[:nlev]
        x[i, :len(s), 0] = s
        if use_file:
            x[i, :len(s), 1] = (g.file_bytes or 0) * s / s.sum()
    return x


def _fit(y: np.ndarray, x: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """Non-negative weighted least squares through the origin (k <= 2 covariates): the full fit if
    its coefficients are >= 0, else the better single-covariate fit."""
    sw = np.sqrt(wt)
    a = x * sw[:, None]
    b = y * sw
    if x.shape[1] > 1:
        coef = np.linalg.lstsq(a, b, rcond=None)[0]
        if (coef >= 0).all():
            return np.asarray(coef)
    best, best_rss = None, math.inf
    for j in range(x.shape[1]):
        den = float(a[:, j] @ a[:, j])
        if den <= 0:
            continue
        cj = max(float(a[:, j] @ b) / den, 0.0)
        rss = float(((b - cj * a[:, j]) ** 2).sum())
        if rss < best_rss:
            best_rss = rss
            best = np.zeros(x.shape[1])
            best[j] = cj
    return best if best is not None else np.zeros(x.shape[1])


def _t95(df: int) -> float:
    """Two-sided 90 % Student-t quantile (t_{0.95, df}); Cornish-Fisher above df 2 (< 0.5 % off)."""
    if df <= 1:
        return 6.313751514675043
    if df == 2:
        return 2.919985580353725
    z = 1.6448536269514722
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass
class DataProjection:
    """Projected data bytes of one policy."""

    total: Interval  # data bytes over the corpus
    per_level: np.ndarray  # [L] mean data bytes per level over the corpus
    coef: np.ndarray  # bytes per covariate unit


def project_data(y: np.ndarray, xs: np.ndarray, xp: np.ndarray, n_readable: float, seed_key: tuple[int, ...]) -> DataProjection:
    """Two-phase regression estimator of the corpus's data bytes.

    ``y`` [n, L] bytes of the packed sample, ``xs`` [n, L, k] its covariates, ``xp`` [m, L, k]
    the probed sample's covariates (the packed sample is a subset), ``n_readable`` the corpus
    size. Estimate: N (ybar_s + b . (xbar_P - xbar_s)), b from a non-negative WLS fit (weights
    1/samples) over the (item, level) rows. Variance: bootstrap over packed items (refitting b)
    with the finite-population factor (1 - n/m) and a small-sample n/(n-k) correction, plus the
    probe phase's sampling variance b' S b / m (1 - m/N); interval = mean +- t_{0.95, n-k} sd.
    """
    n, m = y.shape[0], xp.shape[0]
    nlev = max(y.shape[1], xs.shape[1], xp.shape[1])  # probe and packed sample may differ in depth
    y = np.pad(y, ((0, 0), (0, nlev - y.shape[1])))
    xs = np.pad(xs, ((0, 0), (0, nlev - xs.shape[1]), (0, 0)))
    xp = np.pad(xp, ((0, 0), (0, nlev - xp.shape[1]), (0, 0)))
    present = xs[:, :, 0] > 0
    item_of = np.nonzero(present)[0]
    rows_y = y[present]
    rows_x = xs[present]
    rows_w = 1.0 / rows_x[:, 0]
    ybar_l = y.mean(axis=0)
    xs_l = xs.mean(axis=0)  # [L, k]
    xp_l = xp.mean(axis=0)
    coef = _fit(rows_y, rows_x, rows_w)
    per_level = np.maximum(n_readable * (ybar_l + (xp_l - xs_l) @ coef), 0.0)
    mean = float(n_readable * (ybar_l.sum() + (xp_l - xs_l).sum(axis=0) @ coef))

    y_item = y.sum(axis=1)
    xs_item = xs.sum(axis=1)  # [n, k]
    xp_item = xp.sum(axis=1)
    xp_bar = xp_item.mean(axis=0)
    var = 0.0
    if n < m and n > 1:
        rng = np.random.default_rng(list(seed_key))
        reps = np.empty(BOOTSTRAP)
        for r in range(BOOTSTRAP):
            cnt = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
            b = _fit(rows_y, rows_x, rows_w * cnt[item_of])
            reps[r] = n_readable * ((cnt @ y_item) / n + (xp_bar - (cnt @ xs_item) / n) @ b)
        used = int((coef > 0).sum()) or 1
        var += float(reps.var(ddof=1)) * (1 - n / m) * n / max(n - used, 1)
    if m < n_readable and m > 1:
        cov = np.atleast_2d(np.cov(xp_item, rowvar=False))
        var += float(coef @ cov @ coef) / m * (1 - m / n_readable) * n_readable**2
    used = int((coef > 0).sum()) or 1
    half = _t95(max(n - used, 1)) * math.sqrt(max(var, 0.0))
    return DataProjection(Interval(mean, max(mean - half, 0.0), mean + half), per_level, coef)
