"""Read arguments are checked: regions and levels must be integers (0.5 is refused, not
truncated), levels must exist; negative item indices count from the end, as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qpyr
from qpyr.errors import InputError, ItemNotFoundError


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(4)
    return qpyr.pack({f"i{k}": rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for k in range(3)},
                     str(tmp_path / "s.qpyr"), policy="lossless", levels=2)


@pytest.mark.parametrize("region", [(0.5, 0, 8, 8), (0, 0, 8.0, 8), (True, 0, 8, 8), ("0", 0, 8, 8)])
def test_non_integer_regions_are_refused(store, region):
    with pytest.raises(InputError, match="region"):
        store.read("i0", [0], region=region)


def test_numpy_integer_regions_are_accepted(store):
    r = tuple(np.int64(v) for v in (0, 8, 16, 40))
    assert torch.equal(store.read("i0", [0], region=r)[0], store.read("i0", [0])[0][:, 0:16, 8:40])


@pytest.mark.parametrize("levels", [[0.5], [-1], [2], -1])
def test_levels_must_be_integers_that_exist(store, levels):
    with pytest.raises((InputError, ItemNotFoundError)):
        store.read("i0", levels)


def test_negative_item_indices_count_from_the_end(store):
    assert torch.equal(store.read(-1, [1])[1], store.read("i2", [1])[1])
    with pytest.raises(ItemNotFoundError):
        store.read(-4, [0])
