"""Real sample photos for the demo, the tests and the benchmarks.

The photos are scikit-image's (``skimage.data``): they ship inside that package, so nothing is
downloaded. ``motorcycle`` is the left view of ``skimage.data.stereo_motorcycle()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from qpyr.errors import QpyrError

SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
"""The five RGB photos the demo packs and the benchmarks measure by default."""


def sample_photo(name: str) -> np.ndarray:
    """scikit-image's photo ``name``: ``uint8 [H, W, 3]`` (RGB) or ``uint8 [H, W]`` (gray
    photos such as ``camera``), values 0..255."""
    try:
        import skimage.data as skd
    except ImportError:
        raise QpyrError("Sample photos come from scikit-image: pip install scikit-image.") from None
    if name == "motorcycle":
        return np.asarray(skd.stereo_motorcycle()[0])
    fn = getattr(skd, name, None)
    if not callable(fn) or name.startswith("_"):
        raise QpyrError(f"Unknown sample photo {name!r}: expected a function of skimage.data, e.g. "
                        f"{', '.join(SAMPLE_PHOTOS)}.")
    return np.asarray(fn())


def random_crops(
    photos: Sequence[np.ndarray], n: int, lo: int, hi: int, *, min_scale: float = 0.2, seed: int = 0
) -> Iterator[np.ndarray]:
    """``n`` random crops of ``photos`` (arrays ``[H, W]`` or ``[H, W, C]``), same dtype and
    channels, each ``h x w`` with both sides drawn uniformly from ``lo..hi``.

    Each crop is a window of ``h/s x w/s`` pixels (at least 8, at most the photo) for a zoom
    ``s`` drawn uniformly from ``[min_scale, 1]``, resized bilinearly to ``h x w``: a corpus of
    varied sizes, aspect ratios and levels of detail, like the images of a web-scale dataset.
    The same arguments give the same crops."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for _ in range(n):
        a = photos[int(rng.integers(len(photos)))]
        h, w = (int(x) for x in rng.integers(lo, hi + 1, 2))
        s = rng.uniform(min_scale, 1.0)
        ph, pw = a.shape[:2]
        ch, cw = min(ph, max(8, int(h / s))), min(pw, max(8, int(w / s)))
        y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        yield np.asarray(Image.fromarray(a[y:y + ch, x:x + cw]).resize((w, h), Image.Resampling.BILINEAR))
