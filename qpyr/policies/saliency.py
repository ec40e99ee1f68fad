"""The ``saliency`` policy: per-tile precision within a level, stored with ``qpyr.tiles``.

Per tile of ``tile x tile`` pixels of a level (normalized units, see :mod:`qpyr.policies.content`)::

    edge      = sqrt(min(1, mean gradient magnitude / 0.25))
    colour    = sqrt(min(1, mean over channels of the tile's std / 0.25))
    saliency  = 0.5 * edge + 0.5 * colour
    motion    = sqrt(min(1, mean |level - previous frame's level| / 0.10))   (0 for stills)
    score     = 0.5 * motion + 0.5 * saliency                                 (in [0, 1])

and the class is prune (score < ``prune`` = 0.05), int4 (< ``int4`` = 0.15), int8 (< ``int8`` =
0.35), fp16 (< ``fp16`` = 0.60), else fp32. The coarsest level is never pruned (its pruned
tiles would have nothing to be filled from): its prune tiles are stored int4. Pruned tiles of
level ``l`` are filled on decode from level ``l + 1`` upsampled (:func:`qpyr.codecs.tiles.fill_pruned`).

Motion needs the previous frame: with ``frames=true`` the writer passes the previous item of the
same packing task (an ordered list of frames); the first item of each task, items of another
shape and ``frames=false`` (the default: still images) get motion 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from qpyr.codecs.encoding import Encoding
from qpyr.codecs.quant import Quantizer, StoredType, normalize
from qpyr.codecs.tiles import CLASSES, TilesChunkCodec
from qpyr.errors import PolicyError
from qpyr.policies._params import _parse_bool, _parse_float, _parse_int
from qpyr.policies.content import gradient, gray, tile_reduce
from qpyr.policies.encode import EncodedLevel, encode_level

__all__ = ["SaliencyPolicy", "tile_scores", "classify", "DEFAULT_THRESHOLDS"]

#: Upper score bounds of prune, int4, int8, fp16 (fp32 above the last).
DEFAULT_THRESHOLDS = (0.05, 0.15, 0.35, 0.60)
EDGE_SCALE = 0.25
COLOUR_SCALE = 0.25
MOTION_SCALE = 0.10


def tile_scores(level: np.ndarray, source_dtype: np.dtype[Any], tile: int, previous: np.ndarray | None = None) -> np.ndarray:
    """Score in [0, 1] per tile, ``[ceil(h/tile), ceil(w/tile)]`` (see the module docstring)."""
    g = gray(level, source_dtype)
    edge = np.sqrt(np.minimum(1.0, tile_reduce(gradient(g), tile) / EDGE_SCALE))
    x = normalize(level, source_dtype)
    colour = np.sqrt(np.minimum(1.0, tile_reduce(x, tile, "std").mean(axis=0) / COLOUR_SCALE))
    sal = 0.5 * edge + 0.5 * colour
    motion = np.zeros_like(sal)
    if previous is not None and previous.shape == level.shape:
        d = np.abs(x - normalize(previous, source_dtype)).mean(axis=0)
        motion = np.sqrt(np.minimum(1.0, tile_reduce(d, tile) / MOTION_SCALE))
    return np.asarray(0.5 * motion + 0.5 * sal)


def classify(scores: np.ndarray, thresholds: tuple[float, float, float, float] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Class codes (0 prune .. 4 fp32) from scores: code = number of thresholds <= score."""
    return np.searchsorted(np.asarray(thresholds), scores, side="right").astype(np.uint8)


@dataclass(frozen=True)
class SaliencyPolicy:
    """``saliency:tile=64,prune=0.05,int4=0.15,int8=0.35,fp16=0.60,frames=false``."""

    tile: int = 64
    thresholds: tuple[float, float, float, float] = DEFAULT_THRESHOLDS
    frames: bool = False
    params: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # the spec as given
    uses_previous = True  # the writer passes the previous item's levels (see module docstring)

    def __post_init__(self) -> None:
        TilesChunkCodec(tile=self.tile)  # validates the tile size
        t = self.thresholds
        if len(t) != 4 or not all(0.0 <= v <= 1.0 for v in t):
            raise PolicyError(f"Expected four saliency thresholds in 0..1. Got {t}.")
        if any(a > b for a, b in zip(t, t[1:], strict=False)):
            raise PolicyError(f"Expected saliency thresholds in order prune <= int4 <= int8 <= fp16. Got {t}.")

    @property
    def spec(self) -> str:
        """Canonical spec from the fields (keys sorted, defaults left out)."""
        kv = {k: f"{v:g}" for k, v, d in zip(("prune", "int4", "int8", "fp16"), self.thresholds, DEFAULT_THRESHOLDS,
                                             strict=True) if v != d}
        if self.tile != 64:
            kv["tile"] = str(self.tile)
        if self.frames:
            kv["frames"] = "true"
        return "saliency" + (":" + ",".join(f"{k}={kv[k]}" for k in sorted(kv)) if kv else "")

    @property
    def encoding(self) -> Encoding:
        codec: Any = TilesChunkCodec(tile=self.tile)
        return Encoding(quantizer=Quantizer(dtype=StoredType.FLOAT32), codec=codec)

    def classes(self, levels: list[np.ndarray], source_dtype: np.dtype[Any],
                previous: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Tile class map of every level."""
        out = []
        for li, lv in enumerate(levels):
            prev = previous[li] if (self.frames and previous is not None and li < len(previous)) else None
            c = classify(tile_scores(lv, source_dtype, self.tile, prev), self.thresholds)
            if li == len(levels) - 1:
                c = np.maximum(c, 1)  # the coarsest level has nothing to fill from
            out.append(c.astype(np.uint8))
        return out

    def plan(self, levels: list[np.ndarray], source_dtype: np.dtype[Any]) -> list[Encoding]:
        return [self.encoding] * len(levels)

    def plan_encoded(self, levels: list[np.ndarray], source_dtype: np.dtype[Any], *, slots_per_task: int,
                     previous: list[np.ndarray] | None = None) -> list[EncodedLevel]:
        """Encode coarsest first, so each level's pruned tiles are filled (and measured) from
        the decoded coarser level exactly as a reader fills them."""
        cmaps = self.classes(levels, source_dtype, previous)
        enc = self.encoding
        int8 = Encoding(quantizer=Quantizer(dtype=StoredType.UINT8), codec=_zstd())
        out: list[EncodedLevel | None] = [None] * len(levels)
        coarser: torch.Tensor | None = None
        for li in range(len(levels) - 1, -1, -1):
            e = encode_level(levels[li], source_dtype, enc, li=li, slots_per_task=slots_per_task,
                             keep_recon=True, tile_classes=cmaps[li], coarser=coarser)
            ref = encode_level(levels[li], source_dtype, int8, li=li, slots_per_task=slots_per_task, quality=False)
            e.int8_bytes = ref.nbytes
            coarser, e.recon = e.recon, None
            out[li] = e
        return [e for e in out if e is not None]

    def describe(self) -> dict[str, Any]:
        return {"name": "saliency", "tile": self.tile, "classes": list(CLASSES),
                "thresholds": dict(zip(CLASSES[:4], self.thresholds, strict=True)), "frames": self.frames,
                "score": "0.5*motion + 0.5*(0.5*edge + 0.5*colour)",
                "fill": "pruned tiles: next coarser level, bilinear upsampling"}


def _zstd() -> Any:
    from qpyr.codecs import ZstdCodec

    return ZstdCodec()


def parse(params: dict[str, str]) -> SaliencyPolicy:
    t = params.get("tile", "64")
    tile = _parse_int("tile", t, 8, 256)
    th = tuple(_parse_float(k, params[k], 0.0, 1.0) if k in params else d
               for k, d in zip(("prune", "int4", "int8", "fp16"), DEFAULT_THRESHOLDS, strict=True))
    frames = _parse_bool("frames", params["frames"]) if "frames" in params else False
    try:
        return SaliencyPolicy(tile, th, frames, tuple(sorted(params.items())))  # type: ignore[arg-type]
    except PolicyError:
        raise
    except Exception as e:  # CodecError from the tile check
        raise PolicyError(str(e)) from e
