"""The ``adaptive`` policy: per level, DCT quality from measured content.

Per level (normalized units, :mod:`qpyr.policies.content`) the policy measures the **edge density**
``e`` and the **texture entropy** ``H`` and puts each in a tier::

    tier(e) = 0 if e < edge_lo (0.10),   1 if e < edge_hi (0.40),   else 2
    tier(H) = 0 if H < entropy_lo (3.0), 1 if H < entropy_hi (5.0), else 2
    tier    = max(tier(e), tier(H))

and stores the level as ``qpyr.dct`` at quality ``q_low`` (70), ``q_mid`` (85) or ``q_high``
(93) for tier 0, 1, 2: busy levels keep more precision because their artefacts are where SSIM
and the eye look; flat levels compress hard at little cost. Chroma is 4:2:0 for levels whose
short side is >= ``chroma_min`` (128) and 4:4:4 below (chroma subsampling of tiny levels costs
more quality than it saves). Levels that are not 1-4 channels of 8/16-bit data are stored
lossless. The measures and the tier of every level are kept on the encoded level
(``EncodedLevel.decision = "planned"``) and the thresholds in the manifest plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qpyr.codecs.encoding import Encoding
from qpyr.errors import PolicyError
from qpyr.policies._params import _parse_float, _parse_int
from qpyr.policies.content import level_measures
from qpyr.policies.dct import dct_encoding
from qpyr.policies.lossless import lossless_encoding

__all__ = ["AdaptivePolicy", "parse"]


@dataclass(frozen=True)
class AdaptivePolicy:
    edge: tuple[float, float] = (0.10, 0.40)
    entropy: tuple[float, float] = (3.0, 5.0)
    qualities: tuple[int, int, int] = (70, 85, 93)
    chroma_min: int = 128
    params: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # the spec as given

    def __post_init__(self) -> None:
        if self.edge[0] > self.edge[1]:
            raise PolicyError(f"Expected edge_lo <= edge_hi (thresholds in order). Got {self.edge}.")
        if self.entropy[0] > self.entropy[1]:
            raise PolicyError(f"Expected entropy_lo <= entropy_hi (thresholds in order). Got {self.entropy}.")
        q = self.qualities
        if not q[0] <= q[1] <= q[2]:
            raise PolicyError(f"Expected q_low <= q_mid <= q_high (in order). Got {q}.")

    @property
    def spec(self) -> str:
        """Canonical spec from the fields (keys sorted, defaults left out)."""
        d = AdaptivePolicy.__dataclass_fields__
        vals = {"edge_lo": self.edge[0], "edge_hi": self.edge[1], "entropy_lo": self.entropy[0],
                "entropy_hi": self.entropy[1], "q_low": self.qualities[0], "q_mid": self.qualities[1],
                "q_high": self.qualities[2], "chroma_min": self.chroma_min}
        dflt = {"edge_lo": 0.10, "edge_hi": 0.40, "entropy_lo": 3.0, "entropy_hi": 5.0, "q_low": 70, "q_mid": 85,
                "q_high": 93, "chroma_min": d["chroma_min"].default}
        kv = {k: f"{v:g}" for k, v in vals.items() if v != dflt[k]}
        return "adaptive" + (":" + ",".join(f"{k}={kv[k]}" for k in sorted(kv)) if kv else "")

    def tier(self, level: np.ndarray, source_dtype: np.dtype[Any]) -> tuple[int, dict[str, float]]:
        m = level_measures(level, source_dtype)
        te = 0 if m["edge_density"] < self.edge[0] else 1 if m["edge_density"] < self.edge[1] else 2
        th = 0 if m["texture_entropy"] < self.entropy[0] else 1 if m["texture_entropy"] < self.entropy[1] else 2
        return max(te, th), m

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        dt = np.dtype(source_dtype)
        out = []
        for lv in levels:
            if lv.shape[0] > 4 or dt not in (np.uint8, np.uint16) and dt.kind != "f":
                out.append(lossless_encoding(dt, lv.shape[0]))
                continue
            t, _ = self.tier(lv, dt)
            chroma = "420" if min(lv.shape[1:]) >= self.chroma_min and lv.shape[0] >= 3 else "444"
            out.append(dct_encoding(self.qualities[t], chroma, dt))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": "adaptive", "edge_density": list(self.edge), "texture_entropy": list(self.entropy),
                "dct_quality": list(self.qualities), "chroma_min": self.chroma_min,
                "rule": "tier = max(tier(edge_density), tier(texture_entropy)); quality = dct_quality[tier]"}


def parse(params: dict[str, str]) -> AdaptivePolicy:
    """``adaptive`` from its parameters (names already checked by :func:`qpyr.policies.parse_policy`)."""
    d = AdaptivePolicy()

    def f(k: str, default: float, hi: float) -> float:
        return _parse_float(k, params[k], 0.0, hi) if k in params else default

    def i(k: str, default: int) -> int:
        return _parse_int(k, params[k], 1, 100) if k in params else default

    return AdaptivePolicy(
        edge=(f("edge_lo", d.edge[0], 1.0), f("edge_hi", d.edge[1], 1.0)),
        entropy=(f("entropy_lo", d.entropy[0], 8.0), f("entropy_hi", d.entropy[1], 8.0)),
        qualities=(i("q_low", d.qualities[0]), i("q_mid", d.qualities[1]), i("q_high", d.qualities[2])),
        chroma_min=_parse_int("chroma_min", params["chroma_min"], 1, 2**20) if "chroma_min" in params else d.chroma_min,
        params=tuple(sorted(params.items())),
    )
