"""Precision policies: which encoding each level of an item gets.

Spec syntax (CLI ``--policy`` and Python): ``NAME[:key=value,...]``, e.g. ``int8``,
``int4:granularity=block,block=8``, ``mixed:fp16_min=256,int8_min=64``.

=============  ===============================================================================
``lossless``   every level stored exactly in the source dtype (uint8 stays uint8, uint16 stays
               uint16, float32 stays float32); the default (see :data:`DEFAULT_POLICY`)
``fp32``       every level as float32 (normalized units)
``fp16``       every level as float16 (exact for 8-bit sources)
``bf16``       every level as bfloat16
``int8``       every level as 8-bit codes with scale/zero-point (uint8 affine by default)
``int4``       every level as 4-bit codes, two per byte (uint4 affine by default)
``mixed``      the classic hierarchy: short side >= ``fp16_min`` (256) → fp16, >= ``int8_min``
               (64) → int8, smaller → int4
``dct``        every level 8x8 DCT (``quality``, ``chroma``)
``quality``    per level the cheapest encoding meeting ``ssim=X`` / ``psnr=Y``
``adaptive``   per level DCT quality from edge density / texture entropy (:mod:`qpyr.adaptive`)
``saliency``   per tile prune/int4/int8/fp16/fp32 from saliency and motion, stored with
               ``qpyr.tiles`` (:mod:`qpyr.saliency`)
``budget``     exact rate-distortion optimum within ``bytes=B`` per image (:mod:`qpyr.rd`)
=============  ===============================================================================

Integer policies take ``scheme`` (affine|symmetric), ``granularity`` (level|channel|block),
``block``, ``range`` (``lo..hi`` in normalized units) and ``clamp`` (true|false).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from qpyr.codecs.encoding import Encoding, default_codec
from qpyr.codecs.quant import Quantizer, StoredType
from qpyr.errors import PolicyError

_N = TypeVar("_N", int, float)

__all__ = ["Policy", "DEFAULT_POLICY", "parse_policy", "POLICIES", "UniformPolicy", "MixedPolicy"]

#: The default policy: per level, the cheapest encoding whose RGB-SSIM (Wang 2004) is >= 0.95:
#: a DCT quality search at 4:4:4 with qpyr's ``ssim`` tables (0.745x libjpeg-turbo 4:2:0 bytes at
#: equal RGB-SSIM 0.95 on the benchmark photos), lossless as the fallback. Measured on the five
#: demo photos (``tools/bench_default_policy.py``): every level of every photo at SSIM >= 0.950,
#: 56.6x smaller than the fp32 pyramid in payload bytes (45.7x for the five-image store on disk:
#: per-bucket metadata, see README), 0.78x the bytes of JPEG at the same per-level
#: floor. Photos for ML are viewed by models at a quality floor, not pixel-exact; use
#: ``--policy lossless`` to keep every pixel.
DEFAULT_POLICY = "quality:ssim=0.95"


@runtime_checkable
class Policy(Protocol):
    """Chooses an encoding per level from the built pyramid.

    Required: ``spec`` and ``plan(levels, source_dtype) -> [Encoding]``. Optional hooks the
    writer uses when present:

    - ``plan_encoded(levels, source_dtype, *, slots_per_task[, previous]) -> [EncodedLevel]``:
      the policy encodes (and measures) the levels itself: searches, RD optimisation, and
      per-tile encodings (``EncodedLevel.tile_counts``; the class map goes to
      :func:`qpyr.encode.encode_level` as ``tile_classes``).
    - ``uses_previous = True``: the writer passes ``previous=`` the previous item's levels
      (side information for frame sequences: the previous frame).
    - ``describe() -> dict``: parameters and rules, recorded as the manifest's ``plan``
      (:mod:`qpyr.plan`) and shown by ``qpyr info``.

    :func:`plan_levels` runs any policy on one pyramid the way the writer does.
    """

    @property
    def spec(self) -> str:
        """Canonical spec string (recorded in the manifest)."""
        ...

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        """Return one :class:`Encoding` per level (``levels[l]`` is ``[C, h_l, w_l]``)."""
        ...


def _parse_bool(key: str, v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise PolicyError(f"Expected true/false for {key}. Got {v!r}.")


def _parse_in_range(key: str, v: str, lo: _N, hi: _N, kind: Callable[[str], _N], what: str) -> _N:
    """``kind(v)`` if it parses and lies in ``lo..hi``, else a PolicyError naming ``key``."""
    try:
        x = kind(v)
    except ValueError:
        raise PolicyError(f"Expected {what} for {key}. Got {v!r}.") from None
    if not lo <= x <= hi:
        raise PolicyError(f"Expected {key} in {lo}..{hi}. Got {x}.")
    return x


def _parse_int(key: str, v: str, lo: int, hi: int) -> int:
    return _parse_in_range(key, v, lo, hi, int, "an integer")


def _parse_range(key: str, v: str) -> tuple[float, float]:
    try:
        lo_s, hi_s = v.split("..")
        return float(lo_s), float(hi_s)
    except ValueError:
        raise PolicyError(f"Expected {key}=LO..HI (e.g. 0..1). Got {v!r}.") from None


_INT_KEYS = ("scheme", "granularity", "block", "range", "clamp")


def _int_quantizer(bits: int, params: dict[str, str], prefix: str = "") -> Quantizer:
    def get(k: str) -> str | None:
        return params.get(prefix + k)

    scheme = get("scheme") or "affine"
    if scheme not in ("affine", "symmetric"):
        raise PolicyError(f"Expected {prefix}scheme affine|symmetric. Got {scheme!r}.")
    gran = get("granularity") or "level"
    if gran not in ("level", "channel", "block"):
        raise PolicyError(f"Expected {prefix}granularity level|channel|block. Got {gran!r}.")
    if bits == 8:
        dtype = StoredType.INT8 if scheme == "symmetric" else StoredType.UINT8
    else:
        dtype = StoredType.INT4 if scheme == "symmetric" else StoredType.UINT4
    kw: dict[str, Any] = {"dtype": dtype, "scheme": scheme, "granularity": gran}
    if get("block") is not None:
        kw["block"] = _parse_int(prefix + "block", get("block") or "", 2, 256)
    if get("range") is not None:
        kw["range"] = _parse_range(prefix + "range", get("range") or "")
    if get("clamp") is not None:
        kw["clamp"] = _parse_bool(prefix + "clamp", get("clamp") or "")
    return Quantizer(**kw)


@dataclass(frozen=True)
class UniformPolicy:
    """One quantizer on every level."""

    name: str
    quantizer: Quantizer
    params: tuple[tuple[str, str], ...] = ()

    @property
    def spec(self) -> str:
        return self.name + (":" + ",".join(f"{k}={v}" for k, v in self.params) if self.params else "")

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        enc = Encoding(quantizer=self.quantizer, codec=default_codec(self.quantizer, source_dtype))
        return [enc] * len(levels)


@dataclass(frozen=True)
class MixedPolicy:
    """fp16 for levels whose short side >= ``fp16_min``, int8 for >= ``int8_min``, else int4."""

    fp16_min: int = 256
    int8_min: int = 64
    int8: Quantizer = field(default_factory=lambda: Quantizer(dtype=StoredType.UINT8))
    int4: Quantizer = field(default_factory=lambda: Quantizer(dtype=StoredType.UINT4))
    params: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.fp16_min < self.int8_min:
            raise PolicyError(
                f"Expected fp16_min >= int8_min (thresholds in order). Got fp16_min={self.fp16_min}, "
                f"int8_min={self.int8_min}."
            )

    @property
    def spec(self) -> str:
        return "mixed" + (":" + ",".join(f"{k}={v}" for k, v in self.params) if self.params else "")

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        fp16 = Quantizer(dtype=StoredType.FLOAT16)
        out = []
        for lv in levels:
            short = min(lv.shape[1], lv.shape[2])
            q = fp16 if short >= self.fp16_min else self.int8 if short >= self.int8_min else self.int4
            out.append(Encoding(quantizer=q, codec=default_codec(q, source_dtype)))
        return out


def _float_policy(name: str, dtype: StoredType) -> Callable[[dict[str, str]], Policy]:
    def make(params: dict[str, str]) -> Policy:
        _check_keys(name, params, ("clamp",))
        clamp = _parse_bool("clamp", params["clamp"]) if "clamp" in params else False
        return UniformPolicy(name, Quantizer(dtype=dtype, clamp=clamp), tuple(sorted(params.items())))

    return make


def _int_policy(name: str, bits: int) -> Callable[[dict[str, str]], Policy]:
    def make(params: dict[str, str]) -> Policy:
        _check_keys(name, params, _INT_KEYS)
        return UniformPolicy(name, _int_quantizer(bits, params), tuple(sorted(params.items())))

    return make


@dataclass(frozen=True)
class LosslessPolicy:
    """Every level exact in the source dtype. ``codec=qpyr`` (default): the qpyr.lossless
    predictive codec for 8/16-bit levels of <= 4 channels (0.77x PNG on photos, see
    spec/codecs/lossless.md), zstd/blosc otherwise; ``codec=zstd``: standard Zarr codecs only,
    so stock Zarr readers without qpyr installed read every level."""

    codec: str = "qpyr"
    params: tuple[tuple[str, str], ...] = ()

    @property
    def spec(self) -> str:
        return "lossless" + (":" + ",".join(f"{k}={v}" for k, v in self.params) if self.params else "")

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        return [lossless_encoding(source_dtype, lv.shape[0], portable=self.codec == "zstd") for lv in levels]


def _lossless(params: dict[str, str]) -> Policy:
    _check_keys("lossless", params, ("codec",))
    codec = params.get("codec", "qpyr")
    if codec not in ("qpyr", "zstd"):
        raise PolicyError(f"Expected lossless codec qpyr or zstd. Got {codec!r}.")
    return LosslessPolicy(codec, tuple(sorted(params.items())))


_MIXED_KEYS = ("fp16_min", "int8_min") + tuple("int8_" + k for k in _INT_KEYS) + tuple("int4_" + k for k in _INT_KEYS)


def _mixed(params: dict[str, str]) -> Policy:
    _check_keys("mixed", params, _MIXED_KEYS)
    kw: dict[str, Any] = {}
    if "fp16_min" in params:
        kw["fp16_min"] = _parse_int("fp16_min", params["fp16_min"], 1, 2**31)
    if "int8_min" in params:
        kw["int8_min"] = _parse_int("int8_min", params["int8_min"], 1, 2**31)
    kw["int8"] = _int_quantizer(8, params, "int8_")
    kw["int4"] = _int_quantizer(4, params, "int4_")
    return MixedPolicy(params=tuple(sorted(params.items())), **kw)


#: name → (factory, one-line description). Later policies register here.
POLICIES: dict[str, tuple[Callable[[dict[str, str]], Policy], str]] = {
    "lossless": (_lossless, "every level exact in the source dtype (default)"),
    "fp32": (_float_policy("fp32", StoredType.FLOAT32), "every level float32"),
    "fp16": (_float_policy("fp16", StoredType.FLOAT16), "every level float16"),
    "bf16": (_float_policy("bf16", StoredType.BFLOAT16), "every level bfloat16"),
    "int8": (_int_policy("int8", 8), "every level 8-bit codes + scale/zero-point"),
    "int4": (_int_policy("int4", 4), "every level 4-bit codes (two per byte) + scale/zero-point"),
    "mixed": (_mixed, "fp16 / int8 / int4 by level short side (>=256 / >=64 / smaller)"),
}

_VALID_KEYS: dict[str, tuple[str, ...]] = {
    "lossless": ("codec",), "fp32": ("clamp",), "fp16": ("clamp",), "bf16": ("clamp",),
    "int8": _INT_KEYS, "int4": _INT_KEYS, "mixed": _MIXED_KEYS,
}


def _check_keys(name: str, params: dict[str, str], valid: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listing = ", ".join(valid) if valid else "none"
        raise PolicyError(f"Unknown parameter(s) {unknown} for policy {name!r}; valid: {listing}.")


def parse_policy(spec: str | Policy | None) -> Policy:
    """Parse ``NAME[:key=value,...]`` (or pass a :class:`Policy` through)."""
    if spec is None:
        spec = DEFAULT_POLICY
    if not isinstance(spec, str):
        if isinstance(spec, Policy):
            return spec
        raise PolicyError(f"Expected a policy spec string or Policy object. Got {spec!r}.")
    name, _, rest = spec.strip().partition(":")
    if name not in POLICIES:
        raise PolicyError(f"Unknown policy {name!r}; valid policies: {', '.join(POLICIES)}.")
    params: dict[str, str] = {}
    if rest:
        for part in rest.split(","):
            k, eq, v = part.partition("=")
            if not eq or not k.strip():
                raise PolicyError(f"Expected key=value in policy {spec!r}. Got {part!r}.")
            if k.strip() in params:
                raise PolicyError(f"Parameter {k.strip()!r} given twice in policy {spec!r}.")
            params[k.strip()] = v.strip()
    return POLICIES[name][0](params)


# ---------------------------------------------------------------------------------------------
# Lossy DCT and quality-target policies (issue #3)

def dct_encoding(quality: int, chroma: str, source_dtype: np.dtype[Any], family: str = "ssim",
                 entropy: str = "ctx") -> Encoding:
    """DCT encoding of a level: 8-bit codes, then ``qpyr.dct`` with ``family`` tables
    (``"ssim"``: qpyr's flat tables, ~11 % fewer bytes at equal SSIM; ``"annexk"``: JPEG's).

    8/16-bit sources map [0, 1] onto 0..255 (for 8-bit sources the codes are the pixels
    themselves); float and other sources use a per-level affine uint8 range from the data.
    """
    from qpyr.codecs import DctChunkCodec

    dt = np.dtype(source_dtype)
    if dt in (np.uint8, np.uint16):
        q = Quantizer(dtype=StoredType.UINT8, range=(0.0, 1.0), clamp=True)
    else:
        q = Quantizer(dtype=StoredType.UINT8)
    return Encoding(quantizer=q, codec=DctChunkCodec.create(quality=quality, chroma=chroma, family=family, entropy=entropy))


def lossless_encoding(source_dtype: np.dtype[Any], channels: int, *, portable: bool = False) -> Encoding:
    """Exact storage: qpyr.lossless for 8/16-bit integer levels of 1-4 channels, else zstd/blosc."""
    q = Quantizer(dtype=StoredType.SOURCE)
    dt = np.dtype(source_dtype)
    if not portable and dt in (np.uint8, np.uint16, np.int8, np.int16) and 1 <= channels <= 4:
        from qpyr.codecs import LosslessChunkCodec

        return Encoding(quantizer=q, codec=LosslessChunkCodec.create())
    return Encoding(quantizer=q, codec=default_codec(q, source_dtype))


@dataclass(frozen=True)
class DctPolicy:
    """``dct:quality=Q,chroma=420|444,tables=annexk|ssim``: that DCT encoding on every level
    (``tables=annexk`` by default, so ``quality`` means what it means for JPEG)."""

    quality: int = 90
    chroma: str = "420"
    params: tuple[tuple[str, str], ...] = ()
    family: str = "annexk"
    entropy: str = "ctx"

    @property
    def spec(self) -> str:
        return "dct" + (":" + ",".join(f"{k}={v}" for k, v in self.params) if self.params else "")

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        return [dct_encoding(self.quality, self.chroma, source_dtype, self.family, entropy_for(self.entropy, lv.shape[0]))
                for lv in levels]


def pool_dct_quality(e: Any) -> Any:
    """Store a searched DCT level under the encoding with ``quality: "chunk"``.

    Quality searches give every item its own DCT quality. Keyed by quality, a corpus would
    scatter over ~60 buckets per level (each with its own partly filled shards, index and
    metadata) instead of one; the quality is in every chunk's header anyway (spec/codecs/dct.md
    §3), so the bucket's encoding records ``"chunk"`` and decoders read it per chunk.
    """
    if getattr(e.encoding.codec, "name", "") != "qpyr.dct":
        return e
    from qpyr.codecs import DctChunkCodec

    conf = dict(e.encoding.codec.to_dict().get("configuration", {}))
    if conf.get("quality") == "chunk" or "tables" in conf:
        return e
    conf["quality"] = "chunk"
    enc = Encoding(quantizer=e.encoding.quantizer, codec=DctChunkCodec.create(**conf))
    e.encoding = enc
    e.spec = dataclasses.replace(e.spec, encoding_id=enc.id)
    return e


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
        return "quality" + (":" + ",".join(f"{k}={v}" for k, v in self.params) if self.params else "")

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


def _parse_float(key: str, v: str, lo: float, hi: float) -> float:
    return _parse_in_range(key, v, lo, hi, float, "a number")


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


def _dct(params: dict[str, str]) -> Policy:
    _check_keys("dct", params, ("quality", "chroma", "tables", "entropy"))
    q = _parse_int("quality", params["quality"], 1, 100) if "quality" in params else 90
    ch = params.get("chroma", "420")
    if ch not in ("420", "444"):
        raise PolicyError(f"Expected chroma 420 or 444. Got {ch!r}.")
    return DctPolicy(q, ch, tuple(sorted(params.items())), _parse_tables(params, "annexk"), _parse_entropy(params))


def _parse_entropy(params: dict[str, str]) -> str:
    e = params.get("entropy", "ctx")
    if e not in ("ctx", "fast", "jfif"):
        raise PolicyError("Expected entropy=ctx (smallest), entropy=fast (zstd) or entropy=jfif (JPEG stream, "
                          f"fastest decode). Got {e!r}.")
    return e


def entropy_for(entropy: str, channels: int) -> str:
    """The DCT entropy mode a level of ``channels`` channels gets: ``jfif`` codes JPEG's 1 or 3
    channels only, so other levels of a ``jfif`` policy use ``ctx``."""
    return "ctx" if entropy == "jfif" and channels not in (1, 3) else entropy


def _parse_tables(params: dict[str, str], default: str) -> str:
    t = params.get("tables", default)
    if t not in ("annexk", "ssim"):
        raise PolicyError(f"Expected tables=annexk (JPEG Annex K) or tables=ssim (qpyr's, for SSIM targets). Got {t!r}.")
    return t


def _quality(params: dict[str, str]) -> Policy:
    _check_keys("quality", params, ("ssim", "psnr", "chroma", "tables", "entropy"))
    if "ssim" not in params and "psnr" not in params:
        raise PolicyError("Policy 'quality' needs ssim=X and/or psnr=Y (e.g. quality:ssim=0.95).")
    ch = params.get("chroma", "444")
    if ch not in ("420", "444", "auto"):
        raise PolicyError(f"Expected chroma 420, 444 or auto. Got {ch!r}.")
    floors = parse_floors(params.get("ssim"), params.get("psnr"))
    return QualityPolicy(floors, ch, tuple(sorted(params.items())), _parse_tables(params, "ssim"), _parse_entropy(params))


POLICIES["dct"] = (_dct, "every level 8x8 DCT (qpyr.dct); quality=1..100, chroma=420|444, tables=annexk|ssim, entropy=ctx|fast|jfif")
POLICIES["quality"] = (_quality, "per level the cheapest encoding meeting ssim=X / psnr=Y (DCT or lossless)")
_VALID_KEYS["dct"] = ("quality", "chroma", "tables", "entropy")
_VALID_KEYS["quality"] = ("ssim", "psnr", "chroma", "tables", "entropy")


def with_floors(policy: Policy, floors: Floors) -> Policy:
    """Apply ``--min-ssim`` / ``--min-psnr`` floors to any policy."""
    if not floors:
        return policy
    if isinstance(policy, QualityPolicy):
        merged = Floors(ssim=tuple(sorted({**dict(policy.floors.ssim), **dict(floors.ssim)}.items())),
                        psnr=tuple(sorted({**dict(policy.floors.psnr), **dict(floors.psnr)}.items())))
        return dataclasses.replace(policy, floors=merged)
    return FloorPolicy(policy, floors)


# ---------------------------------------------------------------------------------------------
# Content-adaptive, saliency and rate-distortion policies (issue #7). Their modules import this
# one, so they are imported when the policy is first parsed, not here.

def _lazy(module: str) -> Callable[[dict[str, str]], Policy]:
    def make(params: dict[str, str]) -> Policy:
        import importlib

        mod = importlib.import_module(f"qpyr.policies.{module}")
        p: Policy = mod.parse(params)
        return p

    return make


POLICIES["adaptive"] = (_lazy("adaptive"), "per level DCT quality from edge density / texture entropy (thresholds settable)")
POLICIES["saliency"] = (_lazy("saliency"), "per tile prune/int4/int8/fp16/fp32 from saliency + motion (qpyr.tiles)")
POLICIES["budget"] = (_lazy("budget"), "rate-distortion optimal encodings within bytes=B per image (weights=, ssim=)")
_VALID_KEYS["adaptive"] = ("edge_lo", "edge_hi", "entropy_lo", "entropy_hi", "q_low", "q_mid", "q_high", "chroma_min")
_VALID_KEYS["saliency"] = ("tile", "prune", "int4", "int8", "fp16", "frames")
_VALID_KEYS["budget"] = ("bytes", "weights", "ssim", "qualities")
__all__ += ["plan_levels"]


def plan_levels(policy: str | Policy, levels: list[np.ndarray], source_dtype: np.dtype[Any], *,
                previous: list[np.ndarray] | None = None, slots_per_task: int = 256) -> list[Any]:
    """Run ``policy`` on one built pyramid the way the writer does: returns one
    :class:`~qpyr.encode.EncodedLevel` per level (encoding, bytes, quality, and for ``saliency``
    the per-tile class map ``tile_map`` and its counts). ``previous``: the previous frame's levels (side information)."""
    from qpyr.policies.encode import encode_level

    p = parse_policy(policy)
    dt = np.dtype(source_dtype)
    if hasattr(p, "plan_encoded"):
        kw = {"previous": previous} if getattr(p, "uses_previous", False) else {}
        return list(p.plan_encoded(levels, dt, slots_per_task=slots_per_task, **kw))
    return [encode_level(lv, dt, enc, li=li, slots_per_task=slots_per_task)
            for li, (lv, enc) in enumerate(zip(levels, p.plan(levels, dt), strict=True))]
