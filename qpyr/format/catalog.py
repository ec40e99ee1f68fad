"""The item catalog of a committed store (spec/format.md, "Catalog"), as the reader holds it.

One row per item: its name, its source (dtype code, channels, height, width, level count) and,
per level, where its samples are stored and how well they reproduce the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Catalog"]


@dataclass(frozen=True, eq=False)
class Catalog:
    """A checked catalog (read-only by convention: the arrays are shared with the reader).

    Attributes:
        names: item names, in item order (unique).
        sources: ``int64 [N, 5]``: dtype code, channels, height, width, level count.
        levels: one ``int64 [N, len(LEVEL_COLUMNS)]`` table per level (``-1`` rows: item lacks it).
        quality: one ``float32 [N, 2]`` table per level: PSNR and RGB-SSIM (NaN: not measured).
        index: name -> item number.
    """

    names: list[str]
    sources: np.ndarray
    levels: list[np.ndarray]
    quality: list[np.ndarray]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {n: i for i, n in enumerate(self.names)})
