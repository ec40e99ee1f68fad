"""A store is untrusted input. Fuzzed manifests, attributes, catalogs, shard indexes and chunk
bytes must end in a :class:`QpyrError` (or decode) — never another exception, a hang, or an
allocation beyond the documented limits (``format.LIMITS``, checked before allocating).
``unpack`` never writes outside its output directory, whatever the stored names hold."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import qpyr
from qpyr.cli import main
from qpyr.errors import FormatError, QpyrError
from qpyr.format import manifest as fmt
from qpyr.format.layout import BucketSpec
from qpyr.format.shard import add_crc, index_nbytes
from qpyr.ops.info import info_dict
from qpyr.ops.unpack import MAX_COMPONENT_BYTES, safe_relpath, unpack
from qpyr.ops.verify import verify

#: Memory any single hostile example may make qpyr allocate (tracemalloc peak).
BUDGET = 64 * 2**20
FUZZ = settings(max_examples=int(os.environ.get("QPYR_FUZZ_EXAMPLES", "25")), deadline=None, derandomize=True, phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

RNG = np.random.default_rng(17)
ITEMS = {
    "rgb": RNG.integers(0, 256, (40, 52, 3), dtype=np.uint8),
    "grey16": RNG.integers(0, 65536, (23, 31), dtype=np.uint16),
    "f32": RNG.normal(0, 1, (18, 18)).astype(np.float32),
    "tiled": RNG.integers(0, 256, (40, 600, 3), dtype=np.uint8),
}
POLICIES = ["mixed:fp16_min=32,int8_min=16", "dct", "lossless"]
#: Format majors of the masters: the shard-index tests need 1.x; records (2.0, the default) have
#: their own fuzz test; manifest and catalog fuzzing draw from both.
FORMATS = ["1", "2.0"]


@pytest.fixture(scope="module")
def masters(tmp_path_factory) -> dict[str, Path]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for pol in POLICIES:
            for f in FORMATS:
                url = tmp_path_factory.mktemp("hostile") / "s.qpyr"
                items = ITEMS if pol != "dct" else {k: v for k, v in ITEMS.items() if v.dtype == np.uint8}
                # 2.0: shards of 64 KiB, so the tiled item's level-0 record spans shards
                qpyr.pack(items, str(url), policy=pol, slots_per_task=2, levels=3, format=f, shard_bytes=2**16)
                out[(pol, f)] = url
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture
def work(masters, tmp_path):
    def get(pol: str = POLICIES[0], f: str = "1") -> Path:
        dst = tmp_path / f"w-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(masters[(pol, f)], dst)
        return dst

    return get


def _exercise(url: Path) -> None:
    """Open, read every level of every item, verify with decode, report: QpyrError or success
    only, within the memory budget."""
    tracemalloc.start()
    try:
        try:
            s = qpyr.open(str(url))
        except QpyrError:
            return
        for n in s.names:
            try:
                s.read(n)
            except QpyrError:
                pass
        verify(s, decode=True)
        info_dict(s, items=True)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < BUDGET, f"allocated {peak} bytes"


def _root(url: Path) -> dict[str, Any]:
    return json.loads((url / "zarr.json").read_bytes())


def _paths(x: Any, pre: tuple = ()) -> list[tuple]:
    out = [pre]
    if isinstance(x, dict):
        for k, v in x.items():
            out += _paths(v, pre + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            out += _paths(v, pre + (i,))
    return out


HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.sampled_from([0, -1, 1, 2**20, 2**31, 2**33, 2**40, 2**50, 2**63, 10**30, 1000, 33, 17]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["../../etc", "/abs", "levels/0/../../x", "\x00", "1.0", "2.0", "uint8", "float16", "x-1234abcd"]),
    st.lists(st.integers(-3, 2**40), max_size=5), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@FUZZ
@given(data=st.data())
def test_fuzzed_manifest_fields(work, data):
    url = work(data.draw(st.sampled_from(POLICIES)), data.draw(st.sampled_from(FORMATS)))
    doc = _root(url)
    m = doc["attributes"]["qpyr"]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(m)[1:]))
        parent = m
        for k in path[:-1]:
            parent = parent[k]
        action = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8))] = data.draw(HOSTILE)
        else:
            parent[path[-1]] = data.draw(HOSTILE)
    (url / "zarr.json").write_text(json.dumps(doc, allow_nan=True))
    _exercise(url)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), st.integers(0, 3000).map(lambda n: ("cut", n))), data=st.data())
def test_malformed_root_documents(work, raw, data):
    url = work()
    if isinstance(raw, tuple):
        good = (url / "zarr.json").read_bytes()
        raw = good[: raw[1] % len(good)]
    (url / "zarr.json").write_bytes(raw)
    _exercise(url)


def test_absurd_values_are_refused_before_allocating(work):
    url = work()
    base = _root(url)
    b0 = base["attributes"]["qpyr"]["buckets"][0]
    enc0 = base["attributes"]["qpyr"]["encodings"][b0["encoding"]]

    def case(edit, refused: bool = True) -> None:
        doc = copy.deepcopy(base)
        edit(doc["attributes"]["qpyr"])
        (url / "zarr.json").write_text(json.dumps(doc))
        tracemalloc.start()
        try:
            if refused:
                with pytest.raises(FormatError):
                    qpyr.open(str(url))
            else:
                _exercise(url)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak < BUDGET

    case(lambda m: m.update(levels=1000))
    case(lambda m: m.update(items=2**40))                                      # catalog would need > max_catalog_bytes
    case(lambda m: m.update(items=2**30))                                      # allowed count, but the chunks are not there
    case(lambda m: m["catalog"].update(name_bytes=2**34))
    # chunks of 2**24 rows x 48 bytes claimed: only the rows of the 4 items are ever decompressed
    case(lambda m: m["catalog"].update(chunk_rows=2**24), refused=False)
    case(lambda m: m["buckets"][0].update(height=2**20, width=2**20, channels=16,
                                          path=BucketSpec.from_dict(dict(b0, height=2**20, width=2**20, channels=16)).path))
    case(lambda m: m["buckets"][0].update(slots=2**50), refused=False)  # a number, not an allocation
    case(lambda m: m["buckets"][0].update(params_shape=[2, 10**9]))
    case(lambda m: m["encodings"].update({b0["encoding"]: dict(enc0, codec={"name": "gzip"})}))
    case(lambda m: m["encodings"].update({"../../../etc/x": enc0}))
    case(lambda m: m.update(format_version="1.x"))
    case(lambda m: m.update(generation=0))
    case(lambda m: m["level_summary"].pop())
    case(lambda m: m["level_summary"][0].update(encodings={"nope-12345678": 1}))


def _catalog_arrays(url: Path) -> list[Path]:
    return sorted(p.parent.parent for p in (url / "catalog").rglob("c/0*") if p.is_file())


@FUZZ
@given(data=st.data())
def test_fuzzed_catalog_tables_with_valid_checksums(work, data):
    """Decompressible, checksummed catalog chunks holding hostile numbers."""
    url = work(data.draw(st.sampled_from(POLICIES)), data.draw(st.sampled_from(FORMATS)))
    m = _root(url)["attributes"]["qpyr"]
    arr = data.draw(st.sampled_from(_catalog_arrays(url)))
    name = arr.name
    rows = m["catalog"]["chunk_rows"] if name != "names" else 2**20
    tail = {"names": (), "name_offsets": (), "sources": (5,)}.get(
        name, (2,) if name.startswith("quality") else (4,) if name.startswith("shards") else (len(fmt.level_columns(m)),))
    dt = {"names": np.uint8, "name_offsets": np.uint64}.get(name, np.float32 if name.startswith("quality") else np.int64)
    chunk = next(p for p in arr.rglob("*") if p.is_file() and p.name != "zarr.json")
    a = fmt.decode_plain_chunk(chunk.read_bytes(), (rows, *tail), np.dtype(dt), "x").copy()
    flat = a.reshape(-1)
    used = max(1, min(flat.size, 64))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, used - 1))
        v = data.draw(st.sampled_from([-2, -1, 0, 1, 2**31, 2**62, 255, 7, 2**20]))
        flat[i] = np.array(v).astype(dt) if dt is not np.float32 else float(v)
    if data.draw(st.booleans()):
        a = a[: data.draw(st.integers(0, len(a)))]  # a short (truncated) chunk
    chunk.write_bytes(fmt.encode_plain_chunk(a))
    _exercise(url)


def _shards(url: Path) -> list[Path]:
    return sorted(p for p in url.rglob("*") if p.is_file() and "/data/c/" in p.as_posix())


@FUZZ
@given(data=st.data())
def test_fuzzed_chunk_bytes_and_shard_indexes(work, data):
    """Flipped bytes (caught by crc32c), and garbage with a *valid* crc32c — the decoders see
    hostile payloads — plus shard indexes pointing anywhere."""
    url = work(data.draw(st.sampled_from(POLICIES)))
    shard = data.draw(st.sampled_from(_shards(url)))
    m = _root(url)["attributes"]["qpyr"]
    b = next(b for b in m["buckets"] if shard.as_posix().split("/data/c/")[0].endswith(b["path"]))
    n = BucketSpec.from_dict(b).n_inner
    raw = bytearray(shard.read_bytes())
    idx = np.frombuffer(bytes(raw[-index_nbytes(n):-4]), "<u8").reshape(n, 2).copy()
    present = np.nonzero(idx[:, 0] != 2**64 - 1)[0]
    kind = data.draw(st.sampled_from(["flip", "garbage", "garbage", "index", "truncate"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
        shard.write_bytes(bytes(raw))
    elif kind == "garbage" and len(present):
        j = int(present[data.draw(st.integers(0, len(present) - 1))])
        off, nb = int(idx[j, 0]), int(idx[j, 1])
        body = data.draw(st.one_of(st.binary(min_size=0, max_size=nb + 64),
                                   st.just(bytes(raw[off:off + nb - 4])).map(lambda x: x[: len(x) // 2]),
                                   st.just(bytes(raw[off:off + nb - 4])).map(lambda x: x[:-1] + bytes([x[-1] ^ 0xFF]) if x else x)))
        new = add_crc(body)
        data_part = bytes(raw[:off]) + new + bytes(raw[off + nb:-index_nbytes(n)])
        idx = idx.astype(np.int64)
        idx[(idx[:, 0] > off) & (idx[:, 0] >= 0), 0] += len(new) - nb
        idx[j] = (off, len(new))
        idx = idx.astype(np.uint64)
        shard.write_bytes(data_part + add_crc(idx.astype("<u8").tobytes()))
    elif kind == "index" and len(present):
        j = int(present[data.draw(st.integers(0, len(present) - 1))])
        idx[j] = (data.draw(st.integers(0, 2**64 - 2)), data.draw(st.integers(0, 2**64 - 1)))
        shard.write_bytes(bytes(raw[:-index_nbytes(n)]) + add_crc(idx.astype("<u8").tobytes()))
    else:
        shard.write_bytes(bytes(raw[: data.draw(st.integers(0, len(raw)))]))
    _exercise(url)


def _record_shards(url: Path) -> list[Path]:
    return sorted(p for p in (url / "levels").rglob("*") if p.is_file() and "/c/" in p.as_posix())


@FUZZ
@given(data=st.data())
def test_fuzzed_record_shards(work, data):
    """Format 2.0 shard objects: flipped bytes, a record's tile replaced by garbage with a *valid*
    crc32c (the decoders see hostile payloads; at a record's start, a lying tile table or
    parameters under a valid header crc), broken frame headers and truncated objects."""
    from qpyr.format import heap
    from qpyr.format.shard import crc32c

    url = work(data.draw(st.sampled_from(POLICIES)), "2.0")
    shard = data.draw(st.sampled_from(_record_shards(url)))
    m = _root(url)["attributes"]["qpyr"]
    S = m["records"]["shard_bytes"]
    raw = bytearray(shard.read_bytes())
    s = qpyr.open(str(url))
    li, task, j = int(shard.parts[-4]), int(shard.parts[-2]), int(shard.parts[-1])
    row = s.catalog.shards[li][(s.catalog.shards[li][:, 0] == task) & (s.catalog.shards[li][:, 1] == j)][0]
    used = int(row[2])
    kind = data.draw(st.sampled_from(["flip", "garbage", "garbage", "record", "frame", "truncate"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
        shard.write_bytes(bytes(raw))
    elif kind in ("garbage", "record"):
        body = bytearray(heap.parse_frame(bytes(raw), S, used, "x"))
        tab = s.catalog.levels[li]
        starts = [int(o) - j * S for t, o in tab[tab[:, 0] >= 0][:, [1, 6]].tolist() if t == task and 0 <= o - j * S < used]
        a = data.draw(st.sampled_from(starts)) if kind == "record" and starts else data.draw(st.integers(0, max(0, used - 8)))
        n = data.draw(st.integers(4, 64))
        junk = data.draw(st.binary(min_size=n, max_size=n))
        body[a:a + n] = (junk[:-4] + crc32c(junk[:-4]).to_bytes(4, "little"))[:used - a]
        shard.write_bytes(heap.encode_frame(bytes(body[:used]), S))
    elif kind == "frame":
        i = data.draw(st.integers(0, heap.HEADER + 2))
        raw[i] = data.draw(st.integers(0, 255))
        shard.write_bytes(bytes(raw))
    else:
        shard.write_bytes(bytes(raw[: data.draw(st.integers(0, len(raw)))]))
    _exercise(url)


def test_unknown_codec_and_missing_objects(work, capsys):
    url = work()
    doc = _root(url)
    m = doc["attributes"]["qpyr"]
    eid = m["buckets"][0]["encoding"]
    m["encodings"][eid]["codec"] = {"name": "qpyr.future", "configuration": {"x": 1}}
    (url / "zarr.json").write_text(json.dumps(doc))
    assert main(["info", str(url)]) == 1
    assert "qpyr.future" in capsys.readouterr().err
    url = work()
    shutil.rmtree(url / "catalog" / "sources")
    assert main(["verify", str(url)]) == 1
    assert "catalog array" in capsys.readouterr().err


# ------------------------------------------------------------------------------ unpack
HOSTILE_NAMES = ["../escape", "../../../../../../tmp/evil", "/abs/path", "a/../../b", "nul\x00byte", "CON", "con.txt",
                 "LPT1.png", "..", ".", "", "x/./y", "C:\\win\\evil", "\\\\server\\share\\x", "a" * 1000,
                 "é/" * 40 + "deep", "tab\there", "trailing. ", " lead", "ünï/cödé", "a/b", "A/B", "dup", "dup.png",
                 "sym/inside", "\u202eevil", "x" + "/" * 50 + "y"]


def test_unpack_never_writes_outside_the_output_directory(tmp_path):
    url = tmp_path / "s.qpyr"
    qpyr.pack([(n, np.full((4, 4), i, np.uint8)) for i, n in enumerate(HOSTILE_NAMES)], str(url), levels=1, policy="lossless")
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    os.symlink(tmp_path, out / "sym")  # a symlink planted in the output directory, pointing out of it
    with pytest.raises(QpyrError, match="outside the output directory"):
        unpack(qpyr.open(str(url)), str(out))
    os.remove(out / "sym")
    shutil.rmtree(out)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert main(["unpack", str(url), "-o", str(out), "-q"]) == 0
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert len(written) == len(HOSTILE_NAMES)
    root = str(out.resolve())
    for p in written:
        assert os.path.commonpath([root, str(p.resolve())]) == root
        assert len(p.name.encode()) <= 255
    # every file holds its own item (names that sanitize alike are kept apart)
    values = sorted(int(np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(p))[0, 0]) for p in written)
    assert values == list(range(len(HOSTILE_NAMES)))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", categories=None), max_size=300) | st.lists(
    st.sampled_from(["..", ".", "", "/", "\\", "\x00", "CON", "a", "é", "nul.x", ":", " ", "\ud800"]), max_size=30).map("".join))
def test_safe_relpath_is_always_inside(name):
    rel = safe_relpath(name)
    assert rel and not rel.startswith("/") and "\\" not in rel and "\x00" not in rel
    parts = rel.split("/")
    assert all(p and p not in (".", "..") and p == p.strip(" .") for p in parts)
    assert all(len(p.encode("utf-8")) <= MAX_COMPONENT_BYTES for p in parts)
    assert all(p.split(".")[0].strip().lower() not in ("con", "nul", "aux", "prn") for p in parts)
    root = "/tmp/root"
    assert os.path.commonpath([root, os.path.normpath(os.path.join(root, rel))]) == root


def test_shard_index_claiming_a_huge_chunk_is_refused_before_reading(work):
    """Found by the fuzzer (150 examples): an index entry of 16 GB at a valid offset made the
    reader allocate 16 GB for the byte range. A chunk's range is now bounded by its raw size
    before anything is fetched."""
    url = work("lossless")
    m = _root(url)["attributes"]["qpyr"]
    shard = _shards(url)[-1]
    b = next(b for b in m["buckets"] if shard.as_posix().split("/data/c/")[0].endswith(b["path"]))
    n = BucketSpec.from_dict(b).n_inner
    raw = shard.read_bytes()
    idx = np.frombuffer(raw[-index_nbytes(n):-4], "<u8").reshape(n, 2).copy()
    j = int(np.nonzero(idx[:, 0] != 2**64 - 1)[0][0])
    idx[j] = (int(idx[j, 0]), 16_256_153_468)
    shard.write_bytes(raw[:-index_nbytes(n)] + add_crc(idx.astype("<u8").tobytes()))
    _exercise(url)  # within the 64 MiB budget
    s = qpyr.open(str(url))
    errors = []
    for name in s.names:
        try:
            s.read(name)
        except FormatError as e:
            errors.append(str(e))
    assert any("claims 16256153468 bytes" in e for e in errors)
