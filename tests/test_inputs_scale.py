"""Inputs at scale: bucket prefixes and globs on a loopback S3 server, file lists, stable names,
and listings that stream (nothing holds the list of all inputs)."""

from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import torch

import qpyr
from qpyr.cli import main
from qpyr.errors import InputError, InputNotFoundError
from qpyr.io import inputs as qin
from qpyr.io.inputs import FileList, discover

RNG = np.random.default_rng(21)
TREE = ["b.png", "a-1.png", "a/x.png", "a/y/z.jpg", "a.png", "c/d/e/f.png", "c/notes.txt", ".hidden/h.png",
        "a/.dot.png", "Z.png", "é.png"]


def _png(seed: int) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (10 + seed % 7, 12, 3), dtype=np.uint8)
    return imagecodecs.png_encode(a) if True else b""


def _jpg(seed: int) -> bytes:
    return imagecodecs.jpeg8_encode(np.full((16, 16, 3), seed * 10 % 255, np.uint8))


def _content(rel: str, i: int) -> bytes:
    return _jpg(i) if rel.endswith(".jpg") else b"x" if rel.endswith(".txt") else _png(i)


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    for i, rel in enumerate(TREE):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_content(rel, i))
    return root


def test_local_directory_and_globs_stream_in_path_order_with_relative_names(tree):
    names = [r.name for r in discover(str(tree))]
    # every image (hidden ones too when a directory is given), in lexicographic order of the path
    assert names == sorted(n for n in TREE if not n.endswith(".txt"))
    assert [r.name for r in discover(str(tree / "**" / "*.png"))] == \
        sorted(n for n in TREE if n.endswith(".png") and not any(p.startswith(".") for p in n.split("/")))
    assert [r.name for r in discover(str(tree / "*.png"))] == sorted(["b.png", "a-1.png", "a.png", "Z.png", "é.png"])
    assert [r.name for r in discover(str(tree / "a" / "**" / "*.jpg"))] == ["y/z.jpg"]
    with pytest.raises(InputNotFoundError, match="No image files match"):
        list(discover(str(tree / "nothing" / "*.png")))


def test_directory_walk_is_lazy(tree, monkeypatch):
    calls = []
    real = qin.os.scandir
    monkeypatch.setattr(qin.os, "scandir", lambda p: calls.append(p) or real(p))
    first = list(itertools.islice(discover(str(tree)), 3))
    assert [r.name for r in first] == [".hidden/h.png", "Z.png", "a-1.png"]
    assert len(calls) == 2  # the root and ".hidden": "a/", "c/" and deeper are not listed yet


def test_bucket_prefix_glob_and_list_match_the_local_tree(tree, s3, tmp_path):
    bucket, so = s3
    import s3fs

    fs = s3fs.S3FileSystem(**so)
    for i, rel in enumerate(TREE):
        fs.pipe_file(f"{bucket[5:]}/data/{rel}", _content(rel, i))
    local = [r.name for r in discover(str(tree))]
    assert [r.name for r in discover(f"{bucket}/data/", storage_options=so)] == local
    assert [r.name for r in discover(f"{bucket}/data", storage_options=so)] == local
    assert [r.name for r in discover(f"{bucket}/data/**/*.png", storage_options=so)] == \
        [r.name for r in discover(str(tree / "**" / "*.png"))]
    assert [r.name for r in discover(f"{bucket}/data/*.png", storage_options=so)] == \
        [r.name for r in discover(str(tree / "*.png"))]
    # pack straight from the bucket glob: names from the paths, pixels as stored
    st = qpyr.pack(f"{bucket}/data/**/*.png", str(tmp_path / "s.qpyr"), storage_options=so, slots_per_task=3, policy="lossless")
    assert st.names == [r.name for r in discover(str(tree / "**" / "*.png"))]
    for i, rel in enumerate(TREE):
        if rel in st.names:
            want = imagecodecs.png_decode(_content(rel, i))
            assert torch.equal(st.read(rel, [0])[0], torch.from_numpy(np.moveaxis(want, -1, 0).astype(np.float32) / 255))
    # through the CLI into a store in the bucket itself
    opts = [a for k, v in so.items() for a in ("--storage-option", f"{k}={v}")]
    assert main(["pack", f"{bucket}/data/a/**/*", "-o", f"{bucket}/out.qpyr", "-q", *opts]) == 0
    assert qpyr.open(f"{bucket}/out.qpyr", storage_options=so).names == ["x.png", "y/z.jpg"]


def test_bucket_listing_is_paged_lazily(s3):
    bucket, so = s3
    import fsspec

    fs = fsspec.filesystem("s3", **so)  # the instance discover() gets (fsspec caches instances)
    fs.pipe({f"{bucket[5:]}/many/{i:05d}.png": b"" for i in range(1100)})
    calls = []
    real = fs._call_s3

    async def counting(method, *a, **k):
        calls.append(method)
        return await real(method, *a, **k)

    fs._call_s3 = counting
    try:
        first = list(itertools.islice(discover(f"{bucket}/many/**/*.png", storage_options=so), 3))
        assert [r.name for r in first] == ["00000.png", "00001.png", "00002.png"]
        assert calls.count("list_objects_v2") == 1  # one page of 1000 keys, not the whole prefix
        calls.clear()
        assert sum(1 for _ in discover(f"{bucket}/many/*.png", storage_options=so)) == 1100
        assert calls.count("list_objects_v2") == 2  # two pages
    finally:
        del fs._call_s3


def test_file_list_names_urls_and_missing_entries(tree, s3, tmp_path):
    bucket, so = s3
    import s3fs

    s3fs.S3FileSystem(**so).pipe_file(f"{bucket[5:]}/remote/r.png", _png(99))
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join([
        "# a comment", "",
        str(tree / "a" / "x.png"),
        f"{bucket}/remote/r.png",
        f"renamed\t{tree / 'b.png'}",
        str(tree / "a.png"),
    ]) + "\n", encoding="utf-8")
    refs = list(discover(FileList(str(lst)), storage_options=so))
    assert [r.name for r in refs] == [str(tree / "a" / "x.png").lstrip("/"), f"{bucket[5:]}/remote/r.png",
                                      "renamed", str(tree / "a.png").lstrip("/")]
    st = qpyr.pack(FileList(str(lst)), str(tmp_path / "s.qpyr"), storage_options=so)
    assert st.names == [r.name for r in refs]
    assert torch.equal(st.read("renamed", [0])[0], qpyr.pack([str(tree / "b.png")], str(tmp_path / "t.qpyr")).read("b.png", [0])[0])
    # entries are not stat'ed while listing; a missing one fails the pack when loaded, leaving nothing
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{tree / 'b.png'}\n{tree / 'gone.png'}\n", encoding="utf-8")
    with pytest.raises(InputNotFoundError, match="gone.png"):
        qpyr.pack(FileList(str(bad)), str(tmp_path / "u.qpyr"))
    assert not (tmp_path / "u.qpyr").exists() or not any((tmp_path / "u.qpyr").iterdir())
    dup = tmp_path / "dup.txt"
    dup.write_text(f"same\t{tree / 'b.png'}\nsame\t{tree / 'a.png'}\n", encoding="utf-8")
    with pytest.raises(InputError, match="Duplicate item name 'same'"):
        qpyr.pack(FileList(str(dup)), str(tmp_path / "v.qpyr"))
    with pytest.raises(InputNotFoundError, match="input list"):
        list(discover(FileList(str(tmp_path / "nope.txt"))))


def test_listing_memory_does_not_grow_with_the_number_of_inputs(tmp_path):
    """The writer's listing pass over 60,000 list entries holds 8 bytes per name (a hash to
    find duplicates), not the entries: an eager list of refs would take ~12 MB here."""
    from qpyr.io.storage import ObjectStore
    from qpyr.write import PackOptions
    from qpyr.write.listing import list_inputs

    peaks = {}
    for n in (10_000, 60_000):
        lst = tmp_path / f"list{n}.txt"
        with open(lst, "w", encoding="utf-8") as f:
            for i in range(n):
                f.write(f"/data/images/class{i % 1000:04d}/image_{i:08d}.jpg\n")
        ostore = ObjectStore(str(tmp_path / f"s{n}"))
        tracemalloc.start()
        listing = list_inputs(FileList(str(lst)), ostore, PackOptions(policy="lossless"), session=f"x{n}",
                               mode="pack", first_task=0, storage_options=None, previous_names=None)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert listing.items == n and listing.tasks == -(-n // 256)
    assert peaks[60_000] < 2**20, peaks
    assert peaks[60_000] - peaks[10_000] < 12 * (60_000 - 10_000), peaks  # ~8 B per name


def test_names_are_stable_across_runs_and_sources(tree, tmp_path):
    a = qpyr.pack(str(tree), str(tmp_path / "a.qpyr"))
    b = qpyr.pack(iter([str(tree)]), str(tmp_path / "b.qpyr"))  # a one-shot iterator of inputs
    assert a.names == b.names == [r.name for r in discover(str(tree))]
    with pytest.raises(InputError, match="Duplicate item name 'a.png'"):
        qpyr.pack([str(tree / "a.png"), str(tree / "a.png")], str(tmp_path / "c.qpyr"))
    assert not (tmp_path / "c.qpyr").exists() or not any((tmp_path / "c.qpyr").iterdir())


# ------------------------------------------------------------------------------ sample types
def test_bool_inputs_normalize_to_0_and_1(tmp_path):
    """``True`` reads as 1.0 at level 0 (not 1/255), coarse levels hold the fraction of
    ``True`` pixels, and the item is stored (and unpacked) as 8-bit 0/255."""
    a = np.zeros((32, 32), bool)
    a[:, :16] = True
    a[0, 16] = True
    st = qpyr.pack({"mask": a}, str(tmp_path / "s.qpyr"), levels=3, policy="lossless")
    lv = st.read("mask")
    assert torch.equal(lv[0][0], torch.from_numpy(a.astype(np.float32)))
    assert float(lv[1][0, 4, 0]) == 1.0 and float(lv[1][0, 4, 15]) == 0.0
    assert float(lv[2][0, 0, 0]) == 1.0 and float(lv[2][0, 0, 7]) == 0.0
    assert 0.0 < float(lv[1][0, 0, 8]) < 1.0  # 1 of 4 pixels
    from qpyr.format.manifest import DTYPE_CODES

    assert DTYPE_CODES[int(st.catalog.sources[0, 0])] == "uint8"


@pytest.mark.parametrize("dt", [np.int32, np.uint32, np.int64, np.uint64])
def test_wide_integer_inputs_do_not_wrap(tmp_path, dt):
    """Extreme values of 32/64-bit sources: coarse levels saturate at the type's range instead
    of wrapping (float32 rounds 2**63 - 1 up to 2**63, whose cast to int64 wraps to -2**63),
    uint64 values >= 2**63 never read back negative, and level 0 is stored exactly."""
    info = np.iinfo(dt)
    a = np.empty((16, 32), dt)
    a[:, :8] = info.max
    a[:, 8:16] = info.max - 1
    a[:, 16:24] = info.min
    a[:, 24:] = info.min + 1
    for pol in ("lossless", "mixed"):
        st = qpyr.pack({"x": a}, str(tmp_path / f"{pol}.qpyr"), levels=3, policy=pol, overwrite=True)
        lv = st.read("x")
        hi, lo = float(np.float32(info.max)), float(np.float32(info.min))
        for li in range(3):
            left, right = lv[li][0, :, 0], lv[li][0, :, -1]
            assert bool((left >= 0.99 * hi).all()), (pol, li, left)
            assert bool((right <= lo + abs(lo) * 0.01 + 1).all()), (pol, li, right)
            assert float(lv[li].min()) >= (lo if info.min < 0 else 0.0)
        if pol == "lossless":
            raw = st.read("x", [0], dequantize=False)[0].values
            assert raw.dtype == getattr(torch, np.dtype(dt).name)
            assert np.array_equal(raw.numpy()[0], a)
        # unpacked in the source type: bit-exact when lossless, saturated (never wrapped) otherwise
        from qpyr.ops.unpack import unpack

        out = tmp_path / f"out-{pol}"
        files = unpack(st, str(out), fmt="npy")
        got = {Path(f).name: np.load(f) for f in files}
        assert {g.dtype for g in got.values()} == {np.dtype(dt)}
        if pol == "lossless":
            assert np.array_equal(got["x_l0.npy"][..., 0], a)
        for g in got.values():
            assert (g[:, 0, 0] >= info.max // 2).all() and (g[:, -1, 0] <= info.min // 2 + 1).all()


def test_cli_from_list_streams_the_list_with_its_names(tree, tmp_path):
    """``--from-list FILE`` is the same streamed :class:`FileList` as the API: names are the
    entries (so same-named files in different folders do not clash), ``NAME<TAB>PATH`` lines
    name their item, and the list is read while packing, not loaded first."""
    lst = tmp_path / "list.txt"
    (tree / "c" / "a.png").write_bytes(_png(3))  # the same base name as tree/a.png
    lst.write_text(f"# corpus\n{tree / 'a.png'}\n{tree / 'c' / 'a.png'}\nmine\t{tree / 'b.png'}\n", encoding="utf-8")
    url = tmp_path / "s.qpyr"
    assert main(["pack", str(tree / "Z.png"), "--from-list", str(lst), "-o", str(url), "-q"]) == 0
    assert qpyr.open(str(url)).names == ["Z.png", str(tree / "a.png").lstrip("/"), str(tree / "c" / "a.png").lstrip("/"),
                                         "mine"]
    assert main(["pack", "--from-list", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "t.qpyr"), "-q"]) == 1
