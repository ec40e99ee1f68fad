"""qpyr.samples: the real photos the demo, tests and benchmarks share, and the crop corpus."""

from __future__ import annotations

import numpy as np
import pytest

from qpyr.errors import QpyrError
from qpyr.samples import SAMPLE_PHOTOS, random_crops, sample_photo


def test_sample_photos_are_real_rgb_photos() -> None:
    for name in SAMPLE_PHOTOS:
        a = sample_photo(name)
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 300, name
        assert a.std() > 20, name  # a photo, not a flat placeholder
    assert sample_photo("camera").shape == (512, 512)  # gray photos stay 2-D


@pytest.mark.parametrize("name", ["nope", "_fetch", ""])
def test_unknown_sample_photo_is_named(name: str) -> None:
    with pytest.raises(QpyrError, match="Unknown sample photo") as e:
        sample_photo(name)
    assert repr(name) in str(e.value)


def test_random_crops_sizes_channels_and_determinism() -> None:
    photos = [sample_photo("astronaut"), sample_photo("camera")]
    crops = list(random_crops(photos, 40, 16, 96, seed=3))
    assert len(crops) == 40
    assert {c.ndim for c in crops} == {2, 3}  # both sources drawn
    for c in crops:
        assert c.dtype == np.uint8 and 16 <= c.shape[0] <= 96 and 16 <= c.shape[1] <= 96
        assert c.ndim == 2 or c.shape[2] == 3
    again = list(random_crops(photos, 40, 16, 96, seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(crops, again, strict=True))
    other = list(random_crops(photos, 40, 16, 96, seed=4))
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(crops, other, strict=True))
