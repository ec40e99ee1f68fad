"""Which bucket each image lands in, per level, under a policy — from its probed geometry,
without pixels. Policies that choose encodings from the pixels get the sample's encoding mix
per level (with unseen encodings estimated)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qpyr.estimate.packing import Packed
from qpyr.estimate.probe import Geom, level_shapes

__all__ = ["Planner", "storage_factors"]


@dataclass(frozen=True)
class _UnseenEncoding:
    """Stands for an encoding the corpus uses but the sample did not: its own buckets, with the
    storage type of a sampled one."""

    id: str
    quantizer: Any


def _encoding_mix(counts: dict[str, int], encs: dict[str, Any]) -> list[tuple[float, Any]]:
    """Encoding shares at one level from the sample's counts: seen encodings scaled by the
    Good-Turing coverage 1 - f1/n, plus Chao1's estimate of unseen ones sharing f1/n (encodings
    chosen per image, e.g. a DCT quality found by search, keep appearing as the corpus grows)."""
    n = sum(counts.values())
    singles = sorted(e for e, c in counts.items() if c == 1)
    f1, f2 = len(singles), sum(1 for c in counts.values() if c == 2)
    unseen = (n - 1) / n * (f1 * f1 / (2 * f2) if f2 else f1 * (f1 - 1) / 2) if f1 and n > 1 else 0.0
    cover = 1 - f1 / n if unseen > 0 else 1.0
    out: list[tuple[float, Any]] = [(cover * c / n, encs[e]) for e, c in sorted(counts.items())]
    k = int(math.ceil(unseen))
    for i in range(k):
        t = encs[singles[i % f1]]
        frac = min(1.0, unseen - i)
        out.append(((1 - cover) * frac / unseen, _UnseenEncoding(f"{t.id}~unseen{i}", t.quantizer)))
    return out


class Planner:
    """Maps an image geometry to its per-level buckets under a policy, without pixels.

    Uses the policy's own plan on shape-only (broadcast) arrays. A policy whose choice depends on
    pixel content is detected (its plan disagrees with the packed sample) and handled by giving
    each probed image, per level, the encodings seen in the sample at that level, weighted by
    their frequency.
    """

    def __init__(self, spec: str, packed: Packed, sample_geoms: Sequence[Geom]):
        from qpyr.codecs.encoding import Encoding
        from qpyr.policies import parse_policy
        from qpyr.write import DEFAULT_SLOTS_PER_TASK

        self.policy = parse_policy(spec)
        self.spt = DEFAULT_SLOTS_PER_TASK
        #: format 2.0 names record classes (no geometry) where 1.x names size-class buckets
        self.records = "records" in packed.manifest
        self._cache: dict[tuple[int, int, int, str], list[list[tuple[float, Any, Any, int, int, str]]]] = {}
        # Policies that search encodings on the pixels (they expose plan_encoded) are content
        # dependent by construction; for the others, check the shape-only plan on the sample.
        self.shape_only = not hasattr(self.policy, "plan_encoded")
        if self.shape_only:
            try:
                for g, actual in zip(sample_geoms, packed.buckets, strict=True):
                    if [self.key(opts[0][1]) for opts in self.plan(g)] != actual:
                        self.shape_only = False
                        break
            except Exception:  # a plan that needs pixels fails on shape-only arrays
                self.shape_only = False
        self._by_level: dict[int, list[tuple[float, Any]]] = {}
        if not self.shape_only:
            self._cache.clear()
            encs = {eid: Encoding.from_dict(e) for eid, e in packed.manifest["encodings"].items()}
            bdict = {b["path"]: b for b in packed.manifest["buckets"]}
            counts: dict[int, dict[str, int]] = {}
            for row in packed.buckets:
                for li, path in enumerate(row):
                    eid = bdict[path]["encoding"]
                    counts.setdefault(li, {}).setdefault(eid, 0)
                    counts[li][eid] += 1
            for li, cnt in counts.items():
                self._by_level[li] = _encoding_mix(cnt, encs)

    def key(self, spec: Any) -> str:
        """The manifest path of the bucket ``spec`` (a ``BucketSpec``) lands in: 1.x its array's
        path; 2.0 its record class's (level, encoding, dtype, channels: no size classes)."""
        if self.records and hasattr(spec, "record_class"):
            return str(spec.record_class["path"])
        return str(spec.path)

    def plan(self, g: Geom) -> list[list[tuple[float, Any, Any, int, int, str]]]:
        """Per level: [(weight, BucketSpec, param shape, chunks, shard cells, encoding id)]."""
        key = (g.channels, g.height, g.width, g.dtype)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        from qpyr.format.layout import BucketSpec, size_class

        shapes = level_shapes(g.height, g.width)
        src = np.dtype(g.dtype)
        if self.shape_only:
            zero = np.zeros((), np.float32)
            encs = self.policy.plan([np.broadcast_to(zero, (g.channels, hh, ww)) for hh, ww in shapes], src)
            options = [[(1.0, e)] for e in encs]
        else:
            options = [self._by_level.get(li, self._by_level[max(self._by_level)]) for li in range(len(shapes))]
        out = []
        for li, ((hh, ww), opts) in enumerate(zip(shapes, options, strict=True)):
            row = []
            for wgt, enc in opts:
                q = enc.quantizer
                spec = BucketSpec(level=li, encoding_id=enc.id, channels=g.channels, height=size_class(hh),
                                  width=size_class(ww), packed=q.is_packed, dtype=q.storage_dtype(src).name,
                                  slots_per_task=self.spt)
                th, tw = spec.chunk_hw
                sh, sw = spec.shard_hw
                chunks = -(-hh // th) * -(-ww // tw)
                cells = -(-hh // sh) * -(-ww // sw)
                row.append((wgt, spec, q.param_shape(g.channels, spec.height, spec.width), chunks, cells, enc.id))
            out.append(row)
        self._cache[key] = out
        return out


def storage_factors(planner: Planner, geoms: Sequence[Geom], nlev: int) -> np.ndarray:
    """[images, levels] bytes per stored sample of each level's planned encoding (4 fp32, 2 fp16,
    1 int8/uint8 source, 0.5 packed int4): scaling the covariates by it lets one regression
    serve a policy that mixes encodings across levels (``mixed``). 1 where the encoding depends
    on content."""
    out = np.ones((len(geoms), nlev))
    if not planner.shape_only:
        return out
    for i, g in enumerate(geoms):
        for li, row in enumerate(planner.plan(g)[:nlev]):
            spec = row[0][1]
            out[i, li] = np.dtype(spec.dtype).itemsize * (0.5 if spec.packed else 1.0)
    return out
