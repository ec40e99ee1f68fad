"""Precision policies: which encoding each level of an item gets.

Spec syntax (CLI ``--policy`` and Python): ``NAME[:key=value,...]``, e.g. ``int8``,
``int4:granularity=block,block=8``, ``mixed:fp16_min=256,int8_min=64``. Without a spec the
policy is :data:`DEFAULT_POLICY` (``quality:ssim=0.95``).

=============  ===============================================================================
``lossless``   every level stored exactly in the source dtype (uint8 stays uint8, uint16 stays
               uint16, float32 stays float32) (:mod:`qpyr.policies.lossless`)
``fp32``       every level as float32 (normalized units)
``fp16``       every level as float16 (exact for 8-bit sources)
``bf16``       every level as bfloat16
``int8``       every level as 8-bit codes with scale/zero-point (uint8 affine by default)
``int4``       every level as 4-bit codes, two per byte (uint4 affine by default)
``mixed``      the classic hierarchy: short side >= ``fp16_min`` (256) → fp16, >= ``int8_min``
               (64) → int8, smaller → int4 (:mod:`qpyr.policies.mixed`)
``dct``        every level 8x8 DCT (``quality``, ``chroma``) (:mod:`qpyr.policies.dct`)
``quality``    per level the cheapest encoding meeting ``ssim=X`` / ``psnr=Y``; the default
               (:mod:`qpyr.policies.quality`)
``adaptive``   per level DCT quality from edge density / texture entropy (:mod:`qpyr.policies.adaptive`)
``saliency``   per tile prune/int4/int8/fp16/fp32 from saliency and motion, stored with
               ``qpyr.tiles`` (:mod:`qpyr.policies.saliency`)
``budget``     exact rate-distortion optimum within ``bytes=B`` per image (:mod:`qpyr.policies.budget`)
=============  ===============================================================================

Integer policies take ``scheme`` (affine|symmetric), ``granularity`` (level|channel|block),
``block``, ``range`` (``lo..hi`` in normalized units) and ``clamp`` (true|false)
(:mod:`qpyr.policies.uniform`).

Every policy is one row of :data:`REGISTRY` (name → factory, description, parameter names);
:func:`parse_policy` checks a spec's parameters against the row before calling the factory.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from qpyr.codecs.encoding import Encoding
from qpyr.codecs.quant import StoredType
from qpyr.errors import PolicyError
from qpyr.policies import dct, lossless, mixed, quality
from qpyr.policies._params import _INT_KEYS, _check_keys
from qpyr.policies.dct import DctPolicy, dct_encoding, entropy_for, pool_dct_quality
from qpyr.policies.lossless import LosslessPolicy, lossless_encoding
from qpyr.policies.mixed import MIXED_KEYS, MixedPolicy
from qpyr.policies.quality import FloorPolicy, Floors, QualityPolicy, parse_floors, with_floors
from qpyr.policies.uniform import UniformPolicy, float_policy, int_policy

__all__ = [
    "Policy", "DEFAULT_POLICY", "parse_policy", "plan_levels", "REGISTRY", "PolicyEntry", "POLICIES",
    "UniformPolicy", "MixedPolicy", "LosslessPolicy", "DctPolicy", "QualityPolicy", "FloorPolicy", "Floors",
    "parse_floors", "with_floors", "dct_encoding", "lossless_encoding", "entropy_for", "pool_dct_quality",
]

#: The default policy: per level, an encoding whose RGB-SSIM (Wang 2004) is >= 0.95: a DCT
#: quality found by the fast search at 4:4:4 with qpyr's ``ssim`` tables, stored as JPEG streams
#: (``entropy=jfif``: libjpeg-turbo / nvJPEG decode), lossless where that is cheaper
#: (``tools/bench_default_policy.py`` measures it on the demo photos). Photos for ML are viewed
#: by models at a quality floor, not pixel-exact; use ``--policy lossless`` to keep every pixel.
DEFAULT_POLICY = "quality:ssim=0.95"


@runtime_checkable
class Policy(Protocol):
    """Chooses an encoding per level from the built pyramid.

    Required: ``spec`` and ``plan(levels, source_dtype) -> [Encoding]``. Optional hooks the
    writer uses when present:

    - ``plan_encoded(levels, source_dtype, *, slots_per_task[, previous]) -> [EncodedLevel]``:
      the policy encodes (and measures) the levels itself: searches, RD optimisation, and
      per-tile encodings (``EncodedLevel.tile_counts``; the class map goes to
      :func:`qpyr.policies.encode.encode_level` as ``tile_classes``).
    - ``uses_previous = True``: the writer passes ``previous=`` the previous item's levels
      (side information for frame sequences: the previous frame).
    - ``describe() -> dict``: parameters and rules, recorded as the manifest's ``plan``
      (:mod:`qpyr.format.plan`) and shown by ``qpyr info``.

    :func:`plan_levels` runs any policy on one pyramid the way the writer does.
    """

    @property
    def spec(self) -> str:
        """Canonical spec string (recorded in the manifest)."""
        ...

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        """Return one :class:`Encoding` per level (``levels[l]`` is ``[C, h_l, w_l]``)."""
        ...


#: A policy factory: the spec's parameters (names already checked) → the policy.
Factory = Callable[[dict[str, str]], Policy]


class PolicyEntry(NamedTuple):
    """One registered policy: its factory, a one-line description and its parameter names."""

    factory: Factory
    description: str
    keys: tuple[str, ...]


def _lazy(module: str) -> Factory:
    """The ``parse`` of ``qpyr.policies.<module>``, imported when the policy is first parsed
    (these policies pull in torch and the level encoder)."""

    def make(params: dict[str, str]) -> Policy:
        p: Policy = importlib.import_module(f"qpyr.policies.{module}").parse(params)
        return p

    return make


#: name → (factory, description, parameter names): every policy ``parse_policy`` knows, in the
#: order error messages and ``qpyr pack --help`` list them.
REGISTRY: Mapping[str, PolicyEntry] = MappingProxyType({
    "lossless": PolicyEntry(lossless.parse, "every level exact in the source dtype", ("codec",)),
    "fp32": PolicyEntry(float_policy("fp32", StoredType.FLOAT32), "every level float32", ("clamp",)),
    "fp16": PolicyEntry(float_policy("fp16", StoredType.FLOAT16), "every level float16", ("clamp",)),
    "bf16": PolicyEntry(float_policy("bf16", StoredType.BFLOAT16), "every level bfloat16", ("clamp",)),
    "int8": PolicyEntry(int_policy("int8", 8), "every level 8-bit codes + scale/zero-point", _INT_KEYS),
    "int4": PolicyEntry(int_policy("int4", 4), "every level 4-bit codes (two per byte) + scale/zero-point", _INT_KEYS),
    "mixed": PolicyEntry(mixed.parse, "fp16 / int8 / int4 by level short side (>=256 / >=64 / smaller)", MIXED_KEYS),
    "dct": PolicyEntry(dct.parse, "every level 8x8 DCT (qpyr.dct); quality=1..100, chroma=420|444, tables=annexk|ssim, "
                       "entropy=ctx|fast|jfif", ("quality", "chroma", "tables", "entropy")),
    "quality": PolicyEntry(quality.parse, "per level the cheapest encoding meeting ssim=X / psnr=Y (DCT or lossless)",
                           ("ssim", "psnr", "chroma", "tables", "entropy", "search")),
    "adaptive": PolicyEntry(_lazy("adaptive"), "per level DCT quality from edge density / texture entropy "
                            "(thresholds settable)",
                            ("edge_lo", "edge_hi", "entropy_lo", "entropy_hi", "q_low", "q_mid", "q_high", "chroma_min")),
    "saliency": PolicyEntry(_lazy("saliency"), "per tile prune/int4/int8/fp16/fp32 from saliency + motion (qpyr.tiles)",
                            ("tile", "prune", "int4", "int8", "fp16", "frames")),
    "budget": PolicyEntry(_lazy("budget"), "rate-distortion optimal encodings within bytes=B per image (weights=, ssim=)",
                          ("bytes", "weights", "ssim", "qualities")),
})

#: name → (factory, description): the registry without parameter names (read-only).
POLICIES: Mapping[str, tuple[Factory, str]] = MappingProxyType({k: (e.factory, e.description) for k, e in REGISTRY.items()})


def parse_policy(spec: str | Policy | None) -> Policy:
    """Parse ``NAME[:key=value,...]`` (or pass a :class:`Policy` through); ``None`` is
    :data:`DEFAULT_POLICY`."""
    if spec is None:
        spec = DEFAULT_POLICY
    if not isinstance(spec, str):
        if isinstance(spec, Policy):
            return spec
        raise PolicyError(f"Expected a policy spec string or Policy object. Got {spec!r}.")
    name, _, rest = spec.strip().partition(":")
    if name not in REGISTRY:
        raise PolicyError(f"Unknown policy {name!r}; valid policies: {', '.join(REGISTRY)}.")
    params: dict[str, str] = {}
    if rest:
        for part in rest.split(","):
            k, eq, v = part.partition("=")
            if not eq or not k.strip():
                raise PolicyError(f"Expected key=value in policy {spec!r}. Got {part!r}.")
            if k.strip() in params:
                raise PolicyError(f"Parameter {k.strip()!r} given twice in policy {spec!r}.")
            params[k.strip()] = v.strip()
    entry = REGISTRY[name]
    _check_keys(name, params, entry.keys)
    return entry.factory(params)


def plan_levels(policy: str | Policy, levels: list[np.ndarray], source_dtype: np.dtype[Any], *,
                previous: list[np.ndarray] | None = None, slots_per_task: int = 256) -> list[Any]:
    """Run ``policy`` on one built pyramid the way the writer does: returns one
    :class:`~qpyr.policies.encode.EncodedLevel` per level (encoding, bytes, quality, and for ``saliency``
    the per-tile class map ``tile_map`` and its counts). ``previous``: the previous frame's levels (side information)."""
    from qpyr.policies.encode import encode_level

    p = parse_policy(policy)
    dt = np.dtype(source_dtype)
    if hasattr(p, "plan_encoded"):
        kw = {"previous": previous} if getattr(p, "uses_previous", False) else {}
        return list(p.plan_encoded(levels, dt, slots_per_task=slots_per_task, **kw))
    return [encode_level(lv, dt, enc, li=li, slots_per_task=slots_per_task)
            for li, (lv, enc) in enumerate(zip(levels, p.plan(levels, dt), strict=True))]
