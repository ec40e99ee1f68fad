"""The ``budget`` policy: rate-distortion optimal encodings of every level within a byte budget.

For each level the policy encodes a small candidate set (:func:`candidates`: lossless, fp16,
uint8 per level/channel, uint4 per level/channel/8x8 block, and ``qpyr.dct`` at qualities
10..98 with 4:2:0 chroma, plus 4:4:4 for levels whose short side is < 128), measures each
candidate's stored bytes ``b`` (exactly what the writer stores: chunks + shard index entries +
parameters) and RGB-SSIM ``s`` on the decoded level, and then solves, **exactly**::

    minimise   D = sum_l w_l * (1 - s_l)      subject to   sum_l b_l <= B
                                                            s_l >= floor (when ssim=X is given)

The search merges per-level Pareto sets (bytes ascending, distortion strictly descending)
level by level, dropping dominated partial sums: the result is the whole RD frontier of the
image (:meth:`BudgetPolicy.frontier`), and the chosen point is the frontier's lowest
distortion with bytes <= B. ``w_l`` (``weights=w0/w1/...``, the last weight repeats) default
to 1 for every level, i.e. the policy maximises the mean SSIM across levels. A budget below
the smallest possible encoding is a :class:`~qpyr.errors.PolicyError` that states the minimum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qpyr.codecs.encoding import Encoding, default_codec
from qpyr.codecs.quant import Granularity, Quantizer, StoredType
from qpyr.errors import PolicyError
from qpyr.policies._params import _parse_float, _parse_int
from qpyr.policies.dct import dct_encoding, pool_dct_quality
from qpyr.policies.encode import EncodedLevel, encode_level
from qpyr.policies.lossless import lossless_encoding

__all__ = ["BudgetPolicy", "candidates", "pareto", "DCT_QUALITIES", "parse"]

DCT_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 85, 90, 95, 98)


def candidates(level: np.ndarray, source_dtype: np.dtype[Any], qualities: tuple[int, ...] = DCT_QUALITIES) -> list[Encoding]:
    """The candidate encodings of one level (see the module docstring)."""
    dt = np.dtype(source_dtype)
    c, h, w = level.shape
    out = [lossless_encoding(dt, c)]
    if dt == np.bool_:
        return out
    qs = [Quantizer(dtype=StoredType.FLOAT16, clamp=True),
          Quantizer(dtype=StoredType.UINT8), Quantizer(dtype=StoredType.UINT8, granularity=Granularity.CHANNEL),
          Quantizer(dtype=StoredType.UINT4), Quantizer(dtype=StoredType.UINT4, granularity=Granularity.CHANNEL),
          Quantizer(dtype=StoredType.UINT4, granularity=Granularity.BLOCK, block=8)]
    out += [Encoding(quantizer=q, codec=default_codec(q, dt)) for q in qs]
    if c <= 4 and (dt in (np.uint8, np.uint16) or dt.kind == "f"):
        chromas = ["420"] + (["444"] if min(h, w) < 128 and c >= 3 else [])
        out += [dct_encoding(q, ch, dt) for ch in chromas for q in qualities]
    return out


def pareto(points: list[tuple[int, float, Any]]) -> list[tuple[int, float, Any]]:
    """Points ``(bytes, distortion, payload)`` not dominated by another: bytes ascending,
    distortion strictly descending (ties broken by fewer bytes, then first seen)."""
    out: list[tuple[int, float, Any]] = []
    for p in sorted(points, key=lambda p: (p[0], p[1])):
        if not out or p[1] < out[-1][1]:
            out.append(p)
    return out


@dataclass(frozen=True)
class BudgetPolicy:
    """``budget:bytes=B[,weights=w0/w1/...][,ssim=X][,qualities=q1/q2/...]``."""

    budget: int
    weights: tuple[float, ...] = (1.0,)
    ssim_floor: float | None = None
    qualities: tuple[int, ...] = DCT_QUALITIES
    params: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # the spec as given

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise PolicyError(f"Expected a positive byte budget. Got {self.budget}.")
        if not self.weights or any(w < 0 for w in self.weights):
            raise PolicyError(f"Expected non-negative level weights. Got {self.weights}.")

    @property
    def spec(self) -> str:
        """Canonical spec from the fields (keys sorted, defaults left out)."""
        kv = {"bytes": str(self.budget)}
        if self.qualities != DCT_QUALITIES:
            kv["qualities"] = "/".join(str(q) for q in self.qualities)
        if self.ssim_floor is not None:
            kv["ssim"] = f"{self.ssim_floor:g}"
        if self.weights != (1.0,):
            kv["weights"] = "/".join(f"{w:g}" for w in self.weights)
        return "budget:" + ",".join(f"{k}={kv[k]}" for k in sorted(kv))

    def weight(self, li: int) -> float:
        return self.weights[min(li, len(self.weights) - 1)]

    def evaluate(self, levels: list[np.ndarray], source_dtype: np.dtype[Any], *, slots_per_task: int = 256) -> list[list[EncodedLevel]]:
        """Every candidate of every level, encoded and measured (the frontier's raw material)."""
        out = []
        for li, lv in enumerate(levels):
            es = [encode_level(lv, source_dtype, enc, li=li, slots_per_task=slots_per_task)
                  for enc in candidates(lv, source_dtype, self.qualities)]
            if self.ssim_floor is not None:
                es = [e for e in es if e.encoding.quantizer.is_lossless or e.ssim >= self.ssim_floor]
            out.append(es)
        return out

    def _frontier(self, evals: list[list[EncodedLevel]]) -> list[tuple[int, float, tuple[int, ...]]]:
        front: list[tuple[int, float, Any]] = [(0, 0.0, ())]
        for li, es in enumerate(evals):
            w = self.weight(li)
            # max(0, .): a float SSIM can exceed 1 by rounding; no candidate beats exact
            lvl = pareto([(e.nbytes, w * max(0.0, 1.0 - e.ssim), k) for k, e in enumerate(es)])
            front = pareto([(b0 + b1, d0 + d1, picks + (k,)) for b0, d0, picks in front for b1, d1, k in lvl])
        return front

    def frontier(self, levels: list[np.ndarray], source_dtype: np.dtype[Any], *, slots_per_task: int = 256,
                 evals: list[list[EncodedLevel]] | None = None) -> list[dict[str, Any]]:
        """The image's RD frontier: ``[{"bytes", "distortion", "mean_ssim", "levels": [{"encoding",
        "bytes", "ssim"}]}]``, bytes ascending (JSON-ready)."""
        evals = evals if evals is not None else self.evaluate(levels, source_dtype, slots_per_task=slots_per_task)
        out = []
        for b, d, picks in self._frontier(evals):
            lv = [evals[li][k] for li, k in enumerate(picks)]
            out.append({"bytes": b, "distortion": d, "mean_ssim": float(np.mean([e.ssim for e in lv])),
                        "levels": [{"encoding": e.encoding.label, "bytes": e.nbytes, "ssim": e.ssim} for e in lv]})
        return out

    def choose(self, evals: list[list[EncodedLevel]]) -> list[EncodedLevel]:
        front = self._frontier(evals)
        fits = [p for p in front if p[0] <= self.budget]
        if not fits:
            raise PolicyError(f"Budget of {self.budget} bytes is below the smallest possible encoding of this "
                              f"image: the minimum is {front[0][0]} bytes (budget:bytes={front[0][0]}).")
        b, d, picks = min(fits, key=lambda p: (p[1], p[0]))
        chosen = [evals[li][k] for li, k in enumerate(picks)]
        for e in chosen:
            e.decision = "searched"
        return chosen

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        """Concrete encodings (DCT levels with the quality the search chose)."""
        return [e.encoding for e in self.choose(self.evaluate(levels, source_dtype))]

    def plan_encoded(self, levels: list[np.ndarray], source_dtype: np.dtype[Any], *, slots_per_task: int) -> list[EncodedLevel]:
        """As stored: DCT levels pooled into one bucket whatever their quality (:func:`qpyr.policies.dct.pool_dct_quality`)."""
        return [pool_dct_quality(e) for e in self.choose(self.evaluate(levels, source_dtype, slots_per_task=slots_per_task))]

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": "budget", "bytes": self.budget, "weights": list(self.weights),
                             "distortion": "sum_l w_l * (1 - SSIM_l)", "search": "exact (Pareto merge)",
                             "dct_qualities": list(self.qualities)}
        if self.ssim_floor is not None:
            d["ssim_floor"] = self.ssim_floor
        return d


def parse(params: dict[str, str]) -> BudgetPolicy:
    """``budget`` from its parameters (names already checked by :func:`qpyr.policies.parse_policy`)."""
    if "bytes" not in params:
        raise PolicyError("Policy 'budget' needs bytes=B (stored bytes per image, e.g. budget:bytes=60000).")
    b = _parse_int("bytes", params["bytes"], 1, 2**62)
    w: tuple[float, ...] = (1.0,)
    if "weights" in params:
        w = tuple(_parse_float("weights", x, 0.0, 1e6) for x in params["weights"].split("/"))
    q: tuple[int, ...] = DCT_QUALITIES
    if "qualities" in params:
        q = tuple(sorted({_parse_int("qualities", x, 1, 100) for x in params["qualities"].split("/")}))
    floor = _parse_float("ssim", params["ssim"], 0.0, 1.0) if "ssim" in params else None
    return BudgetPolicy(b, w, floor, q, tuple(sorted(params.items())))
