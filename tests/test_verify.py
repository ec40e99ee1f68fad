"""``qpyr verify`` on the 1.x layout: streams shard by shard, checks every checksum, the manifest and the array
documents, optionally decodes every item, and names every corrupt item (exit code 1)."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import qpyr
from qpyr.cli import main
from qpyr.format.layout import BucketSpec
from qpyr.format.shard import add_crc, index_nbytes, parse_index
from qpyr.ops.verify import verify

RNG = np.random.default_rng(8)


@pytest.fixture(scope="module")
def _packed(tmp_path_factory, small_photos, photos) -> str:
    """int8 (with qparams), several buckets and shard rows, and one item tiled at level 0."""
    items = {f"{n}-{i}": a for i in range(3) for n, a in small_photos.items()}
    items["wide"] = np.ascontiguousarray(np.tile(photos["coffee"], (1, 2, 1))[:300, :1100])  # 5 tiles at level 0
    url = str(tmp_path_factory.mktemp("verify") / "s.qpyr")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine torch's thread pool only spins
    try:
        qpyr.pack(items, url, policy="int8", slots_per_task=4, levels=3, format="1")  # the 1.x layout (2.0: test_verify_records.py)
    finally:
        torch.set_num_threads(threads)
    return url


@pytest.fixture
def store_url(_packed, tmp_path) -> str:
    import shutil

    url = str(tmp_path / "s.qpyr")
    shutil.copytree(_packed, url)
    return url


def _chunk(url: str, name: str, level: int, ty: int = 0, tx: int = 0) -> tuple[Path, int, int]:
    st = qpyr.open(url)
    i = st.names.index(name)
    bi, slot = (int(x) for x in st.catalog.levels[level][i, :2])
    spec = BucketSpec.from_dict(st.manifest["buckets"][bi])
    key, inner = spec.chunk_location(slot, ty, tx)
    p = Path(url) / spec.path / "data" / key
    data = p.read_bytes()
    idx = parse_index(data[-index_nbytes(spec.n_inner):], spec.n_inner, len(data), key)
    off, nb = (int(x) for x in idx[inner])
    return p, off, nb


def test_clean_store_verifies_and_streams_by_shard(store_url):
    st = qpyr.open(store_url)
    seen = []
    tracemalloc.start()
    rep = verify(st, decode=True, on_progress=seen.append)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rep.ok, rep.problems
    assert rep.items == len(st) == 16 and rep.corrupt == [] and rep.warnings == []
    shards = sum(1 for p in Path(store_url).rglob("*") if p.is_file() and "/data/c/" in p.as_posix())
    assert rep.shards == shards == len(seen)
    assert rep.chunks >= sum(st.item_levels(n) for n in st.names) + 4  # the wide item's level 0 has 5 tiles
    assert peak < 48 * 2**20  # one shard and one decode batch at a time, not the store


def test_corrupt_chunk_names_item_and_level_and_cli_exits_1(store_url, capsys):
    p, off, nb = _chunk(store_url, "coffee-1", 1)
    data = bytearray(p.read_bytes())
    data[off + 2] ^= 0x40
    p.write_bytes(bytes(data))
    rep = verify(qpyr.open(store_url))
    assert not rep.ok and rep.corrupt == ["coffee-1"]
    assert any("item 'coffee-1' level 1: chunk (0, 0)" in x and "crc32c" in x for x in rep.problems)
    assert main(["verify", store_url]) == 1
    out = capsys.readouterr().out
    assert "CORRUPT: item 'coffee-1' level 1" in out and "FAILED" in out


def test_tile_of_a_tiled_item(store_url):
    p, off, nb = _chunk(store_url, "wide", 0, 0, 3)
    data = bytearray(p.read_bytes())
    data[off + nb - 1] ^= 1  # the chunk's own crc
    p.write_bytes(bytes(data))
    rep = verify(qpyr.open(store_url))
    assert rep.corrupt == ["wide"] and any("chunk (0, 3)" in x for x in rep.problems)


def test_payload_that_passes_its_crc_but_does_not_decode_needs_decode(store_url):
    p, off, nb = _chunk(store_url, "rocket-2", 0)
    data = bytearray(p.read_bytes())
    body = bytes(RNG.integers(0, 256, nb - 4, dtype=np.uint8))
    data[off:off + nb] = add_crc(body)
    p.write_bytes(bytes(data))
    assert verify(qpyr.open(store_url)).ok  # checksums all match
    rep = verify(qpyr.open(store_url), decode=True)
    assert rep.corrupt == ["rocket-2"] and any("level 0: does not decode" in x for x in rep.problems)


def test_shard_index_missing_shard_and_qparams_name_their_items(store_url):
    st = qpyr.open(store_url)
    p, _, _ = _chunk(store_url, "chelsea-0", 2)
    data = bytearray(p.read_bytes())
    data[-3] ^= 0xFF  # the index crc
    p.write_bytes(bytes(data))
    rep = verify(st)
    assert "chelsea-0" in rep.corrupt and any("unreadable" in x for x in rep.problems)
    os.remove(p)
    rep = verify(qpyr.open(store_url))
    assert "chelsea-0" in rep.corrupt and any("is missing" in x for x in rep.problems)
    q = next(Path(store_url).rglob("qparams/c/*/*/*"))
    q.write_bytes(q.read_bytes()[:-1] + b"\0")
    rep = verify(qpyr.open(store_url))
    assert any("quantization parameters are corrupt" in x for x in rep.problems)


def test_stray_object_duplicate_slot_and_documents(store_url):
    (Path(store_url) / "levels" / "0" / "stray.bin").write_bytes(b"junk")
    rep = verify(qpyr.open(store_url))
    assert any("total_bytes" in x for x in rep.problems) and any("level 0: objects hold" in x for x in rep.problems)
    os.remove(Path(store_url) / "levels" / "0" / "stray.bin")
    doc_path = next(Path(store_url).rglob("data/zarr.json"))
    doc = json.loads(doc_path.read_text())
    doc["shape"][0] += 1
    doc_path.write_text(json.dumps(doc, separators=(",", ":")).ljust(len(doc_path.read_text())))
    rep = verify(qpyr.open(store_url))
    assert any("data/zarr.json disagrees with the manifest" in x for x in rep.problems)


def test_verify_during_an_unfinished_append_checks_the_snapshot(store_url, small_photos):
    import qpyr.write.writer as w

    real = w.commit
    w.commit = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
    try:
        with pytest.raises(KeyboardInterrupt):
            qpyr.pack({"new": small_photos["coffee"]}, store_url, policy="int8", levels=3, append=True)
    finally:
        w.commit = real
    rep = verify(qpyr.open(store_url), decode=True)
    assert rep.ok, rep.problems
    assert rep.warnings and "unfinished" in rep.warnings[0]


def test_verify_of_a_snapshot_opened_before_an_append(store_url, small_photos):
    """A store object opened before an append (generation 1) still verifies: the check runs
    on the committed store as it is now, and says so, instead of reporting the appended
    objects as strays."""
    old = qpyr.open(store_url)
    qpyr.pack({"new": small_photos["coffee"]}, store_url, policy="int8", levels=3, append=True)
    rep = verify(old)
    assert rep.ok, rep.problems
    assert rep.items == len(old) + 1 and "generation 2" in rep.warnings[0]
    assert len(old) == rep.items - 1  # the caller's snapshot itself is untouched
