"""The estimator's format-2.0 layout model against real stores: projected bytes and objects vs
an actual ``qpyr.pack`` of the same corpus, the writer's shard fill replayed exactly, and the
two access patterns' requests vs what the reader actually fetches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import qpyr
from qpyr.estimate import estimate, estimate_store
from qpyr.estimate.layout_model import fill_shards
from qpyr.samples import random_crops, sample_photo

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "camera", "coins", "moon")
FAST = {"providers": ["aws-s3:standard", "aws-s3:standard-ia"], "policies": []}
N = 300  # two pack tasks (256 + 44 images): full and partial shards


def _files(url: str) -> dict[str, int]:
    return {str(f.relative_to(url)): f.stat().st_size for f in Path(url).rglob("*") if f.is_file()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 PNGs: random crops and rescales of scikit-image photos (RGB and gray), sides 48..320 px."""
    root = tmp_path_factory.mktemp("layout2")
    for i, a in enumerate(random_crops([sample_photo(p) for p in PHOTOS], N, 48, 320, seed=7)):
        Image.fromarray(a).save(root / f"im{i:05d}.png")
    return root


def _check(p: qpyr.estimate.PolicyEstimate, url: str, store: qpyr.Store) -> None:
    files = _files(url)
    assert sum(files.values()) == store.total_bytes
    assert p.projected_bytes.mean == pytest.approx(store.total_bytes, rel=0.05), (p.projected_bytes, store.total_bytes)
    assert p.objects == pytest.approx(len(files), rel=0.05), (p.objects, len(files))
    # one GET per shard per level in epoch order; one per image-level at random (plus opening)
    actual = estimate_store(url, providers=["aws-s3:standard"]).policies[0].reads
    for name in ("streaming", "random"):
        assert p.reads[name][0] == pytest.approx(actual[name][0], rel=0.05), name
        assert p.reads[name][1] == pytest.approx(actual[name][1], rel=0.05), name


def test_projection_matches_a_real_pack_with_small_shards(photos, tmp_path) -> None:
    """10 % sample, corpus order known (every header probed): the tasks are replayed in pack
    order with 256 KiB shards, so each task writes dozens of shards per level."""
    sb = 2**18
    r = estimate([str(photos)], sample=30, shard_bytes=sb, **FAST)
    assert (r.store_format, r.shard_bytes) == ("2.0", sb)
    for pol in ("lossless", "fp16"):
        url = str(tmp_path / f"{pol}.qpyr")
        store = qpyr.pack([str(photos)], url, policy=pol, shard_bytes=sb)
        assert store.manifest["records"]["shards"][0] > 2 * store.manifest["tasks"]  # many shards per task
        _check(r.policy(pol), url, store)


def test_projection_matches_a_real_pack_in_random_order(photos, tmp_path) -> None:
    """``count`` given: the corpus order is taken as random, pack tasks are simulated by drawing
    their images from the probe; default 32 MiB shards, one (partial) shard per task and level."""
    r = estimate([str(photos)], sample=30, count=N, **FAST)
    url = str(tmp_path / "lossless.qpyr")
    store = qpyr.pack([str(photos)], url, policy="lossless")
    assert store.manifest["records"]["shards"] == [2] * store.manifest["levels"]
    _check(r.policy("lossless"), url, store)


def test_sample_covering_the_corpus_gives_the_store_and_its_reads_exactly(photos, tmp_path) -> None:
    """Every image packed: bytes, objects and both access patterns' requests and bytes equal the
    real store's — and those are what the reader really fetches (its own request counter)."""
    torch_ds = pytest.importorskip("qpyr.torch")
    src = sorted(str(p) for p in photos.glob("*.png"))[:40]
    sb = 2**16
    r = estimate(src, sample=40, shard_bytes=sb, read_levels=[0], reads_per_month=1, **FAST)
    url = str(tmp_path / "s.qpyr")
    store = qpyr.pack(src, url, policy="lossless", shard_bytes=sb)
    p = r.policy("lossless")
    files = _files(url)
    assert p.projected_bytes.mean == store.total_bytes and p.objects == len(files)
    actual = estimate_store(url, read_levels=[0], reads_per_month=1, providers=["aws-s3:standard"]).policies[0]
    assert p.reads == actual.reads
    shards0 = sum(1 for k in files if k.startswith("levels/0/c/"))
    assert shards0 == store.manifest["records"]["shards"][0] > 1

    # the reader's own count (it does not count the one catalog listing the model adds)
    ds = torch_ds.StreamingPyramidDataset(url, levels=[0], shuffle=True, seed=3)
    assert sum(1 for _ in ds) == 40
    assert ds.store.io_stats() == {"requests": actual.reads["streaming"][0] - 1,
                                   "bytes_read": actual.reads["streaming"][1]}
    mp = torch_ds.PyramidDataset(url, levels=[0])
    for i in np.random.default_rng(0).permutation(len(mp)):
        mp[int(i)]
    assert mp.store.io_stats() == {"requests": actual.reads["random"][0] - 1, "bytes_read": actual.reads["random"][1]}
    # costs: the same storage and writes, different reads
    for c in p.costs:
        st, rd = c.access["streaming"], c.access["random"]
        assert st.read_requests_per_month == actual.reads["streaming"][0] < rd.read_requests_per_month
        assert c.write_once > 0 and rd.total_over_months.mean - st.total_over_months.mean == pytest.approx(
            12 * (rd.reads_per_month - st.reads_per_month))


@pytest.mark.parametrize("shard_bytes", [2**16, 2**17 + 5])
def test_fill_shards_replays_the_writer(shard_bytes) -> None:
    """``fill_shards`` against the writer's own heap: the same shards, used bytes and objects,
    including records larger than a shard (which straddle shards: one ranged GET per piece)."""
    from qpyr.estimate.packing import drop_memory_store
    from qpyr.format import heap
    from qpyr.io.storage import ObjectStore
    from qpyr.write.records import LevelHeap

    rng = np.random.default_rng(shard_bytes)
    sizes = [int(x) for x in rng.lognormal(9.5, 1.3, 400).clip(4, 5 * shard_bytes)]
    sizes[7] = shard_bytes
    sizes[8] = 2 * shard_bytes
    url = f"memory://qpyr-test-fill-{shard_bytes}"
    h = LevelHeap(ObjectStore(url), 0, 0, shard_bytes, 2**16)
    offsets = [h.add(bytes(n)) for n in sizes]
    written = h.close()["shards"]
    used, crossed, blocks = fill_shards(sizes, shard_bytes)
    assert used == [u for _, u, _ in written]
    assert [heap.frame_nbytes(u, shard_bytes) for u in used] == [o for _, _, o in written]
    pieces = [p for o, n in zip(offsets, sizes, strict=True) for p in heap.pieces(o, n, shard_bytes)]
    assert crossed == len(pieces) - len(sizes) > 0
    # a ranged read of each piece: its bytes plus the stored-block headers inside it
    spans = [heap.span(o0, o1) for _, o0, o1 in pieces]
    assert sum(b - a for a, b in spans) == sum(sizes) + 3 * blocks and (blocks > 0) == (shard_bytes > heap.BLOCK)
    drop_memory_store(url)
