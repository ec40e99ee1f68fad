from __future__ import annotations

import numpy as np
import pytest

from qpyr.errors import InputError
from qpyr.io.pyramid import DEFAULT_MIN_SIDE, Filter, build_pyramid, default_levels, level_shape


def test_default_levels_512_gives_5():
    assert DEFAULT_MIN_SIDE == 32
    assert default_levels(512, 512) == 5  # 512, 256, 128, 64, 32
    assert default_levels(63, 1000) == 1
    assert default_levels(64, 64) == 2
    assert default_levels(1, 1) == 1


@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (5, 3), (17, 33), (300, 451)])
def test_level_shapes_round_up(h, w):
    pyr = build_pyramid(np.zeros((3, h, w), np.uint8), levels=4)
    for li, lv in enumerate(pyr):
        assert lv.shape == (3, *level_shape(h, w, li))
        assert lv.shape[1] == -(-h // 2**li) and lv.shape[2] == -(-w // 2**li)


def test_odd_sizes_keep_every_pixel():
    # a bright last column must survive halving (not be dropped)
    a = np.zeros((1, 4, 5), np.float32)
    a[:, :, 4] = 1.0
    l1 = build_pyramid(a, levels=2)[1]
    assert l1.shape == (1, 2, 3)
    np.testing.assert_allclose(l1[0, :, 2], 1.0)  # replicated edge: area over existing pixels
    np.testing.assert_allclose(l1[0, :, :2], 0.0)


def test_area_filter_is_box_average():
    a = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    l1 = build_pyramid(a, levels=2)[1]
    np.testing.assert_allclose(l1[0], [[2.5, 4.5], [10.5, 12.5]])


def test_integer_sources_round_to_source_grid():
    a = np.array([[[0, 1], [0, 0]]], np.uint8)
    l1 = build_pyramid(a, levels=2)[1]
    assert l1.dtype == np.float32 and l1[0, 0, 0] == 0.0  # 0.25 → 0
    b = np.full((1, 2, 2), 65535, np.uint16)
    assert build_pyramid(b, levels=2)[1][0, 0, 0] == 65535.0


def test_level0_is_source_and_1x1_stays_1x1():
    a = np.array([[[7]]], np.uint8)
    pyr = build_pyramid(a, levels=3)
    assert pyr[0] is a
    assert [p.shape for p in pyr] == [(1, 1, 1)] * 3
    assert all(p[0, 0, 0] == 7 for p in pyr)


@pytest.mark.parametrize("f", list(Filter))
def test_filters_preserve_constant(f):
    a = np.full((2, 9, 13), 0.5, np.float32)
    for lv in build_pyramid(a, levels=4, filter=f):
        np.testing.assert_allclose(lv, 0.5, rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(InputError):
        build_pyramid(np.zeros((3, 0, 4)), levels=2)
    with pytest.raises(InputError):
        build_pyramid(np.zeros((3, 4, 4)), levels=0)
    with pytest.raises(InputError):
        build_pyramid(np.zeros((4, 4)), levels=1)
    with pytest.raises(ValueError):
        build_pyramid(np.zeros((1, 4, 4)), filter="bicubic")
