"""The ``quality`` policy and quality floors: per level, the cheapest encoding that meets an SSIM / PSNR floor.

``quality:ssim=X`` / ``quality:psnr=Y`` (``chroma=444|420|auto``, ``tables=ssim|annexk``,
``entropy=ctx|fast|jfif``) searches, per level, the smallest sufficient DCT quality and keeps
the cheapest of those and lossless. Floors (``--min-ssim`` / ``--min-psnr``, :func:`parse_floors`)
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
from qpyr.policies.dct import dct_encoding, entropy_for, pool_dct_quality
from qpyr.policies.lossless import lossless_encoding

__all__ = ["QualityPolicy", "FloorPolicy", "Floors", "parse_floors", "with_floors", "parse"]

_P = TypeVar("_P")


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


class _Searcher:
    """Finds the cheapest candidate encoding of a level that meets its floors."""

    def __init__(self, level: np.ndarray, source_dtype: np.dtype[Any], li: int, slots_per_task: int):
        self.level, self.dt, self.li, self.spt = level, np.dtype(source_dtype), li, slots_per_task
        self.tried: list[Any] = []

    def trial(self, enc: Encoding, measured: Any = None) -> Any:
        """Encode with ``enc``; ``measured``: a :meth:`probe` of the same encoding, whose
        (bit-exact) quality is reused instead of decoding and measuring again."""
        from qpyr.policies.encode import encode_level

        e = encode_level(self.level, self.dt, enc, li=self.li, slots_per_task=self.spt, quality=measured is None)
        if measured is not None:
            e.psnr, e.ssim = measured.psnr, measured.ssim
        self.tried.append(e)
        return e

    def probe(self, enc: Encoding) -> Any:
        """Quality of ``enc`` without entropy coding (``nbytes = -1``); bit-exact with :meth:`trial`."""
        from qpyr.policies.encode import encode_level

        return encode_level(self.level, self.dt, enc, li=self.li, slots_per_task=self.spt, simulate=True)

    def min_dct_quality(self, chroma: str, ssim: float | None, psnr: float | None, lo: int = 1,
                        start: int = 75, *, family: str = "ssim", entropy: str = "ctx") -> Any | None:
        """Smallest DCT quality in lo..100 meeting the floors, or None if quality 100 misses.

        SSIM and PSNR grow with quality, so the answer is found by bracketing from ``start``
        (typically the quality chosen for the previous level: 1-3 trials when it is close)
        and then narrowing the bracket with interpolation on the measured metric.
        """
        cache: dict[int, Any] = {}

        def ev(q: int) -> Any:
            if q not in cache:
                cache[q] = self.probe(dct_encoding(q, chroma, self.dt, family, entropy))
            return cache[q]

        def score(e: Any) -> float:  # >= 0 iff the floors are met (worst margin)
            m = []
            if ssim is not None:
                m.append((e.ssim - ssim) * 100.0)
            if psnr is not None:
                m.append(e.psnr - psnr)
            return min(m)

        hi = 100
        q = min(max(lo, start), 100)
        if score(ev(q)) >= 0:
            hi, step = q, 4
            while hi - step >= lo and score(ev(hi - step)) >= 0:  # gallop down
                hi -= step
                step *= 2
            lo = max(lo, hi - step + 1)
        else:
            lo, step = q + 1, 4
            while True:  # gallop up
                nxt = min(100, q + step)
                if score(ev(nxt)) >= 0:
                    hi = nxt
                    break
                if nxt == 100:
                    return None
                lo, q, step = nxt + 1, nxt, step * 2
        while lo < hi:  # invariant: hi meets the floors; every quality below lo misses
            below = max(k for k in cache if k < lo) if any(k < lo for k in cache) else None
            if below is not None and hi - lo > 2:
                s0, s1 = score(cache[below]), score(cache[hi])
                guess = below + (hi - below) * (-s0) / (s1 - s0) if s1 != s0 else (lo + hi) / 2
                mid = int(min(hi - 1, max(lo, round(guess))))
            else:
                mid = (lo + hi) // 2
            if score(ev(mid)) >= 0:
                hi = mid
            else:
                lo = mid + 1
        return self.trial(dct_encoding(hi, chroma, self.dt, family, entropy), measured=cache[hi])  # entropy-code the winner only


@dataclass(frozen=True)
class QualityPolicy:
    """``quality:ssim=X`` / ``quality:psnr=Y``: per level, the cheapest encoding that meets the
    floor among DCT (``chroma`` 444, 420 or ``auto`` = both) at the smallest sufficient quality
    and lossless (the fallback when no lossy candidate meets the floor)."""

    floors: Floors
    chroma: str = "444"
    params: tuple[tuple[str, str], ...] = ()
    family: str = "ssim"  # DCT tables searched over: "ssim" (qpyr's) or "annexk" (JPEG's)
    entropy: str = "ctx"  # "ctx" (smallest), "fast" (zstd) or "jfif" (JPEG stream: libjpeg-turbo / nvJPEG decode)

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
        out = []
        start = {"444": 75, "420": 75}
        for li, lv in enumerate(levels):
            ssim, psnr = self.floors.at(li)
            s = _Searcher(lv, source_dtype, li, slots_per_task)
            cands = []
            if lv.dtype != np.bool_:
                for ch in (("444", "420") if self.chroma == "auto" else (self.chroma,)):
                    e = s.min_dct_quality(ch, ssim, psnr, start=start[ch], family=self.family,
                                          entropy=entropy_for(self.entropy, lv.shape[0]))
                    if e is not None:
                        cands.append(e)
                        start[ch] = int(e.encoding.codec.to_dict().get("configuration", {}).get("quality", 90))
            lossless = s.trial(lossless_encoding(source_dtype, lv.shape[0]))
            best = min(cands + [lossless], key=lambda e: e.nbytes)
            best.decision = "lossless-fallback" if best is lossless and not cands else "searched"
            out.append(best)
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
            s = _Searcher(lv, source_dtype, li, slots_per_task)
            e = s.trial(enc)
            if enc.quantizer.is_lossless or _meets(e, ssim, psnr):
                out.append(e)
                continue
            better = None
            if enc.codec.name == "qpyr.dct":
                conf = enc.codec.to_dict().get("configuration", {})
                q0 = int(conf.get("quality", 90))
                better = s.min_dct_quality(conf.get("chroma", "420"), ssim, psnr, lo=q0 + 1, start=max(q0 + 1, 75),
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
    return QualityPolicy(floors, ch, tuple(sorted(params.items())), _parse_tables(params, "ssim"), _parse_entropy(params))


def with_floors(policy: _P, floors: Floors) -> _P | FloorPolicy:
    """Apply ``--min-ssim`` / ``--min-psnr`` floors to any policy."""
    if not floors:
        return policy
    if isinstance(policy, QualityPolicy):
        merged = Floors(ssim=tuple(sorted({**dict(policy.floors.ssim), **dict(floors.ssim)}.items())),
                        psnr=tuple(sorted({**dict(policy.floors.psnr), **dict(floors.psnr)}.items())))
        return dataclasses.replace(policy, floors=merged)
    return FloorPolicy(policy, floors)
