"""Store round trips, corpus layout, selective reads, commit protocol, stock-zarr compatibility."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import qpyr
from qpyr.errors import (
    ChecksumError,
    FormatError,
    IncompleteStoreError,
    InputError,
    ItemNotFoundError,
    StoreExistsError,
    UnsupportedVersionError,
)
from qpyr.ops.unpack import to_source_array

RNG = np.random.default_rng(1234)

SOURCES = {
    "rgb8": RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8),
    "gray8": RNG.integers(0, 256, (20, 31), dtype=np.uint8),
    "rgba8": RNG.integers(0, 256, (17, 9, 4), dtype=np.uint8),
    "rgb16": RNG.integers(0, 65536, (33, 29, 3), dtype=np.uint16),
    "gray16": RNG.integers(0, 65536, (12, 40), dtype=np.uint16),
    "f32": RNG.normal(3, 10, (21, 19, 2)).astype(np.float32),
    "f64": RNG.normal(0, 1, (8, 8)).astype(np.float64),
    "i16": RNG.integers(-30000, 30000, (9, 11), dtype=np.int16),
    "one": np.array([[200]], np.uint8),
    "wide": RNG.integers(0, 256, (1, 3000, 3), dtype=np.uint8),
}


def _hwc(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 3 else a[:, :, None]


def test_lossless_is_bit_exact_for_every_source(tmp_path):
    store = qpyr.pack(SOURCES, str(tmp_path / "s.qpyr"), policy="lossless", levels=3)
    assert len(store) == len(SOURCES) and store.names == list(SOURCES)
    for name, a in SOURCES.items():
        out = store.read(name, [0], dtype=torch.float64 if a.dtype == np.float64 else torch.float32)[0]
        assert out.shape == (_hwc(a).shape[2], *a.shape[:2])
        back = to_source_array(out, store.item_info(name)["dtype"]) if a.dtype.kind in "ub" else out.double().numpy()
        if a.dtype.kind in "ub":
            assert np.array_equal(back, _hwc(a)), name
        elif a.dtype == np.int16:
            assert np.array_equal(out.numpy().transpose(1, 2, 0), _hwc(a).astype(np.float32))
        else:
            assert np.array_equal(back.transpose(1, 2, 0), _hwc(a).astype(np.float64) if a.dtype == np.float64 else _hwc(a)), name
        if a.dtype == np.uint8:
            assert float(out.max()) <= 1.0 and float(out.min()) >= 0.0
    # every level of an integer source is exact on the source grid
    lv = store.read("rgb16")
    assert set(lv) == {0, 1, 2} and lv[2].shape == (3, 9, 8)


@pytest.mark.parametrize("policy", ["fp32", "fp16", "bf16", "int8", "int4", "mixed", "int8:granularity=block,block=4",
                                    "int4:scheme=symmetric,granularity=channel", "int8:granularity=channel"])
def test_every_policy_reads_back_close(tmp_path, policy, small_photos):
    store = qpyr.pack(small_photos, str(tmp_path / "s.qpyr"), policy=policy, levels=3)
    for name, a in small_photos.items():
        ref = torch.from_numpy(a).permute(2, 0, 1).float() / 255
        out = store.read(name, [0])[0]
        err = float((out - ref).abs().max())
        # half a step of the coarsest possible grid: [0, 1] over 255 / 15 codes, or [-1, 1] over ±7
        bound = (1 / 14 if "symmetric" in policy else 1 / 30 if "int4" in policy else 0.5 / 255) + 1e-4
        if policy in ("fp16", "bf16", "fp32") or policy == "mixed":
            bound = 1 / 30 + 1e-4 if policy == "mixed" else 2.0**-9
        assert err <= bound, (policy, name, err)
        info = store.item_info(name)
        assert info["levels"][0]["psnr"] > (20 if "int4" in policy else 45)


def test_constant_images_round_trip_exactly(tmp_path):
    inputs = {"c8": np.full((10, 12, 3), 77, np.uint8), "c16": np.full((9, 9), 1234, np.uint16),
              "cf": np.full((5, 6), -2.5, np.float32), "zero": np.zeros((4, 4), np.uint8)}
    for policy in ("lossless", "int8", "int4", "fp16", "fp32"):
        store = qpyr.pack(inputs, str(tmp_path / f"{policy}.qpyr"), policy=policy, levels=2)
        for name, a in inputs.items():
            out = store.read(name, [0])[0]
            back = to_source_array(out, store.item_info(name)["dtype"])
            assert np.array_equal(back, _hwc(a)), (policy, name)


def test_corpus_of_1000_mixed_size_images_has_few_objects(tmp_path):
    rng = np.random.default_rng(0)
    n = 1000
    inputs = {f"img{i:04d}": rng.integers(0, 256, (int(rng.integers(16, 72)), int(rng.integers(16, 72)), 3), dtype=np.uint8)
              for i in range(n)}
    store = qpyr.pack(inputs, str(tmp_path / "c.qpyr"), policy="int8", levels=2, shard_bytes=2**20)
    assert len(store) == n
    objs = store.object_store.list_sizes()
    tasks = store.manifest["tasks"]
    for li in range(2):
        shards = [k for k in objs if k.startswith(f"levels/{li}/c/")]
        level_bytes = sum(v for k, v in objs.items() if k.startswith(f"levels/{li}/c/"))
        # shards fill to the byte target: at most one partial shard per task
        assert 0 < len(shards) <= -(-level_bytes // 2**20) + tasks, (li, len(shards))
        assert len(shards) == store.manifest["records"]["shards"][li]
    # the whole store: a few objects per level, the catalog, the root (never N)
    assert len(objs) <= sum(store.manifest["records"]["shards"]) + 4 * store.manifest["levels"] + 30
    # random items decode to the right shapes
    for i in (0, 517, 999):
        a = inputs[f"img{i:04d}"]
        assert store.read(f"img{i:04d}", [0])[0].shape == (3, *a.shape[:2])


def test_reading_one_item_level_touches_only_its_chunks(tmp_path, small_photos):
    inputs = {f"{n}-{k}": a for k in range(8) for n, a in small_photos.items()}
    store = qpyr.pack(inputs, str(tmp_path / "s.qpyr"), policy="int8", levels=3)
    store = qpyr.open(str(tmp_path / "s.qpyr"))
    name = "coffee-5"
    info = store.item_info(name)
    store.reset_io_stats()
    store.read(name, [1])
    st = store.io_stats()
    item_bytes = info["levels"][1]["stored_bytes"]
    # format 2.0: one range, exactly the record (its tile and its parameters)
    assert st == {"requests": 1, "bytes_read": item_bytes}
    store.reset_io_stats()
    store.read(name, [1])
    assert store.io_stats() == {"requests": 1, "bytes_read": item_bytes}


def test_stock_zarr_reads_lossless_level_without_qpyr(tmp_path, photos):
    a = photos["chelsea"]
    store = qpyr.pack({"chelsea": a}, str(tmp_path / "s.qpyr"), policy="lossless:codec=zstd", format="1")
    lv = store.item_info("chelsea")["levels"][0]
    np.save(tmp_path / "expect.npy", a)
    code = f"""
import sys, numpy as np, zarr
assert 'qpyr' not in sys.modules
g = zarr.open_group({str(tmp_path / 's.qpyr')!r}, mode='r')
assert g.attrs['qpyr']['format_version'] == '1.0'
arr = zarr.open_array({str(tmp_path / 's.qpyr')!r} + '/' + {lv['bucket']!r} + '/data', mode='r')
x = arr[{lv['slot']}, :, :{a.shape[0]}, :{a.shape[1]}]
assert np.array_equal(x.transpose(1, 2, 0), np.load({str(tmp_path / 'expect.npy')!r}))
assert 'qpyr' not in sys.modules
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_stock_zarr_and_zstd_decode_a_format_2_lossless_record_without_qpyr(tmp_path, photos):
    """Format 2.0, ``lossless:codec=zstd``: a record is the zstd chunk of the item's samples
    (its size class, top-left h x w) and a crc32c; zarr-python reads the record's bytes and
    zstd decodes it, with no qpyr code (spec/format.md §8.6)."""
    a = photos["chelsea"]
    store = qpyr.pack({"chelsea": a}, str(tmp_path / "s.qpyr"), policy="lossless:codec=zstd", levels=1)
    assert store.manifest["format_version"] == "2.0"
    np.save(tmp_path / "expect.npy", a)
    code = f"""
import sys, json, numpy as np, zarr, zstandard
assert 'qpyr' not in sys.modules
url = {str(tmp_path / 's.qpyr')!r}
g = zarr.open_group(url, mode='r')
m = g.attrs['qpyr']
cat = zarr.open_array(url + '/catalog/level_0', mode='r')[:]
bucket, task, h, w, n, dec, off = (int(x) for x in cat[0])
rec = bytes(g['levels/0'][task, off:off + n])
b = m['buckets'][bucket]
cls = lambda s: -(-s // max(16, 2 ** (s.bit_length() - 1) // 4)) * max(16, 2 ** (s.bit_length() - 1) // 4)  # size class
x = np.frombuffer(zstandard.ZstdDecompressor().decompress(rec[:-4]), np.uint8).reshape(b['channels'], cls(h), cls(w))
assert np.array_equal(x[:, :h, :w].transpose(1, 2, 0), np.load(url + '/../expect.npy'))
assert 'qpyr' not in sys.modules
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_crashed_pack_is_incomplete_and_rerun_completes(tmp_path, small_photos, monkeypatch):
    import qpyr.write.writer as w

    url = str(tmp_path / "s.qpyr")

    def boom(*a, **k):
        raise KeyboardInterrupt("simulated crash before commit")

    monkeypatch.setattr(w, "commit", boom)
    with pytest.raises(KeyboardInterrupt):
        qpyr.pack(small_photos, url, slots_per_task=2)
    with pytest.raises(IncompleteStoreError, match="re-run the same pack"):
        qpyr.open(url)
    monkeypatch.undo()
    store = qpyr.pack(small_photos, url, slots_per_task=2)  # same pack again: completes, no --overwrite needed
    assert len(store) == len(small_photos)


def test_existing_store_needs_overwrite(tmp_path, small_photos):
    url = str(tmp_path / "s.qpyr")
    qpyr.pack(small_photos, url)
    with pytest.raises(StoreExistsError, match="overwrite"):
        qpyr.pack(small_photos, url)
    assert len(qpyr.pack({"x": np.zeros((4, 4), np.uint8)}, url, overwrite=True)) == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user data")
    with pytest.raises(StoreExistsError, match="not empty"):
        qpyr.pack(small_photos, str(tmp_path / "other"))
    assert (tmp_path / "other" / "keep.txt").exists()


def test_bad_input_leaves_no_store(tmp_path):
    url = str(tmp_path / "s.qpyr")
    with pytest.raises(InputError):
        qpyr.pack({"ok": np.zeros((4, 4), np.uint8), "bad": np.zeros((0, 4), np.uint8)}, url)
    assert not os.path.exists(url) or not os.listdir(url)


def _corrupt_first_chunk(url: str, level: int) -> str:
    for dirpath, _, files in os.walk(os.path.join(url, "levels", str(level))):
        for f in files:
            if "/c/" in os.path.join(dirpath, f).replace(os.sep, "/"):
                p = os.path.join(dirpath, f)
                data = bytearray(open(p, "rb").read())
                data[40] ^= 0xFF  # inside the first record (after the shard frame's header)
                open(p, "wb").write(bytes(data))
                return p
    raise AssertionError("no shard found")


def test_altered_chunk_is_a_checksum_error_naming_item_and_level(tmp_path, small_photos):
    url = str(tmp_path / "s.qpyr")
    qpyr.pack({"coffee": small_photos["coffee"]}, url, levels=2)
    _corrupt_first_chunk(url, 1)
    store = qpyr.open(url)
    store.read("coffee", [0])  # level 0 untouched
    with pytest.raises(ChecksumError, match=r"item 'coffee' level 1.*crc32c"):
        store.read("coffee", [1])
    from qpyr.ops.verify import verify

    rep = verify(store)
    assert not rep.ok and any("'coffee' level 1" in p and "crc32c" in p for p in rep.problems)


def _edit_manifest(url: str, fn) -> None:
    p = os.path.join(url, "zarr.json")
    doc = json.load(open(p))
    fn(doc["attributes"]["qpyr"])
    open(p, "w").write(json.dumps(doc))


def test_unknown_major_version_and_malformed_manifest(tmp_path):
    url = str(tmp_path / "s.qpyr")
    qpyr.pack({"x": np.zeros((4, 4), np.uint8)}, url)
    _edit_manifest(url, lambda m: m.update(format_version="2.7"))
    assert len(qpyr.open(url)) == 1  # newer minor: accepted
    _edit_manifest(url, lambda m: m.update(format_version="3.0"))
    with pytest.raises(UnsupportedVersionError, match=r"format_version 3.0 is not supported by this qpyr \(reads 2.x, 1.x\)"):
        qpyr.open(url)
    _edit_manifest(url, lambda m: m.update(format_version="1.0"))
    with pytest.raises(FormatError, match=r"missing required field 'height'|'records' is a format 2.0 field"):
        qpyr.open(url)
    _edit_manifest(url, lambda m: m.update(format_version="2.0", future_field=1))
    with pytest.raises(FormatError, match="unknown required manifest field"):
        qpyr.open(url)
    _edit_manifest(url, lambda m: m.update(optional=["future_field"]))
    assert len(qpyr.open(url)) == 1  # listed as optional: ignored
    open(os.path.join(url, "zarr.json"), "w").write('{"zarr_format": 3, "node_type": "gro')
    with pytest.raises(FormatError, match="malformed JSON"):
        qpyr.open(url)


def test_unknown_items_and_levels(tmp_path):
    store = qpyr.pack({"x": np.zeros((8, 8), np.uint8)}, str(tmp_path / "s.qpyr"), levels=2)
    with pytest.raises(ItemNotFoundError, match="No item named 'y'"):
        store.read("y")
    with pytest.raises(ItemNotFoundError, match="levels 0..1"):
        store.read("x", [5])
    with pytest.raises(ItemNotFoundError):
        store.read(3)


def test_memory_url_store(small_photos):
    store = qpyr.pack(small_photos, "memory://qpyr-test-store", policy="int8", overwrite=True)
    again = qpyr.open("memory://qpyr-test-store")
    assert again.names == store.names
    assert again.read("rocket", [0])[0].shape[0] == 3
