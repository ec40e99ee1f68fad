"""Datasets decide at construction what to do with items that lack a requested level (small
images have fewer pyramid levels): a clear error before the first batch (default), skip them,
or read their coarsest level. Before, ``PyramidDataset(levels=[2])`` raised mid-epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import qpyr
from qpyr.errors import InputError
from qpyr.samples import random_crops, sample_photo
from qpyr.torch.datasets import PyramidDataset, StreamingPyramidDataset


@pytest.fixture(scope="module")
def varied(tmp_path_factory) -> tuple[str, qpyr.Store, list[int]]:
    """20 real photo crops of 8..200 px: the small ones have no level 2."""
    crops = {f"c{i:02d}.png": a for i, a in enumerate(random_crops([sample_photo("astronaut"), sample_photo("coffee")],
                                                                     20, 8, 200, seed=4))}
    url = str(tmp_path_factory.mktemp("ml") / "v.qpyr")
    st = qpyr.pack(crops, url, policy="int8")
    lacking = [i for i in range(len(st)) if st.item_levels(i) <= 2]
    assert 0 < len(lacking) < len(st) - 2
    return url, st, lacking


@pytest.mark.parametrize("cls", [PyramidDataset, StreamingPyramidDataset])
def test_default_raises_at_construction_naming_the_items(varied, cls):
    url, st, lacking = varied
    with pytest.raises(InputError, match=rf"{len(lacking)} of 20 items have no level 2.*missing_level='skip'") as e:
        cls(url, levels=[0, 2])
    assert repr(st.names[lacking[0]]) in str(e.value)
    cls(url, levels=[0])  # every item has level 0


@pytest.mark.parametrize("cls", [PyramidDataset, StreamingPyramidDataset])
def test_levels_beyond_the_store_and_bad_choices_are_refused(varied, cls):
    url, st, _ = varied
    with pytest.raises(InputError, match=r"has levels 0\.\.\d+; levels=\[9\] asks for \[9\]"):
        cls(url, levels=[9], missing_level="skip")
    with pytest.raises(InputError, match="missing_level must be one of"):
        cls(url, levels=[0], missing_level="drop")


def test_skip_reads_only_items_with_the_level_through_a_dataloader(varied):
    url, st, lacking = varied
    ds = PyramidDataset(url, levels=[2], missing_level="skip")
    assert len(ds) == len(st) - len(lacking)
    got = [s for b in DataLoader(ds, batch_size=3, num_workers=2, collate_fn=lambda b: b) for s in b]
    assert sorted(s["index"] for s in got) == sorted(set(range(len(st))) - set(lacking))
    for s in got:
        assert torch.equal(s["levels"][2], st.read(s["index"], levels=[2])[2])
    assert [tuple(x) for x in ds.sizes()] == [tuple(st.level_shapes(2)[s["index"]]) for s in
                                              sorted(got, key=lambda s: s["index"])]


def test_streaming_skip_every_kept_item_once_across_ranks_and_resumes(varied):
    url, st, lacking = varied
    kept = sorted(set(range(len(st))) - set(lacking))
    seen = []
    for rank in range(2):
        ds = StreamingPyramidDataset(url, levels=2, missing_level="skip", rank=rank, world_size=2, seed=1)
        seen += [s["index"] for s in ds]
    assert sorted(seen) == kept
    full = [s["index"] for s in StreamingPyramidDataset(url, levels=2, missing_level="skip", seed=2)]
    ds = StreamingPyramidDataset(url, levels=2, missing_level="skip", seed=2)
    it = iter(ds)
    head = [next(it)["index"] for _ in range(4)]
    resumed = StreamingPyramidDataset(url, levels=2, missing_level="skip", seed=2)
    resumed.load_state_dict(ds.state_dict())
    assert head + [s["index"] for s in resumed] == full
    assert ds.state_dict()["items"] == len(kept)


def test_coarsest_gives_small_items_their_coarsest_level_under_the_key(varied):
    url, st, lacking = varied
    ds = PyramidDataset(url, levels=[2], missing_level="coarsest")
    assert len(ds) == len(st)
    for i in range(len(st)):
        t = ds[i]["levels"][2]
        li = min(2, st.item_levels(i) - 1)
        assert torch.equal(t, st.read(i, levels=[li])[li])
    small = lacking[0]
    assert tuple(ds.sizes()[small]) == tuple(st.level_shapes(st.item_levels(small) - 1)[small])
    stream = [s["index"] for s in StreamingPyramidDataset(url, levels=[2], missing_level="coarsest")]
    assert sorted(stream) == list(range(len(st)))
    assert np.all(ds.sizes() > 0)
