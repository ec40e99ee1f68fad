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
from qpyr import inputs as qin
from qpyr.cli import main
from qpyr.errors import InputError, InputNotFoundError
from qpyr.inputs import FileList, discover

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
    st = qpyr.pack(f"{bucket}/data/**/*.png", str(tmp_path / "s.qpyr"), storage_options=so, slots_per_task=3)
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
    from qpyr.storage import ObjectStore
    from qpyr.writer import PackOptions, _list_inputs

    peaks = {}
    for n in (10_000, 60_000):
        lst = tmp_path / f"list{n}.txt"
        with open(lst, "w", encoding="utf-8") as f:
            for i in range(n):
                f.write(f"/data/images/class{i % 1000:04d}/image_{i:08d}.jpg\n")
        ostore = ObjectStore(str(tmp_path / f"s{n}"))
        tracemalloc.start()
        listing = _list_inputs(FileList(str(lst)), ostore, PackOptions(policy="lossless"), session=f"x{n}",
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
