"""The ``quality`` policy and quality floors: per level, the cheapest encoding that meets an SSIM / PSNR floor.

``quality:ssim=X`` / ``quality:psnr=Y`` (``chroma=444|420|auto``, ``tables=ssim|annexk``,
``entropy=jfif|ctx|fast``, ``search=fast|exact``) searches, per level, a sufficient DCT quality
(:mod:`qpyr.policies.search`) and keeps the cheaper of it and lossless. Floors (``--min-ssim`` / ``--min-psnr``, :func:`parse_floors`)
apply to any policy through :func:`with_floors`: a level that misses its floor is re-encoded at
higher quality or precision (:class:`FloorPolicy`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from qpyr.codecs.encoding import Encoding, default_codec
from qpyr.codecs.quant import Quantizer, StoredType
from qpyr.errors import PolicyError
from qpyr.policies._params import _parse_entropy, _parse_float, _parse_tables, _spec
from qpyr.policies.dct import entropy_for, pool_dct_quality
from qpyr.policies.lossless import lossless_encoding
from qpyr.policies.search import Searcher, lossless_within_reach

__all__ = ["QualityPolicy", "FloorPolicy", "Floors", "parse_floors", "with_floors", "parse"]

_P = TypeVar("_P")

#: How many qualities below a level's choice the search of the next finer level starts (on
#: photo crops the finer level needed 0-13 less, typically 3-8).
_FINER_STEP = 3


def _meets(e: Any, ssim: float | None, psnr: float | None) -> bool:
    return (ssim is None or e.ssim >= ssim) and (psnr is None or e.psnr >= psnr)


@dataclass(frozen=True)
class Floors:
    """Quality floors, global and per level: ``ssim[level]`` / ``psnr[level]`` (key -1 = all levels)."""

    ssim: tuple[tuple[int, float], ...] = ()
    psnr: tuple[tuple[int, float], ...] = ()

    def at(self, level: int) -> tuple[float | None, float | None]:
        def pick(table: tuple[tuple[int, float], ...]) -> float | None:
            d = dict(table)
            return d.get(level, d.get(-1))

        return pick(self.ssim), pick(self.psnr)

    def __bool__(self) -> bool:
        return bool(self.ssim or self.psnr)


@dataclass(frozen=True)
class QualityPolicy:
    """``quality:ssim=X`` / ``quality:psnr=Y``: per level, the cheapest encoding that meets the
    floor among DCT (``chroma`` 444, 420 or ``auto`` = both) at the smallest sufficient quality
    and lossless (the fallback when no lossy candidate meets the floor)."""

    floors: Floors
    chroma: str = "444"
    params: tuple[tuple[str, str], ...] = ()
    family: str = "ssim"  # DCT tables searched over: "ssim" (qpyr's) or "annexk" (JPEG's)
    entropy: str = "jfif"  # "jfif" (JPEG stream: libjpeg-turbo / nvJPEG decode), "ctx" (smallest) or "fast" (zstd)
    search: str = "fast"  # "fast" (predicted, ~2 measurements per level) or "exact" (smallest quality)

    @property
    def spec(self) -> str:
        return _spec("quality", self.params)

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        """Concrete encodings (each DCT level with the quality its search found)."""
        return [e.encoding for e in self._search(levels, source_dtype, slots_per_task=256)]

    def plan_encoded(self, levels: list[np.ndarray], source_dtype: np.dtype[Any], *, slots_per_task: int) -> list[Any]:
        """Encoded levels as the writer stores them: DCT levels pooled into one bucket per
        (chroma, tables, entropy) whatever quality each item needed (:func:`pool_dct_quality`)."""
        return [pool_dct_quality(e) for e in self._search(levels, source_dtype, slots_per_task=slots_per_task)]

    def _search(self, levels: list[np.ndarray], source_dtype: np.dtype[Any], *, slots_per_task: int) -> list[Any]:
        """Levels searched coarsest first: each finer level starts a few qualities below the
        coarser one's choice (finer levels of the same picture need a little less) with the
        slopes fitted there, so the largest levels, which cost most to measure, take the
        fewest measurements."""
        out: list[Any] = [None] * len(levels)
        start = {"444": 80, "420": 80}
        hints: dict[str, dict[str, float]] = {"444": {}, "420": {}}
        for li in reversed(range(len(levels))):
            lv = levels[li]
            ssim, psnr = self.floors.at(li)
            s = Searcher(lv, source_dtype, li, slots_per_task)
            cands = []
            if lv.dtype != np.bool_:
                for ch in (("444", "420") if self.chroma == "auto" else (self.chroma,)):
                    entropy = entropy_for(self.entropy, lv.shape[0])
                    if self.search == "fast":
                        e = s.dct_quality(ch, ssim, psnr, start=start[ch], family=self.family, entropy=entropy,
                                          hints=hints[ch])
                        hints[ch] = dict(s.slopes) or hints[ch]
                    else:
                        e = s.exact_dct_quality(ch, ssim, psnr, start=start[ch], family=self.family, entropy=entropy)
                    if e is not None:
                        cands.append(e)
                        q = int(e.encoding.codec.to_dict().get("configuration", {}).get("quality", 90))
                        start[ch] = max(1, q - _FINER_STEP)
            lossy = min((e.nbytes for e in cands), default=None)
            codes = s.codes()
            if lossless_within_reach(lv if codes is None else codes, source_dtype, lossy):
                cands.append(s.trial(lossless_encoding(source_dtype, lv.shape[0])))
            best = min(cands, key=lambda e: e.nbytes)
            best.decision = "lossless-fallback" if lossy is None else "searched"
            out[li] = best
        return out


@dataclass(frozen=True)
class FloorPolicy:
    """Wraps a policy with quality floors (``--min-ssim`` / ``--min-psnr``): a lossy level that
    misses its floor is re-encoded at higher DCT quality (DCT levels) or higher precision
    (int4 → int8 → fp16), and falls back to lossless when nothing lossy meets it."""

    inner: Any
    floors: Floors

    @property
    def spec(self) -> str:
        parts = [f"ssim{'' if k < 0 else f'@{k}'}={v}" for k, v in self.floors.ssim]
        parts += [f"psnr{'' if k < 0 else f'@{k}'}={v}" for k, v in self.floors.psnr]
        return f"{self.inner.spec} (floors: {', '.join(parts)})"

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        return [e.encoding for e in self.plan_encoded(levels, source_dtype, slots_per_task=256)]

    def plan_encoded(self, levels: list[np.ndarray], source_dtype: np.dtype[Any], *, slots_per_task: int) -> list[Any]:
        planned = self.inner.plan(levels, source_dtype)
        out = []
        for li, (lv, enc) in enumerate(zip(levels, planned, strict=True)):
            ssim, psnr = self.floors.at(li)
            s = Searcher(lv, source_dtype, li, slots_per_task)
            e = s.trial(enc)
            if enc.quantizer.is_lossless or _meets(e, ssim, psnr):
                out.append(e)
                continue
            better = None
            if enc.codec.name == "qpyr.dct":
                conf = enc.codec.to_dict().get("configuration", {})
                q0 = int(conf.get("quality", 90))
                better = s.dct_quality(conf.get("chroma", "420"), ssim, psnr, lo=q0 + 1, start=max(q0 + 1, 80),
                                       family=conf.get("family", "annexk"), entropy=conf.get("entropy", "ctx"))
            else:
                ladder = [StoredType.UINT4, StoredType.UINT8, StoredType.FLOAT16, StoredType.FLOAT32]
                cur = enc.quantizer.dtype
                start = ladder.index(cur) + 1 if cur in ladder else len(ladder)
                for dt in ladder[start:]:
                    q = Quantizer(dtype=dt, granularity=enc.quantizer.granularity) if dt in (StoredType.UINT8,) else Quantizer(dtype=dt)
                    cand = s.trial(Encoding(quantizer=q, codec=default_codec(q, source_dtype)))
                    if _meets(cand, ssim, psnr):
                        better = cand
                        break
            if better is not None:
                better.decision = "raised"
                out.append(pool_dct_quality(better) if enc.codec.name == "qpyr.dct" else better)
            else:
                fb = s.trial(lossless_encoding(source_dtype, lv.shape[0]))
                fb.decision = "lossless-fallback"
                out.append(fb)
        return out


def parse_floors(ssim: Any = None, psnr: Any = None) -> Floors:
    """Floors from ``X`` (all levels), ``{level: X}``, or CLI strings ``X`` / ``L:X`` (lists allowed)."""

    def norm(v: Any, key: str, lo: float, hi: float) -> tuple[tuple[int, float], ...]:
        if v is None:
            return ()
        if isinstance(v, dict):
            items = [(int(k), float(x)) for k, x in v.items()]
        else:
            vals = v if isinstance(v, (list, tuple)) else [v]
            items = []
            for x in vals:
                if isinstance(x, str) and ":" in x:
                    lv, _, val = x.partition(":")
                    items.append((int(_parse_float(key + " level", lv, 0, 31)), _parse_float(key, val, lo, hi)))
                else:
                    items.append((-1, _parse_float(key, str(x), lo, hi)))
        for _, x in items:
            if not lo <= x <= hi:
                raise PolicyError(f"Expected {key} in {lo}..{hi}. Got {x}.")
        return tuple(sorted(items))

    return Floors(ssim=norm(ssim, "min-ssim", 0.0, 1.0), psnr=norm(psnr, "min-psnr", 0.0, 200.0))


def parse(params: dict[str, str]) -> QualityPolicy:
    """``quality`` from its parameters (keys already checked)."""
    if "ssim" not in params and "psnr" not in params:
        raise PolicyError("Policy 'quality' needs ssim=X and/or psnr=Y (e.g. quality:ssim=0.95).")
    ch = params.get("chroma", "444")
    if ch not in ("420", "444", "auto"):
        raise PolicyError(f"Expected chroma 420, 444 or auto. Got {ch!r}.")
    floors = parse_floors(params.get("ssim"), params.get("psnr"))
    search = params.get("search", "fast")
    if search not in ("fast", "exact"):
        raise PolicyError(f"Expected search=fast (predicted quality, ~2 measurements per level) or search=exact "
                          f"(the smallest sufficient quality). Got {search!r}.")
    return QualityPolicy(floors, ch, tuple(sorted(params.items())), _parse_tables(params, "ssim"),
                         _parse_entropy(params, "jfif"), search)


def with_floors(policy: _P, floors: Floors) -> _P | FloorPolicy:
    """Apply ``--min-ssim`` / ``--min-psnr`` floors to any policy."""
    if not floors:
        return policy
    if isinstance(policy, QualityPolicy):
        merged = Floors(ssim=tuple(sorted({**dict(policy.floors.ssim), **dict(floors.ssim)}.items())),
                        psnr=tuple(sorted({**dict(policy.floors.psnr), **dict(floors.psnr)}.items())))
        return dataclasses.replace(policy, floors=merged)
    return FloorPolicy(policy, floors)
