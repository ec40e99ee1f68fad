"""Format 2.0 records: ``qpyr verify`` checks every shard's framing and every record's bounds,
header and tile crc32c, naming the item, level and object; hostile catalogs and shards are
refused before any fetch or allocation they would drive."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import qpyr
from qpyr.cli import main
from qpyr.errors import FormatError, QpyrError
from qpyr.format import heap
from qpyr.ops.verify import verify


@pytest.fixture(scope="module")
def _packed(tmp_path_factory, small_photos, photos) -> str:
    """int8 (parameters in records), small shards (records straddle none, several shards per
    level and task), 2 tasks, and one item tiled at level 0 (a tile table)."""
    items = {f"{n}-{i}": a for i in range(3) for n, a in small_photos.items()}
    items["wide"] = np.ascontiguousarray(np.tile(photos["coffee"], (1, 2, 1))[:300, :1100])
    url = str(tmp_path_factory.mktemp("verify2") / "s.qpyr")
    qpyr.pack(items, url, policy="int8", slots_per_task=8, levels=3, shard_bytes=2**16)
    return url


@pytest.fixture
def url(_packed, tmp_path) -> str:
    out = str(tmp_path / "s.qpyr")
    shutil.copytree(_packed, out)
    return out


def _record(url: str, name: str, level: int) -> tuple[qpyr.Store, int, int, int, int]:
    st = qpyr.open(url)
    i = st.names.index(name)
    row = st.catalog.levels[level][i]
    return st, i, int(row[1]), int(row[6]), int(row[4])


def test_clean_store_verifies_with_several_shards_per_level(url):
    st = qpyr.open(url)
    assert st.manifest["format_version"] == "2.0" and st.manifest["tasks"] == 2
    assert st.manifest["records"]["shards"][0] > 2  # several shards of 64 KiB at level 0
    rep = verify(st, decode=True)
    assert rep.ok, rep.problems
    assert rep.shards == sum(st.manifest["records"]["shards"])
    assert main(["verify", url, "--quiet"]) == 0


def test_a_flipped_tile_byte_names_item_level_and_exits_1(url, capsys):
    st, i, task, off, n = _record(url, "wide", 0)
    S = st.manifest["records"]["shard_bytes"]
    j, o = divmod(off + n // 2, S)
    p = Path(url) / f"levels/0/c/{task}/{j}"
    data = bytearray(p.read_bytes())
    data[heap.span(o, o + 1)[0]] ^= 0x40
    p.write_bytes(bytes(data))
    rep = verify(qpyr.open(url))
    assert not rep.ok and rep.corrupt == ["wide"]
    assert any("'wide' level 0: chunk" in x and "crc32c" in x for x in rep.problems), rep.problems
    with pytest.raises(QpyrError, match="wide"):
        qpyr.open(url).read("wide", 0)
    assert main(["verify", url]) == 1


def test_missing_and_stray_shards_and_a_broken_frame(url):
    st = qpyr.open(url)
    name = st.names[0]
    _, i, task, off, n = _record(url, name, 1)
    S = st.manifest["records"]["shard_bytes"]
    victim = Path(url) / f"levels/1/c/{task}/{off // S}"
    victim.unlink()
    (Path(url) / "levels/0/c/7").mkdir(parents=True)
    (Path(url) / "levels/0/c/7/0").write_bytes(b"junk")
    rep = verify(qpyr.open(url))
    assert any(f"{name!r} level 1: shard levels/1/c/{task}/{off // S} is missing" in x for x in rep.problems)
    assert any("levels/0/c/7/0: shard object that the shard table does not list" in x for x in rep.problems)
    with pytest.raises(FormatError, match="missing"):
        qpyr.open(url).read(name, 1)
    # a shard whose frame was rewritten (same size, a compressed block header) is unreadable
    p = Path(url) / "levels/2/c/0/0"
    data = bytearray(p.read_bytes())
    data[heap.HEADER] |= 0b100  # block type raw -> compressed
    p.write_bytes(bytes(data))
    rep = verify(qpyr.open(url))
    assert any("levels/2/c/0/0" in x and "wrong header" in x for x in rep.problems), rep.problems


def _rewrite_catalog(url: str, level: int, fn) -> None:
    """Apply ``fn`` to catalog table ``level_{level}`` and write it back through stock zarr."""
    arr = zarr.open_array(str(Path(url) / f"catalog/level_{level}"), mode="r+")
    tab = arr[:]
    fn(tab)
    arr[:] = tab


@pytest.mark.parametrize("lie", ["offset", "length", "task"])
def test_a_lying_catalog_is_refused_at_open_naming_level_and_object(url, lie):
    def edit(tab):
        if lie == "offset":
            tab[0, 6] = 2**40  # far beyond any listed shard
        elif lie == "length":
            tab[0, 4] = 2**45  # beyond the record array
        else:
            tab[0, 1] = 99  # a task the store does not have

    first = qpyr.open(url).names[0]
    _rewrite_catalog(url, 0, edit)
    with pytest.raises(FormatError, match="level 0") as e:
        qpyr.open(url)
    # the item (row 0) is named, with the object or array its record points past
    assert f"item {first!r}" in str(e.value) and ("record array levels/0 " in str(e.value) or "levels/0/c/" in str(e.value))


def test_a_lying_tile_table_is_a_format_error_naming_the_item(url):
    st, i, task, off, n = _record(url, "wide", 0)
    S = st.manifest["records"]["shard_bytes"]
    j, o = divmod(off, S)
    p = Path(url) / f"levels/0/c/{task}/{j}"
    used = heap.parse_frame(p.read_bytes(), S, int(st.catalog.shards[0][(st.catalog.shards[0][:, 0] == task)
                                                                       & (st.catalog.shards[0][:, 1] == j)][0, 2]), "x")
    rec = bytearray(used[o:o + n])
    # int8 level parameters (2 x 1 float32), then a table of 5 tile lengths, then the header crc
    rec[8:12] = (2**31).to_bytes(4, "little")
    from qpyr.format.shard import crc32c

    hn = 8 + 20
    rec[hn:hn + 4] = crc32c(bytes(rec[:hn])).to_bytes(4, "little")  # a consistent crc: only the table lies
    new = bytearray(used)
    new[o:o + n] = rec
    p.write_bytes(heap.encode_frame(bytes(new), S))
    with pytest.raises(FormatError, match="'wide' level 0.*tile table"):
        qpyr.open(url).read("wide", 0, region=(0, 0, 10, 10))
    rep = verify(qpyr.open(url))
    assert rep.corrupt == ["wide"]


def test_stock_zarr_reads_every_record_as_bytes(url):
    st = qpyr.open(url)
    g = zarr.open_group(url, mode="r")
    for li in range(st.manifest["levels"]):
        arr = g[f"levels/{li}"]
        assert arr.shape[0] == st.manifest["tasks"] and arr.dtype == np.uint8
        tab = st.catalog.levels[li]
        for i in range(0, len(st), 4):
            _b, task, _h, _w, n, _d, off = (int(x) for x in tab[i])
            raw = arr[task, off:off + n]
            assert len(raw) == n
        doc = json.loads((Path(url) / f"levels/{li}/zarr.json").read_bytes())
        assert doc["codecs"][1]["name"] == "zstd" and doc["chunk_grid"]["configuration"]["chunk_shape"] == [1, 2**16]
    # a whole single-tile uint8 record is its zstd chunk + crc: a stock reader can decode the samples
    i = st.names.index(st.names[0])
    assert torch.is_tensor(st.read(i, 0)[0])
