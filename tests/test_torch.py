"""qpyr.torch datasets and qpyr.collate: samples, samplers, workers (fork/spawn, persistent),
shard-aware deterministic streaming with exact mid-epoch resumption, device-side decoding."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import qpyr
from qpyr.errors import InputError
from qpyr.read.payload import LevelPayload
from qpyr.torch.collate import collate_list, collate_padded, pad_batch
from qpyr.torch.datasets import PyramidDataset, StreamingPyramidDataset
from qpyr.torch.decode import decode_batch
from qpyr.torch.samplers import AspectRatioBucketSampler


@pytest.fixture(scope="module")
def store_url(tmp_path_factory, photos) -> str:
    """24 crops of the real photos, three aspect ratios, 3 levels; 4 items per shard."""
    items = {}
    shapes = [(64, 64), (48, 96), (96, 40)]
    for k in range(8):
        for j, (n, a) in enumerate(photos.items()):
            if len(items) == 24:
                break
            h, w = shapes[(k + j) % 3]
            items[f"{n}-{k}"] = np.ascontiguousarray(a[k * 11:k * 11 + h, j * 7:j * 7 + w])
    url = str(tmp_path_factory.mktemp("torch") / "s.qpyr")
    qpyr.pack(items, url, policy="lossless:codec=zstd", levels=3, slots_per_task=4)
    return url


def _names(loader) -> list[str]:
    return [n for b in loader for n in b["name"]]


# ------------------------------------------------------------------------------ map-style
def test_pyramid_dataset_samples(store_url):
    ds = PyramidDataset(store_url, levels=[0, 2])
    st = qpyr.open(store_url)
    assert len(ds) == len(st) == 24
    s = ds[5]
    assert s["name"] == st.names[5] and s["index"] == 5 and set(s["levels"]) == {0, 2}
    for li, t in s["levels"].items():
        assert t.dtype == torch.float32 and torch.equal(t, st.read(5, li)[li])
    assert ds[-1]["name"] == st.names[-1]
    with pytest.raises(IndexError):
        ds[24]
    # target_size: the smallest level whose short side is still >= the target
    ts = PyramidDataset(store_url, target_size=30)
    for i in range(len(ts)):
        (li, t), = ts[i]["levels"].items()
        short = min(st.item_info(i)["levels"][li]["shape"][1:])
        assert short >= 30
        if li + 1 < st.item_levels(i):
            assert min(st.item_info(i)["levels"][li + 1]["shape"][1:]) < 30
    assert sorted({tuple(x) for x in ts.sizes().tolist()}) == sorted({tuple(ts[i]["levels"][next(iter(ts[i]["levels"]))].shape[1:]) for i in range(24)})
    tr = PyramidDataset(store_url, levels=1, transform=lambda t: t * 2)
    assert torch.equal(tr[3]["levels"][1], 2 * st.read(3, 1)[1])
    with pytest.raises(InputError, match="exactly one of"):
        PyramidDataset(store_url)
    with pytest.raises(InputError, match="device_decode"):
        PyramidDataset(store_url, levels=[0], device_decode=True, transform=lambda t: t)


def test_a_dataloader_batch_is_fetched_as_one_batch_of_ranges(store_url):
    ds = PyramidDataset(store_url, levels=[0, 2])
    ref = qpyr.open(store_url)
    ref.reset_io_stats()
    ref.read_batch(range(24), 0)
    ref.read_batch(range(24), 2)
    batched = ref.io_stats()["requests"]
    st = ds.store
    st.reset_io_stats()
    got = ds.__getitems__(list(range(-24, 0)))
    assert st.io_stats()["requests"] == batched  # exactly what one read_batch per level costs
    st.reset_io_stats()
    ds.__getitems__(list(range(24)))
    assert st.io_stats()["requests"] < 2 * 24  # indexes cached; neighbours' chunks coalesced into one range
    for i, s in enumerate(got):
        one = ds[i]
        assert s["name"] == one["name"] and s["index"] == i
        assert all(torch.equal(s["levels"][li], one["levels"][li]) for li in (0, 2))
    with pytest.raises(IndexError):
        ds.__getitems__([0, 24])
    auto = PyramidDataset(store_url, target_size=30, device_decode=True)
    for i, s in enumerate(auto.__getitems__(list(range(24)))):
        (li, p), = s["levels"].items()
        assert li == ref.pick_level(i, target_size=30) and torch.equal(p.decode(), ref.read(i, li)[li])


def test_datasets_fill_pruned_tiles_as_read_does(tmp_path, small_photos):
    """saliency stores (qpyr.tiles) prune flat tiles to NaN; samples are filled like Store.read."""
    img = small_photos["coffee"].copy()
    img[:48, :56] = 200  # a flat corner: pruned at level 0
    st = qpyr.pack([img, np.roll(img, 4, axis=1)], str(tmp_path / "s.qpyr"), policy="saliency:tile=16,frames=true")
    for ds in (PyramidDataset(st.url, levels=[0, 1]), StreamingPyramidDataset(st.url, levels=[0, 1], batch_size=2)):
        for s in (ds.__getitems__([0, 1]) if isinstance(ds, PyramidDataset) else list(ds)):
            ref = st.read(s["index"], [0, 1])
            for li in (0, 1):
                assert not torch.isnan(s["levels"][li]).any() and torch.equal(s["levels"][li], ref[li])


def test_decode_batch_fills_pruned_tiles_of_same_shaped_items(tmp_path, small_photos):
    """Device-side decoding of a batch of same-shaped pruned payloads fills them (once NaN)."""
    img = small_photos["coffee"].copy()
    img[:48, :56] = 200
    st = qpyr.pack([img, np.roll(img, 4, axis=1)], str(tmp_path / "s.qpyr"), policy="saliency:tile=16,frames=true")
    ds = PyramidDataset(st.url, levels=[0], device_decode=True)
    out = decode_batch(collate_list(ds.__getitems__([0, 1])), "cpu")
    for k, t in enumerate(out["levels"][0]):
        assert not torch.isnan(t).any() and torch.equal(t, st.read(k, [0])[0])


def test_distributed_sampler_splits_without_duplicates(store_url):
    ds = PyramidDataset(store_url, levels=[2])
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        seen += _names(DataLoader(ds, batch_size=5, sampler=sampler, collate_fn=collate_list))
    assert sorted(seen) == sorted(qpyr.open(store_url).names)


def test_dataloader_with_forked_persistent_workers_and_padding(store_url):
    ds = PyramidDataset(store_url, levels=[0, 1])
    ref = _names(DataLoader(ds, batch_size=6, collate_fn=collate_list))
    loader = DataLoader(ds, batch_size=6, num_workers=2, persistent_workers=True,
                        multiprocessing_context="fork", collate_fn=functools.partial(collate_padded, multiple=16))
    for _ in range(2):  # the persistent workers serve a second epoch
        batches = list(loader)
        assert [n for b in batches for n in b["name"]] == ref
    b = batches[0]
    x, m, sz = b["levels"][0], b["mask"][0], b["sizes"][0]
    assert x.shape[0] == 6 and x.shape[2] % 16 == 0 and x.shape[3] % 16 == 0
    for i in range(6):
        h, w = sz[i].tolist()
        assert m[i].sum() == h * w and torch.equal(x[i, :, :h, :w], ds[ds.store.names.index(b["name"][i])]["levels"][0])
        assert float(x[i, :, h:, :].abs().sum()) == 0.0


def test_spawned_workers_stream_and_follow_set_epoch(store_url):
    ds = StreamingPyramidDataset(store_url, levels=[2], seed=5, batch_size=4)
    loader = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True, multiprocessing_context="spawn",
                        collate_fn=collate_list)
    order = [qpyr.open(store_url).names[i] for i in ds.epoch_order(0)]
    assert _names(loader) == order
    ds.set_epoch(1)  # reaches the persistent spawned workers through shared memory
    assert _names(loader) == [qpyr.open(store_url).names[i] for i in ds.epoch_order(1)]
    mp_ds = PyramidDataset(store_url, levels=[1])
    got = _names(DataLoader(mp_ds, batch_size=8, num_workers=2, multiprocessing_context="spawn", collate_fn=collate_list))
    assert got == qpyr.open(store_url).names


# ------------------------------------------------------------------------------ streaming
def test_streaming_splits_by_rank_and_worker_without_duplicates(store_url):
    names = qpyr.open(store_url).names
    got = []
    for rank in range(2):
        ds = StreamingPyramidDataset(store_url, levels=[1], seed=1, rank=rank, world_size=2, batch_size=3)
        part = _names(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_list))
        order = ds.epoch_order(0)
        assert part == [names[i] for i in order[rank::2]]  # the trainer sees its rank's sequence, in order
        assert len(part) == len(ds) == 12
        got += part
    assert sorted(got) == sorted(names)


def test_streaming_order_is_a_shard_aware_pure_function_of_seed_and_epoch(store_url):
    st = qpyr.open(store_url)
    a = StreamingPyramidDataset(store_url, levels=[0], seed=7, block_shards=2)
    b = StreamingPyramidDataset(store_url, levels=[0], seed=7, block_shards=2)
    o0 = a.epoch_order(0)
    assert np.array_equal(o0, b.epoch_order(0)) and sorted(o0.tolist()) == list(range(len(st)))
    assert not np.array_equal(o0, a.epoch_order(1))
    assert not np.array_equal(o0, StreamingPyramidDataset(store_url, levels=[0], seed=8).epoch_order(0))
    # items of one shard are never spread beyond one block of <= block_shards shards: reads stay local
    shard = st.shard_ids(0)[o0]
    spans = sorted((int(np.flatnonzero(shard == s).min()), int(np.flatnonzero(shard == s).max())) for s in np.unique(shard))
    blocks, end = [], -1
    for first, last in spans:  # overlapping shard spans make up one block
        if first > end:
            blocks.append(0)
        blocks[-1] += 1
        end = max(end, last)
    assert len(spans) >= 6 and max(blocks) <= 2 and len(blocks) >= len(spans) // 2
    assert np.array_equal(StreamingPyramidDataset(store_url, levels=[0], shuffle=False).epoch_order(3), np.arange(len(st)))


_RESUME = textwrap.dedent("""
    import json, sys, torch
    from qpyr.torch.collate import collate_list
    from qpyr.torch.datasets import StreamingPyramidDataset
    url, state, workers = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    ds = StreamingPyramidDataset(url, levels=[1], seed=11, batch_size=4)
    ds.load_state_dict(state)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate_list)
    print(json.dumps([n for b in loader for n in b["name"]]))
""")


def test_streaming_resumes_mid_epoch_in_a_new_process(store_url):
    ds = StreamingPyramidDataset(store_url, levels=[1], seed=11, batch_size=4)
    ds.set_epoch(2)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_list)
    full = _names(loader)
    it = iter(loader)
    consumed = [n for _ in range(3) for n in next(it)["name"]]
    del it
    assert consumed == full[:12]
    state = ds.state_dict(samples_seen=12)
    assert state["epoch"] == 2 and state["position"] == 12
    out = subprocess.run([sys.executable, "-c", _RESUME, store_url, json.dumps(state), "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == full[12:]
    # num_workers=0 counts consumed samples itself; a resumed dataset counts on from there
    d0 = StreamingPyramidDataset(store_url, levels=[1], seed=11, batch_size=4)
    d0.set_epoch(2)
    it0 = iter(DataLoader(d0, batch_size=4, collate_fn=collate_list))
    next(it0), next(it0)
    s0 = d0.state_dict()
    assert s0["position"] == 8
    d1 = StreamingPyramidDataset(store_url, levels=[1], seed=11, batch_size=4)
    d1.load_state_dict(s0)
    rest = _names(DataLoader(d1, batch_size=4, collate_fn=collate_list))
    assert rest == full[8:]
    # elastic: two ranks continue where one left off, between them exactly the rest
    both = []
    for rank in range(2):
        dr = StreamingPyramidDataset(store_url, levels=[1], seed=11, batch_size=4, rank=rank, world_size=2)
        dr.load_state_dict(state)
        both += _names(DataLoader(dr, batch_size=4, collate_fn=collate_list))
    assert sorted(both) == sorted(full[12:])
    with pytest.raises(InputError, match="seed"):
        StreamingPyramidDataset(store_url, levels=[1], seed=12).load_state_dict(state)


def test_streaming_drop_last_gives_every_rank_the_same_count(store_url):
    lens = []
    for rank in range(5):
        ds = StreamingPyramidDataset(store_url, levels=[2], rank=rank, world_size=5, drop_last=True)
        lens.append(len(_names(DataLoader(ds, batch_size=2, collate_fn=collate_list))))
    assert lens == [4] * 5


# ------------------------------------------------------------------------------ device decode
def test_device_decode_workers_return_payloads(store_url):
    ref = PyramidDataset(store_url, levels=[0, 2])
    ds = PyramidDataset(store_url, levels=[0, 2], device_decode=True)
    assert isinstance(ds[0]["levels"][0], LevelPayload)
    loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_list, pin_memory=torch.cuda.is_available())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for b in loader:
        out = decode_batch(b, device)
        padded = decode_batch(b, device, pad=True)
        for li in (0, 2):
            lv = out["levels"][li]
            ts = list(lv) if isinstance(lv, torch.Tensor) else lv
            for j in range(len(b["name"])):
                want = ref[int(b["index"][j])]["levels"][li]
                assert torch.equal(ts[j].cpu(), want)
                h, w = padded["sizes"][li][j].tolist()
                assert torch.equal(padded["levels"][li][j, :, :h, :w].cpu(), want)
    sd = StreamingPyramidDataset(store_url, levels=[1], device_decode=True, shuffle=False)
    b = next(iter(DataLoader(sd, batch_size=24, collate_fn=collate_list)))
    assert len(decode_batch(b)["levels"][1]) == 24


# ------------------------------------------------------------------------------ collation
def test_pad_batch_and_collate_checks():
    ts = [torch.ones(3, 5, 7), torch.ones(3, 9, 2)]
    x, m, s = pad_batch(ts, multiple=4, value=-1.0)
    assert x.shape == (2, 3, 12, 8) and s.tolist() == [[5, 7], [9, 2]]
    assert m[0].sum() == 35 and m[1].sum() == 18 and float(x[0, 0, 6, 0]) == -1.0
    with pytest.raises(InputError, match="channel"):
        pad_batch([torch.ones(3, 2, 2), torch.ones(1, 2, 2)])
    with pytest.raises(InputError, match="same levels"):
        collate_list([{"name": "a", "levels": {0: ts[0]}}, {"name": "b", "levels": {1: ts[1]}}])


def test_aspect_ratio_bucket_sampler(store_url):
    ds = PyramidDataset(store_url, levels=[0])
    sizes = ds.sizes()
    sampler = AspectRatioBucketSampler(sizes, batch_size=3, seed=2)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    for b in batches:
        ratios = {round(float(sizes[i, 1] / sizes[i, 0]), 2) for i in b}
        assert len(ratios) == 1  # one aspect ratio per batch: no padding waste
    assert batches == list(AspectRatioBucketSampler(sizes, batch_size=3, seed=2))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    loader = DataLoader(ds, batch_sampler=AspectRatioBucketSampler(sizes, batch_size=4), collate_fn=collate_padded)
    for b in loader:
        assert bool(b["mask"][0].all())  # equal shapes within a bucket here: no padding at all
    per_rank = [list(AspectRatioBucketSampler(sizes, batch_size=3, seed=2, rank=r, world_size=2)) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1])
    flat = [i for r in per_rank for b in r for i in b]
    assert len(flat) == len(set(flat))


def test_payload_batches_travel_as_one_tensor_per_group(store_url):
    from qpyr.read.payload import PayloadBatch

    ds = PyramidDataset(store_url, levels=[2], device_decode=True)
    same = [i for i, hw in enumerate(ds.sizes().tolist()) if hw == ds.sizes()[0].tolist()][:4]
    batch = collate_list([ds[i] for i in same] + [ds[i] for i in range(24) if i not in same][:2])
    pb = batch["levels"][2]
    assert isinstance(pb, PayloadBatch) and len(pb) == 6 and len(pb._groups) >= 1
    assert len(pb._groups[0][0]) == 4 and pb._groups[0][1].shape[0] == 4  # stacked samples
    ref = PyramidDataset(store_url, levels=[2])
    for j, p in enumerate(pb):
        assert torch.equal(p.decode(), ref[int(batch["index"][j])]["levels"][2])
    only_same = collate_list([ds[i] for i in same])["levels"][2]
    stacked = only_same.decode(stack=True)
    assert isinstance(stacked, torch.Tensor) and stacked.shape[0] == 4


#: The README's DataLoader example, verbatim (also spec/reader.md section 1).
README_EXAMPLE = """\
import torch, qpyr.torch, qpyr.collate
ds = qpyr.torch.PyramidDataset("photos.qpyr", levels=[2])   # or "s3://bucket/photos.qpyr", storage_options={...}
loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=2, collate_fn=qpyr.collate.collate_padded)
for batch in loader:
    x, mask = batch["levels"][2], batch["mask"][2]          # Tensor[32, 3, H, W] float32 in [0, 1]; bool [32, H, W]
"""


def test_readme_dataloader_example(tmp_path, small_photos, photos):
    import pathlib

    assert len(README_EXAMPLE.splitlines()) == 5
    root = pathlib.Path(__file__).parent.parent
    assert README_EXAMPLE in (root / "spec" / "reader.md").read_text()
    readme = (root / "README.md").read_text()
    assert README_EXAMPLE in readme  # the README shows exactly the code this test runs
    items = {**small_photos, "wide": np.ascontiguousarray(photos["astronaut"][:64, :200])}  # two sizes: padding
    qpyr.pack(items, str(tmp_path / "photos.qpyr"), policy="lossless:codec=zstd", levels=3)
    (tmp_path / "example.py").write_text(README_EXAMPLE)
    probe = ("import json, runpy; g = runpy.run_path('example.py'); x, m = g['x'], g['mask']; "
             "print(json.dumps([list(x.shape), list(m.shape), str(x.dtype), int(m.sum()), float(x.min()), float(x.max())]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    xs, ms, dt, valid, lo, hi = json.loads(out.stdout)
    hw = qpyr.open(str(tmp_path / "photos.qpyr")).level_shapes(2)
    h, w = (int(v) for v in hw.max(axis=0))
    assert xs == [6, 3, h, w] and ms == [6, h, w] and dt == "torch.float32"
    assert valid == int(hw.prod(axis=1).sum()) and 0.0 <= lo < hi <= 1.0
