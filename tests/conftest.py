"""Shared fixtures: real photos shipped with scikit-image (no downloads) and small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")


def load_photo(name: str) -> np.ndarray:
    import skimage.data as skd

    if name == "motorcycle":
        return np.asarray(skd.stereo_motorcycle()[0])
    return np.asarray(getattr(skd, name)())


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """The five real RGB photos as uint8 [H, W, 3] arrays."""
    return {n: load_photo(n) for n in PHOTO_NAMES}


@pytest.fixture(scope="session")
def small_photos(photos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Centre crops (<= 128 px) of the photos, for fast tests."""
    out = {}
    for n, a in photos.items():
        h, w = a.shape[:2]
        out[n] = np.ascontiguousarray(a[h // 2 - 64:h // 2 + 64, w // 2 - 80:w // 2 + 50])
    return out
