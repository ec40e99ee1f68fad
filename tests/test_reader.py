"""The read path: selective fetches and I/O accounting, regions, level choice, stored values,
batches, payloads (device-side decode), CUDA, and the object store's retries and caches."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem

import qpyr
from qpyr.errors import FormatError, InputError, ItemNotFoundError, StorageError
from qpyr.io.storage import ObjectStore, classify_error
from qpyr.read.payload import LevelPayload, StoredLevel, decode_payloads
from qpyr.read.store import BudgetError

RNG = np.random.default_rng(7)


def _textured(h: int, w: int, c: int = 3, dtype: type = np.uint8) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    base = (np.sin(x / 17.0) + np.cos(y / 23.0)) * 0.25 + 0.5
    a = base[..., None] + RNG.normal(0, 0.05, (h, w, c))
    hi = np.iinfo(dtype).max
    return np.clip(a * hi, 0, hi).astype(dtype)


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory, photos):
    """40 crops of the real photos (two sizes), 3 levels, lossless zstd."""
    items = {}
    for k in range(8):
        for n, a in photos.items():
            items[f"{n}-{k}"] = np.ascontiguousarray(a[k * 9:k * 9 + 96 + 32 * (k % 2), 40:170])
    url = str(tmp_path_factory.mktemp("corpus") / "s.qpyr")
    qpyr.pack(items, url, policy="lossless:codec=zstd", levels=3)
    return url


@pytest.fixture(scope="module")
def big_image() -> np.ndarray:
    """600 x 700: its level 0 falls in a > 512 size class, so it is chunked in 256-px tiles."""
    return _textured(600, 700)


# ------------------------------------------------------------------------------ I/O accounting
def test_reading_a_level_fetches_at_most_its_stored_bytes(corpus_store):
    st = qpyr.open(corpus_store)
    summary = st.manifest["level_summary"]
    for level in range(3):
        st.reset_io_stats()
        for i in range(len(st)):
            st.read(i, [level])
        io = st.io_stats()
        assert io["bytes_read"] <= 1.1 * summary[level]["stored_bytes"], (level, io, summary[level])
        # one range per item, plus one index per shard (cached afterwards)
        assert io["requests"] <= len(st) + 8
    # one item (format 2.0): exactly its record's bytes, in one request (the catalog holds the
    # offsets: no shard index to fetch)
    st = qpyr.open(corpus_store)
    lv = st.item_info("coffee-3")["levels"][1]
    st.reset_io_stats()
    st.read("coffee-3", 1)
    assert st.io_stats() == {"bytes_read": lv["stored_bytes"], "requests": 1}
    st.reset_io_stats()
    st.read("coffee-3", [1, 2])
    assert st.io_stats()["requests"] == 2  # one range per level, no metadata


@pytest.mark.parametrize("policy", ["int8:granularity=block,block=8", "int4", "dct:quality=80", "lossless"])
def test_level_bytes_bound_holds_with_parameter_arrays_and_qpyr_codecs(tmp_path, small_photos, policy):
    """Levels with side arrays (quantization parameters) and qpyr codecs: still <= 1.1x."""
    url = str(tmp_path / "s.qpyr")
    qpyr.pack(small_photos, url, policy=policy, levels=3)
    for level in range(3):
        st = qpyr.open(url)
        st.reset_io_stats()
        got = st.read_batch(st.names, level)
        io = st.io_stats()
        assert io["bytes_read"] <= 1.1 * st.manifest["level_summary"][level]["stored_bytes"], (policy, level, io)
        assert torch.equal(got[3], qpyr.open(url).read(3, level)[level])


def test_read_batch_coalesces_neighbouring_items(corpus_store):
    st = qpyr.open(corpus_store)
    names = ["astronaut-0", "chelsea-0", "coffee-0", "rocket-0"]  # packed one after another: adjacent slots
    st.read(names[0], 0)  # warm the shard index
    st.reset_io_stats()
    batch = st.read_batch(names, 0)
    assert st.io_stats()["requests"] == 1  # adjacent chunks of one shard: one byte range
    for n, t in zip(names, batch, strict=True):
        assert torch.equal(t, st.read(n, 0)[0])
    mixed = st.read_batch(["coffee-1", "rocket-2", 5], 2, dtype=torch.float64)
    assert [t.dtype for t in mixed] == [torch.float64] * 3
    assert torch.equal(mixed[2], st.read(5, 2, dtype=torch.float64)[2])


# ------------------------------------------------------------------------------ regions
REGION_POLICIES = ["lossless:codec=zstd", "int4", "int4:scheme=symmetric,granularity=channel",
                   "int8:granularity=block,block=12", "bf16", "fp16"]


@pytest.mark.parametrize("policy", REGION_POLICIES)
def test_region_reads_match_full_reads_and_touch_only_their_tiles(tmp_path, big_image, policy):
    url = str(tmp_path / "s.qpyr")
    qpyr.pack({"big": big_image, "small": big_image[:40, :50]}, url, policy=policy, levels=3)
    st = qpyr.open(url)
    full = st.read("big")
    region = (100, 301, 333, 555)  # odd x0: splits a packed 4-bit byte
    st.reset_io_stats()
    got = st.read("big", region=region)
    for li, t in got.items():
        y0, x0, y1, x1 = region[0] >> li, region[1] >> li, -(-region[2] // 2**li), -(-region[3] // 2**li)
        assert torch.equal(t, full[li][:, y0:y1, x0:x1]), (policy, li)
    # level 0 is tiled (256 px): the region intersects tile rows 0-1 and tile columns 1-2
    b0 = st.bucket_of("big", 0)
    assert (b0.th, b0.tw) == (256, 256)
    st2 = qpyr.open(url)
    st2.reset_io_stats()
    st2.read("big", 0, region=region)
    whole = st2.item_info("big")["levels"][0]["stored_bytes"]
    io = st2.io_stats()
    assert io["bytes_read"] < 0.6 * whole + b0.index_nbytes + 4096, (io, whole)
    # dequantize=False on a region: same values
    sv = st.read("big", [1], region=region, dequantize=False)[1]
    assert torch.allclose(sv.dequantize(), got[1], rtol=0, atol=0)


def test_region_arguments_are_checked(tmp_path):
    st = qpyr.pack({"x": _textured(40, 60)}, str(tmp_path / "s.qpyr"), levels=2)
    for bad in [(0, 0, 41, 10), (10, 10, 10, 20), (-1, 0, 5, 5), (0, 0, 5)]:
        with pytest.raises(InputError, match="region"):
            st.read("x", 0, region=bad)
    assert st.read("x", 1, region=(0, 0, 1, 1))[1].shape == (3, 1, 1)  # one level-0 pixel → one level-1 pixel
    assert st.read("x", 1, region=(39, 59, 40, 60))[1].shape == (3, 1, 1)


# ------------------------------------------------------------------------------ level choice
def test_levels_auto_picks_from_the_catalog_before_fetching(corpus_store):
    st = qpyr.open(corpus_store)
    st.reset_io_stats()
    name = "chelsea-1"  # 128 x 130 at level 0
    assert st.pick_level(name, target_size=60) == 1
    assert st.pick_level(name, target_size=32) == 2
    assert st.pick_level(name, target_size=1000) == 0  # smaller than the target: level 0
    sizes = [lv["stored_bytes"] for lv in st.item_info(name)["levels"]]
    assert st.pick_level(name, max_bytes=sizes[0]) == 0
    assert st.pick_level(name, max_bytes=sizes[0] - 1) == 1
    assert st.pick_level(name, max_bytes=sizes[2], target_size=100) == 2
    assert st.io_stats()["requests"] == 0  # chosen from the manifest/catalog only
    with pytest.raises(BudgetError, match="no level fits max_bytes=10"):
        st.pick_level(name, max_bytes=10)
    got = st.read(name, "auto", max_bytes=sizes[1])
    assert list(got) == [1] and got[1].shape == (3, 64, 65)
    assert list(st.read(name, "auto", target_size=64)) == [1]
    assert [t.shape[1] for t in st.read_batch(["chelsea-0", name], "auto", target_size=60)] == [96, 64]
    with pytest.raises(InputError, match="needs max_bytes"):
        st.read(name, "auto")
    with pytest.raises(InputError, match='apply to levels="auto"'):
        st.read(name, [0], max_bytes=100)
    with pytest.raises(ItemNotFoundError, match="levels 0..2"):
        st.read(name, [3])


def test_level_shapes_and_shard_ids_come_from_the_catalog(corpus_store):
    st = qpyr.open(corpus_store)
    hw = st.level_shapes(1)
    assert hw.shape == (len(st), 2)
    for i in (0, 7, 39):
        assert tuple(hw[i]) == tuple(st.item_info(i)["levels"][1]["shape"][1:])
    ids = st.shard_ids(0)
    assert (ids >= 0).all() and len(np.unique(ids)) == 1  # one task, one (partial) shard of 32 MiB
    small = str(Path(corpus_store).parent / "small-shards.qpyr")
    st2 = qpyr.pack({n: st.read(n, 0)[0].mul(255).round().byte().permute(1, 2, 0).numpy() for n in st.names},
                    small, policy="lossless:codec=zstd", levels=1, shard_bytes=2**16, slots_per_task=16)
    ids2 = st2.shard_ids(0)
    assert len(np.unique(ids2)) == st2.manifest["records"]["shards"][0] > 3
    # items with one id are exactly the records of that shard, in offset order
    tab = st2.catalog.levels[0]
    for sid in np.unique(ids2):
        rows = tab[ids2 == sid]
        assert len(set(rows[:, 1].tolist())) == 1 and (rows[:, 6] // 2**16 == sid % 2**16).all()


# ------------------------------------------------------------------------------ stored values
@pytest.mark.parametrize("policy,stype,vdtype", [
    ("int8", "uint8", torch.uint8),
    ("int8:scheme=symmetric,granularity=channel", "int8", torch.int8),
    ("int8:granularity=block,block=8", "uint8", torch.uint8),
    ("int4", "uint4", torch.uint8),
    ("int4:scheme=symmetric", "int4", torch.int8),
    ("fp16", "float16", torch.float16),
    ("bf16", "bfloat16", torch.bfloat16),
    ("lossless:codec=zstd", "source", torch.uint8),
])
def test_dequantize_false_returns_stored_values_with_scale_and_zero_point(tmp_path, small_photos, policy, stype, vdtype):
    st = qpyr.pack(small_photos, str(tmp_path / "s.qpyr"), policy=policy, levels=2)
    for name in ("coffee", "rocket"):
        sv = st.read(name, [0, 1], dequantize=False)
        ref = st.read(name, [0, 1])
        for li in (0, 1):
            s = sv[li]
            assert isinstance(s, StoredLevel) and s.stored_type == stype and s.values.dtype == vdtype
            assert s.values.shape == ref[li].shape
            assert torch.broadcast_shapes(s.scale.shape, s.values.shape) == s.values.shape
            if stype in ("uint4", "int4"):
                lo, hi = (0, 15) if stype == "uint4" else (-8, 7)
                assert int(s.values.min()) >= lo and int(s.values.max()) <= hi
            assert torch.equal(s.dequantize(), ref[li]), (policy, name, li)


def test_uint16_and_float_sources_read_exactly(tmp_path):
    src = {"u16": _textured(70, 90, 1, np.uint16)[..., 0], "f32": RNG.normal(3, 10, (33, 35, 2)).astype(np.float32)}
    st = qpyr.pack(src, str(tmp_path / "s.qpyr"), policy="lossless", levels=2)
    u = st.read("u16", 0)[0]
    assert torch.equal(u[0], torch.from_numpy(src["u16"].astype(np.float64) / 65535).float())
    sv = st.read("u16", 0, dequantize=False)[0]
    assert sv.values.dtype == torch.uint16 and torch.equal(sv.dequantize(), u)
    f = st.read("f32", 0, region=(3, 4, 20, 30))[0]
    assert torch.equal(f, torch.from_numpy(src["f32"][3:20, 4:30]).permute(2, 0, 1))


# ------------------------------------------------------------------------------ payloads
def test_payloads_pickle_and_decode_to_what_read_returns(corpus_store):
    st = qpyr.open(corpus_store)
    pl = st.fetch("motorcycle-4", [0, 2])
    assert set(pl) == {0, 2} and all(isinstance(p, LevelPayload) for p in pl.values())
    assert pl[0].samples is not None and pl[0].samples.dtype == torch.uint8  # compact: stored integers
    assert pl[0].nbytes == pl[0].samples.nbytes
    back = pickle.loads(pickle.dumps(pl))
    ref = st.read("motorcycle-4", [0, 2])
    for li in (0, 2):
        assert torch.equal(back[li].decode(), ref[li])
        assert back[li].shape == tuple(ref[li].shape)
    batch = st.fetch_batch(["astronaut-0", "astronaut-2", "coffee-1", "rocket-3"], 1)
    together = decode_payloads(batch, "cpu", torch.float32)
    for p, t in zip(batch, together, strict=True):
        assert torch.equal(t, p.decode())


def test_split_codec_payloads_carry_coefficients_and_reconstruct_exactly(tmp_path, photos, big_image):
    src = {"rocket": np.ascontiguousarray(photos["rocket"][:200, :260]), "big": big_image}
    st = qpyr.pack(src, str(tmp_path / "s.qpyr"), policy="dct:quality=80", levels=2)
    for name in src:
        ref = st.read(name, [0, 1])
        pl = st.fetch(name, [0, 1], coefficients=True)
        for li, p in pl.items():
            assert p.samples is None and p.codec is not None and len(p.tiles) >= 1
            assert torch.equal(pickle.loads(pickle.dumps(p)).decode(), ref[li]), (name, li)
            assert torch.equal(p.stored().dequantize(), ref[li])
    region = (40, 270, 420, 610)
    got = st.fetch("big", [0], region=region, coefficients=True)[0]
    assert len(got.tiles) == 4  # 2 x 2 of the 3 x 3 tiles of level 0
    assert torch.equal(got.decode(), st.read("big", 0)[0][:, 40:420, 270:610])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_reads_match_cpu_reads(tmp_path, small_photos, big_image):
    for policy in ("lossless:codec=zstd", "int4", "int8:granularity=block,block=8", "dct:quality=85"):
        st = qpyr.pack({**small_photos, "big": big_image}, str(tmp_path / f"{policy[:4]}.qpyr"), policy=policy, levels=2)
        for name in ("coffee", "big"):
            cpu = st.read(name, region=(3, 5, 90, 101))
            gpu = st.read(name, region=(3, 5, 90, 101), device="cuda")
            for li in cpu:
                assert gpu[li].device.type == "cuda"
                torch.testing.assert_close(gpu[li].cpu(), cpu[li], rtol=0, atol=1e-6)
        sv = st.read("coffee", 0, device="cuda", dequantize=False)[0]
        assert sv.values.device.type == "cuda"
        pl = st.fetch("coffee", [0], pin_memory=True)[0]
        assert pl.samples is None or pl.samples.is_pinned()
        dec = decode_payloads(st.fetch_batch(["coffee", "rocket"], 1, coefficients=True), "cuda")
        assert all(t.device.type == "cuda" for t in dec)


def test_pinned_staging_only_where_cuda_exists(corpus_store):
    """pin_memory requests (fetch, payloads, payload batches) pin on a CUDA machine and are
    no-ops without one (torch cannot pin memory without an accelerator runtime)."""
    from qpyr.read.payload import PayloadBatch

    cuda = torch.cuda.is_available()
    st = qpyr.open(corpus_store)
    names = ["astronaut-0", "chelsea-0", "coffee-0"]
    ref = st.read_batch(names, 1)
    pl = st.fetch_batch(names, 1, pin_memory=True)
    assert all(p.samples is not None and p.samples.is_pinned() == cuda for p in pl)
    unpinned = st.fetch_batch(names, 1)
    assert all(p.pin_memory().samples.is_pinned() == cuda for p in unpinned)  # type: ignore[union-attr]
    pb = PayloadBatch(unpinned).pin_memory()
    assert all(torch.equal(a, b) for a, b in zip(pb.decode(), ref, strict=True))
    assert all(torch.equal(p.decode(), r) for p, r in zip(pl, ref, strict=True))
    if not cuda:
        with pytest.raises(InputError, match="cuda.*is_available"):
            st.read("coffee-0", 1, device="cuda")


# ------------------------------------------------------------------------------ errors
def test_truncated_shard_and_missing_shard_are_format_errors(tmp_path, small_photos):
    url = str(tmp_path / "s.qpyr")
    qpyr.pack({"coffee": small_photos["coffee"]}, url, policy="lossless:codec=zstd", levels=2)
    st = qpyr.open(url)
    shard = next(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(url, "levels", "1")) for f in fs
                 if "/c/" in os.path.join(d, f).replace(os.sep, "/"))
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[:500])  # the record's first bytes survive, the rest does not
    with pytest.raises(FormatError, match="item 'coffee' level 1"):
        qpyr.open(url).read("coffee", 1)
    os.remove(shard)
    with pytest.raises(FormatError, match="item 'coffee' level 1: shard .* is missing"):
        qpyr.open(url).read("coffee", 1)
    assert st.read("coffee", 0)[0].shape[0] == 3


# ------------------------------------------------------------------------------ object store
class FlakyFS(MemoryFileSystem):
    """An in-memory filesystem whose reads fail ``fail`` times before succeeding."""

    protocol = "qpyrflaky"
    fail = 0
    error: type[Exception] = ConnectionError

    def cat_file(self, path, start=None, end=None, **kw):  # type: ignore[override]
        if FlakyFS.fail > 0:
            FlakyFS.fail -= 1
            raise FlakyFS.error("simulated: connection reset by peer")
        return super().cat_file(path, start=start, end=end, **kw)


@pytest.fixture
def flaky():
    fsspec.register_implementation("qpyrflaky", FlakyFS, clobber=True)
    FlakyFS.store.clear() if hasattr(FlakyFS, "store") else None
    yield FlakyFS
    FlakyFS.fail = 0
    FlakyFS.error = ConnectionError


def test_transient_errors_are_retried_with_backoff(flaky):
    os_ = ObjectStore("qpyrflaky://bucket/root", retries=3, backoff=0.001)
    os_.write("a/b", b"0123456789")
    flaky.fail = 3
    assert os_.read_ranges(["a/b", "a/b"], [0, 5], [3, None]) == [b"012", b"56789"]
    flaky.fail = 2
    assert os_.read("a/b") == b"0123456789"
    assert os_.io_stats() == {"bytes_read": 18, "requests": 3}
    flaky.fail = 10
    with pytest.raises(StorageError, match="failed after 4 tries"):
        os_.read_range("a/b", 0, 2)
    flaky.fail, flaky.error = 1, PermissionError
    with pytest.raises(StorageError, match="access denied"):
        os_.read("a/b")
    with pytest.raises(FileNotFoundError):
        os_.read("nope")


def test_error_classification():
    assert classify_error(FileNotFoundError("The specified bucket does not exist")) == "no-bucket"
    assert classify_error(FileNotFoundError("bucket/key")) == "missing"
    assert classify_error(PermissionError("Forbidden")) == "auth"
    assert classify_error(OSError("SlowDown: please reduce your request rate (503)")) == "transient"
    assert classify_error(TimeoutError()) == "transient"
    assert classify_error(ConnectionRefusedError()) == "unreachable"
    assert classify_error(ValueError("bad")) == "fatal"
    # s3fs turns SlowDown / InternalError into bare OSErrors carrying only the server's message
    import errno

    assert classify_error(OSError(errno.EBUSY, "Please reduce your request rate.")) == "transient"
    assert classify_error(OSError(errno.EIO, "We encountered an internal error")) == "fatal"
    cause = Exception("An error occurred (InternalError)")
    cause.response = {"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}}  # type: ignore[attr-defined]
    wrapped = OSError(errno.EIO, "We encountered an internal error")
    wrapped.__cause__ = cause
    assert classify_error(wrapped) == "transient"


def test_local_reads_see_rewritten_objects_and_survive_pickle(tmp_path):
    os_ = ObjectStore(str(tmp_path / "root"))
    os_.write("k", b"first version")
    assert os_.read_range("k", 0, 5) == b"first"
    os_.write("k", b"SECOND")  # the cached open file is dropped on write
    assert os_.read_range("k", -3, None) == b"OND"
    assert os_.read("k") == b"SECOND"
    clone = pickle.loads(pickle.dumps(os_))
    assert clone.read("k") == b"SECOND" and clone.io_stats()["requests"] == 1
    with pytest.raises(FileNotFoundError):
        os_.read_range("missing", 0, 1)


def _child_read(q, os_):  # pragma: no cover - runs in a forked child
    q.put(os_.read("k"))


def test_object_store_works_after_fork(tmp_path):
    import multiprocessing as mp

    os_ = ObjectStore(str(tmp_path / "root"))
    os_.write("k", b"shared")
    os_.read("k")  # open file cached in the parent
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_read, args=(q, os_))
    p.start()
    assert q.get(timeout=30) == b"shared"
    p.join(30)


def test_file_and_memory_urls(tmp_path, small_photos):
    a = small_photos["chelsea"]
    st = qpyr.pack({"c": a}, f"file://{tmp_path}/s.qpyr", policy="lossless:codec=zstd", levels=2)
    assert torch.equal(st.read("c", 0)[0], torch.from_numpy(a).permute(2, 0, 1).float() / 255)
    mem = qpyr.pack({"c": a}, "memory://qpyr-reader-test/s.qpyr", policy="int8", levels=2, overwrite=True)
    mem.reset_io_stats()
    got = mem.read("c", 1, region=(10, 10, 50, 60))[1]
    assert got.shape == (3, 20, 25) and mem.io_stats()["requests"] == 1  # the record (parameters, one tile)


def test_batches_touching_more_shards_than_the_caches_hold(tmp_path, small_photos, monkeypatch):
    import qpyr.read.fetch as qs

    items = {f"{n}-{k}": a for k in range(3) for n, a in small_photos.items()}
    url = str(tmp_path / "s.qpyr")
    qpyr.pack(items, url, policy="int8", levels=1, slots_per_task=2)  # 2 items per shard: 8 shards
    monkeypatch.setattr(qs, "_INDEX_CACHE", 1)
    monkeypatch.setattr(qs, "_PARAM_CACHE", 1)
    st = qpyr.open(url)
    got = st.read_batch(st.names, 0)
    for n, t in zip(st.names, got, strict=True):
        assert torch.equal(t, qpyr.open(url).read(n, 0)[0])
