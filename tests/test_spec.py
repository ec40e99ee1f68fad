"""The specification in ``spec/`` against the code: schemas, example documents, golden stores,
and on-disk facts read straight from the bytes.

- every ``spec/examples/valid/*.json`` validates against the schema its name prefix selects and
  is accepted by qpyr's reader; every ``spec/examples/invalid/*.json`` is listed in
  ``spec/examples/invalid/README.md`` and fails the way that table says;
- manifests and ``qpyr info --json`` output of freshly packed stores validate;
- every golden store in ``spec/vectors/stores`` (1.x) and ``spec/vectors/stores-2.0`` opens and
  decodes to its committed arrays, and independent decoders written from ``spec/format.md``
  (stock zarr-python + numpy) get the same bits;
- int4 nibble order, bfloat16 bits, crc32c, shard index and Zarr documents checked byte by byte.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

import qpyr
from qpyr.codecs import REGISTRY
from qpyr.codecs.encoding import Encoding
from qpyr.errors import FormatError, IncompleteStoreError, QpyrError, UnsupportedVersionError
from qpyr.format import manifest as fmt

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec"
SCHEMAS = SPEC / "schemas"
VALID = SPEC / "examples" / "valid"
INVALID = SPEC / "examples" / "invalid"
GOLDEN = SPEC / "vectors" / "stores"
GOLDEN_NAMES = sorted(p.name for p in GOLDEN.iterdir() if (p / "vector.json").exists()) if GOLDEN.exists() else []
GOLDEN_2 = SPEC / "vectors" / "stores-2.0"
GOLDEN_2_NAMES = sorted(p.name for p in GOLDEN_2.iterdir() if (p / "vector.json").exists()) if GOLDEN_2.exists() else []
ITEMS = ("rgb8", "gray16", "float32")


# ----------------------------------------------------------------------------- helpers
def _load(p: Path) -> Any:
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def _validators() -> dict[str, Draft202012Validator]:
    schemas = {k: _load(SCHEMAS / f"{k}.schema.json") for k in ("manifest", "encoding", "info")}
    registry: Registry = Registry().with_resources(
        [(s["$id"], Resource.from_contents(s)) for s in schemas.values()]
    )
    return {k: Draft202012Validator(s, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)
            for k, s in schemas.items()}


VALIDATORS = _validators()


def _kind(p: Path) -> str:
    kind = p.name.split("-", 1)[0]
    assert kind in VALIDATORS, f"{p.name}: name must start with manifest-, encoding- or info-"
    return kind


def _schema_view(kind: str, doc: Any) -> Any:
    """format.md §2: a 1.x manifest is validated after removing the fields named in ``optional``."""
    if kind == "manifest" and isinstance(doc, dict) and isinstance(doc.get("optional"), list):
        return {k: v for k, v in doc.items() if k not in doc["optional"]}
    return doc


def _schema_errors(kind: str, doc: Any) -> list[str]:
    return [e.message for e in VALIDATORS[kind].iter_errors(_schema_view(kind, doc))]


def _reader_check(kind: str, doc: Any) -> None:
    """What ``qpyr.open`` checks on a manifest (or an encoding) before reading the catalog."""
    if kind == "manifest":
        fmt.validate_manifest(doc, "example")
        try:
            for enc in doc["encodings"].values():
                Encoding.from_dict(enc)
        except QpyrError as e:
            raise FormatError(f"example manifest.encodings: {e}") from e
    elif kind == "encoding":
        Encoding.from_dict(doc)


def _codec_names(kind: str, doc: Any) -> set[str]:
    if kind == "encoding":
        return {doc["codec"]["name"]}
    if kind == "manifest":
        return {e["codec"]["name"] for e in doc["encodings"].values()}
    return set()


def _crc32c_reference(data: bytes) -> int:
    """Bitwise CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): independent of qpyr's."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _bf16_reference(x: float) -> int:
    """Upper 16 bits of the float32 pattern, round to nearest, ties to even (plain integers)."""
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    hi, lo = u >> 16, u & 0xFFFF
    if lo > 0x8000 or (lo == 0x8000 and hi & 1):
        hi += 1
    return hi


def _shard_chunk(shard: bytes, n_inner: int, inner: int) -> bytes:
    """Inner chunk ``inner`` of a shard (format.md §8.5), crc checked, crc stripped."""
    tail = shard[-(16 * n_inner + 4):]
    body, crc = tail[:-4], int.from_bytes(tail[-4:], "little")
    assert _crc32c_reference(body) == crc, "shard index crc32c"
    index = np.frombuffer(body, "<u8").reshape(n_inner, 2)
    off, nb = (int(v) for v in index[inner])
    assert off != 2**64 - 1, "chunk missing"
    chunk = shard[off:off + nb]
    assert _crc32c_reference(chunk[:-4]) == int.from_bytes(chunk[-4:], "little"), "chunk crc32c"
    return chunk[:-4]


# ----------------------------------------------------------------------------- schemas
def _open_objects(node: Any, where: str) -> list[str]:
    """JSON pointers of fixed-field object schemas that are not closed."""
    out = []
    if isinstance(node, dict):
        if "properties" in node and node.get("type") == "object" and node.get("additionalProperties") is not False:
            out.append(where)
        for k, v in node.items():
            out += _open_objects(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _open_objects(v, f"{where}/{i}")
    return out


def test_schemas_are_valid_draft_2020_12_and_closed() -> None:
    for p in sorted(SCHEMAS.glob("*.schema.json")):
        schema = _load(p)
        assert schema["$schema"] == Draft202012Validator.META_SCHEMA["$id"]  # the 2020-12 dialect
        Draft202012Validator.check_schema(schema)
        assert _open_objects(schema, "") == [], f"{p.name}: objects without additionalProperties: false"


def test_schemas_agree_with_the_code() -> None:
    m = _load(SCHEMAS / "manifest.schema.json")
    assert set(m["properties"]) == fmt._MANIFEST_FIELDS
    bucket = m["$defs"]["bucket"]
    assert set(bucket["properties"]) == fmt._BUCKET_FIELDS | {"path"}
    assert set(m["$defs"]["record_class"]["properties"]) == fmt._RECORD_CLASS_FIELDS
    assert m["$defs"]["catalog"]["properties"]["dtypes"]["const"] == fmt.DTYPE_CODES
    assert set(m["$defs"]["stored_dtype"]["enum"]) == fmt.STORED_DTYPES
    assert m["$defs"]["level_summary"]["properties"]["decisions"]["propertyNames"]["enum"] == fmt.DECISIONS
    assert fmt.LEVEL_COLUMNS == ["bucket", "slot", "height", "width", "stored_bytes", "decision"]
    assert fmt.LEVEL_COLUMNS_2 == ["bucket", "task", "height", "width", "stored_bytes", "decision", "offset"]
    assert fmt.SHARD_COLUMNS == ["task", "shard", "used_bytes", "object_bytes"]
    rec = m["$defs"]["records"]["properties"]
    assert (rec["shard_bytes"]["minimum"], rec["shard_bytes"]["maximum"]) == fmt.SHARD_BYTES_RANGE
    props = m["properties"]
    assert props["items"]["maximum"] == fmt.LIMITS["max_items"]
    assert props["levels"]["maximum"] == fmt.LIMITS["max_levels"]
    assert props["buckets"]["maxItems"] == fmt.LIMITS["max_buckets"]
    assert bucket["properties"]["height"]["maximum"] == fmt.LIMITS["max_side"]
    assert bucket["properties"]["channels"]["maximum"] == fmt.LIMITS["max_channels"]
    assert m["$defs"]["catalog"]["properties"]["name_bytes"]["maximum"] == fmt.LIMITS["max_catalog_bytes"]
    text = (SPEC / "format.md").read_text(encoding="utf-8")
    for key in fmt.LIMITS:
        assert f"`{key}`" in text, f"format.md does not document LIMITS[{key!r}]"
    assert f"**Version:** {fmt.FORMAT_VERSION}" in text


# ----------------------------------------------------------------------------- examples
@pytest.mark.parametrize("path", sorted(VALID.glob("*.json")), ids=lambda p: p.name)
def test_valid_example(path: Path) -> None:
    kind = _kind(path)
    doc = _load(path)
    assert _schema_errors(kind, doc) == []
    missing = _codec_names(kind, doc) - set(REGISTRY)
    if missing:
        pytest.skip(f"codec(s) {sorted(missing)} not available in this build")
    _reader_check(kind, doc)


_ROW = re.compile(r"^\| `(?P<file>[^`]+\.json)` \| (?P<breaks>.+) \| (?P<schema>✗|—) \| (?P<reader>\S+) \|$")


def _invalid_table() -> dict[str, dict[str, str]]:
    rows = {}
    for line in (INVALID / "README.md").read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line.strip())
        if m:
            rows[m["file"]] = m.groupdict()
    return rows


INVALID_ROWS = _invalid_table()


def test_every_invalid_example_is_documented() -> None:
    files = {p.name for p in INVALID.glob("*.json")}
    assert files == set(INVALID_ROWS), f"undocumented: {sorted(files - set(INVALID_ROWS))}, missing files: {sorted(set(INVALID_ROWS) - files)}"


def _invalid_params() -> list[Any]:
    out = []
    for name, row in sorted(INVALID_ROWS.items()):
        marks = []
        if row["reader"] == "bug":
            marks.append(pytest.mark.xfail(reason=f"known reader defect: {row['breaks']}", strict=False))
        out.append(pytest.param(name, row, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name,row", _invalid_params())
def test_invalid_example(name: str, row: dict[str, str]) -> None:
    path = INVALID / name
    kind = _kind(path)
    doc = _load(path)
    errors = _schema_errors(kind, doc)
    if row["schema"] == "✗":
        assert errors, f"{name}: the schema accepts it, but it breaks: {row['breaks']}"
    else:
        assert not errors, f"{name}: marked beyond JSON Schema, but the schema rejects it: {errors}"
    reader = row["reader"]
    if reader == "n/a":
        return
    if reader == "—":
        _reader_check(kind, doc)  # accepted by design
        return
    expected = FormatError if kind == "manifest" else QpyrError
    if reader == "FormatError":
        expected = FormatError
    with pytest.raises(expected):
        _reader_check(kind, doc)


def test_unknown_major_is_refused_and_newer_minor_accepted(tmp_path: Path) -> None:
    src = GOLDEN / "int4" / "store.qpyr"
    for version, extra, ok in (("3.0", {}, False), ("1.7", {"thumbnails": [1, 2], "optional": ["thumbnails"]}, True)):
        dst = tmp_path / version
        shutil.copytree(src, dst)
        doc = _load(dst / "zarr.json")
        doc["attributes"]["qpyr"].update(format_version=version, **extra)
        (dst / "zarr.json").write_text(json.dumps(doc), encoding="utf-8")
        if ok:
            assert len(qpyr.open(str(dst))) == 3
        else:
            with pytest.raises(UnsupportedVersionError, match="3.0"):
                qpyr.open(str(dst))


def test_incomplete_store_is_not_opened(tmp_path: Path) -> None:
    dst = tmp_path / "s"
    shutil.copytree(GOLDEN / "int8" / "store.qpyr", dst)
    (dst / "zarr.json").unlink()
    with pytest.raises(FormatError, match="not a qpyr store"):
        qpyr.open(str(dst))
    (dst / ".qpyr").mkdir()
    (dst / ".qpyr" / "pack.json").write_text('{"fingerprint": "x", "first_task": 0, "format_version": "1.0"}')
    with pytest.raises(IncompleteStoreError):
        qpyr.open(str(dst))


# ----------------------------------------------------------------------------- fresh stores
@pytest.fixture(scope="module", params=["1", "2.0"])
def fresh_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    rng = np.random.default_rng(5)
    inputs = {
        "photo": rng.integers(0, 256, (40, 70, 3), dtype=np.uint8),
        "sub/grey16.png": rng.integers(0, 65536, (33, 20), dtype=np.uint16),
        "field": rng.normal(0, 3, (18, 18, 2)).astype(np.float32),
    }
    path = tmp_path_factory.mktemp("fresh") / "s.qpyr"
    return qpyr.pack(inputs, str(path), policy="int4:granularity=block,block=8,scheme=symmetric", levels=3,
                     slots_per_task=2, format=request.param, shard_bytes=2**16)


def test_fresh_manifest_validates(fresh_store: Any) -> None:
    m = fresh_store.manifest
    assert _schema_errors("manifest", m) == []
    required = set(_load(SCHEMAS / "manifest.schema.json")["required"])
    v2 = m["format_version"].startswith("2.")
    assert set(m) == required | ({"records"} if v2 else set()), "the schema's required fields are what commit() writes"
    assert not os.path.exists(os.path.join(fresh_store.url, ".qpyr")), "the journal is removed at commit"
    sizes = {str(p.relative_to(fresh_store.url)): p.stat().st_size for p in Path(fresh_store.url).rglob("*") if p.is_file()}
    assert sum(sizes.values()) == m["total_bytes"]
    for bi, b in enumerate(m["buckets"]):
        if v2:  # a record class: the bytes of its records
            lv = fresh_store.catalog.levels[b["level"]]
            assert b["stored_bytes"] == int(lv[lv[:, 0] == bi, 4].sum())
        else:
            assert b["stored_bytes"] == sum(v for k, v in sizes.items() if k.startswith(b["path"] + "/"))
    assert [b["path"] for b in m["buckets"]] == sorted(b["path"] for b in m["buckets"])


def test_info_json_validates(fresh_store: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from qpyr.cli import main
    from qpyr.ops.info import info_dict

    for items in (True, False, None):
        assert _schema_errors("info", info_dict(fresh_store, items=items)) == []
    assert main(["info", "--json", fresh_store.url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert _schema_errors("info", out) == []
    assert out["qpyr_info"] == "1.0" and len(out["items_detail"]) == 3


def test_zarr_documents_follow_the_spec(fresh_store: Any) -> None:
    from qpyr.format.layout import BucketSpec

    root = Path(fresh_store.url)
    m = fresh_store.manifest
    if m["format_version"].startswith("2."):
        _records_documents_follow_the_spec(fresh_store)
        return
    for b in m["buckets"]:
        spec = BucketSpec.from_dict(b)
        doc = _load(root / b["path"] / "data" / "zarr.json")
        th, tw = spec.chunk_hw
        sh, sw = spec.shard_hw
        w_st = (b["width"] + 1) // 2 if b["packed"] else b["width"]
        assert doc["shape"] == [b["slots"], b["channels"], b["height"], w_st]
        assert doc["data_type"] == b["dtype"] and doc["fill_value"] == 0
        assert doc["chunk_grid"]["configuration"]["chunk_shape"] == [spec.items_per_shard, b["channels"], sh, (sw + 1) // 2 if b["packed"] else sw]
        assert doc["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
        (shard,) = doc["codecs"]
        assert shard["name"] == "sharding_indexed"
        conf = shard["configuration"]
        assert conf["chunk_shape"] == [1, b["channels"], th, (tw + 1) // 2 if b["packed"] else tw]
        names = [c["name"] for c in conf["codecs"]]
        assert names[0] == "bytes" and names[1] in ("zstd", "blosc") and names[2:] == ["crc32c"]
        assert conf["index_codecs"] == [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
        assert conf["index_location"] == "end"
        assert doc["attributes"]["qpyr"] == {"role": "data", "encoding": b["encoding"], "packed_int4": b["packed"]}
        assert _load(root / f"levels/{b['level']}/{b['encoding']}/zarr.json")["attributes"]["qpyr"]["encoding"] == m["encodings"][b["encoding"]]
        q = _load(root / b["path"] / "qparams" / "zarr.json")
        assert q["shape"] == [b["slots"], *b["params_shape"]] and q["data_type"] == "float32"
        assert q["chunk_grid"]["configuration"]["chunk_shape"] == [spec.items_per_shard, *b["params_shape"]]
        assert q["dimension_names"] == ["slot", "param", "channel", "by", "bx"]


def _records_documents_follow_the_spec(store: Any) -> None:
    """Format 2.0 (format.md §4.2, §8): one group and one record array per level, no bucket
    objects, and every shard object a zstd frame of stored blocks of exactly ``shard_bytes``."""
    root = Path(store.url)
    m = store.manifest
    S, M = m["records"]["shard_bytes"], m["records"]["task_shards"]
    keys = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert [k for k in keys if k.startswith("levels/")
            and not re.fullmatch(r"levels/(zarr\.json|[0-9]+/zarr\.json|[0-9]+/c/[0-9]+/[0-9]+)", k)] == []
    for li in range(m["levels"]):
        doc = _load(root / f"levels/{li}/zarr.json")
        assert doc == {"zarr_format": 3, "node_type": "array", "shape": [m["tasks"], M * S], "data_type": "uint8",
                       "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, S]}},
                       "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                       "fill_value": 0, "codecs": [{"name": "bytes"}, {"name": "zstd", "configuration": {"level": 0, "checksum": False}}],
                       "attributes": {"qpyr": {"role": "records"}}, "dimension_names": ["task", "byte"]}
        shards = store.catalog.shards[li]
        assert len(shards) == m["records"]["shards"][li]
        assert [k for k in keys if k.startswith(f"levels/{li}/c/")] == sorted(
            f"levels/{li}/c/{t}/{j}" for t, j, _, _ in shards.tolist())
        for t, j, used, nbytes in shards.tolist():
            obj = (root / f"levels/{li}/c/{t}/{j}").read_bytes()
            assert len(obj) == nbytes
            params = zstandard.get_frame_parameters(obj)
            assert params.content_size == S and not params.has_checksum
            full = zstandard.ZstdDecompressor().decompress(obj)
            assert len(full) == S and not any(full[used:])  # records, then zeros
    assert _load(root / "levels/zarr.json") == {"zarr_format": 3, "node_type": "group"}


# ----------------------------------------------------------------------------- golden stores
def test_golden_stores_exist_and_are_small() -> None:
    assert GOLDEN_NAMES == sorted(["lossless", "lossless-zstd", "fp32", "fp16", "bf16", "int8", "int8-channel",
                                   "int8-block", "int4", "int4-sym-channel", "mixed", "dct-420", "dct-444"])
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    assert total < 1_000_000


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_store_reads_back_exactly(name: str) -> None:
    store = qpyr.open(str(GOLDEN / name / "store.qpyr"))
    assert store.names == list(ITEMS)
    assert _schema_errors("manifest", store.manifest) == []
    expected = {p.stem: p for p in (GOLDEN / name / "expected").glob("*.npy")}
    seen = set()
    for item in ITEMS:
        for level, t in store.read(item).items():
            key = f"{item}_l{level}"
            exp = np.load(expected[key], allow_pickle=False)
            got = t.numpy()
            assert got.dtype == exp.dtype == np.float32 and got.shape == exp.shape, key
            assert np.array_equal(got, exp), f"{name}: {key} decodes differently from the committed vector"
            seen.add(key)
    assert seen == set(expected)


def _spec_catalog(g: Any) -> tuple[Any, list[str], np.ndarray]:
    """(manifest, item names, sources) read with stock zarr-python (format.md §7)."""
    m: Any = g.attrs["qpyr"]
    blob = bytes(g["catalog/names"][...])
    offs = g["catalog/name_offsets"][...]
    names = [blob[int(offs[i]):int(offs[i + 1])].decode() for i in range(m["items"])]
    return m, names, g["catalog/sources"][...]


def _spec_values(s: np.ndarray, b: dict[str, Any], q: dict[str, Any], src: str, h: int, w: int,
                 params: Any) -> np.ndarray:
    """Stored samples ``s`` ``[C, h, w_stored]`` of a level to its float32 values (format.md §9);
    ``params()`` gives the item's quantization parameters (integer encodings)."""
    if b["packed"]:  # §9.7: element 2j low nibble, 2j+1 high nibble
        nib = np.stack([s & 0xF, s >> 4], axis=-1).reshape(s.shape[0], h, -1)[..., :w].astype(np.int16)
        s = ((nib ^ 8) - 8) if q["dtype"] == "int4" else nib
    dt = q["dtype"]
    if dt == "source":  # §9.2
        if src == "uint8":
            return (s.astype(np.float64) / 255).astype(np.float32)
        if src == "uint16":
            return (s.astype(np.float64) / 65535).astype(np.float32)
        return s.astype(np.float32)
    if dt == "bfloat16":  # §9.4
        return (s.astype(np.uint32) << 16).view(np.float32)
    if dt in ("float32", "float16"):
        return s.astype(np.float32)
    p = params()  # §9.5, §9.6
    if q.get("granularity", "level") == "block":
        bs = q.get("block", 8)
        p = np.repeat(np.repeat(p, bs, axis=2), bs, axis=3)[:, :, :h, :w]
    elif q.get("granularity", "level") == "channel":
        p = p[:, :, None, None]
    else:
        p = p.reshape(2, 1, 1, 1)
    return ((s.astype(np.float32) - p[1]) * p[0]).astype(np.float32, copy=False)


def _spec_decoder(store_path: Path) -> dict[str, np.ndarray]:
    """Decode every level of every item with stock zarr-python and numpy, following format.md
    §7 (catalog), §8 (buckets), §9 (quantizers) — no qpyr code involved."""
    import zarr

    g: Any = zarr.open_group(str(store_path), mode="r")
    m, names, sources = _spec_catalog(g)
    out = {}
    for level in range(m["levels"]):
        tab = g[f"catalog/level_{level}"][...]
        for i, name in enumerate(names):
            bi, slot, h, w = (int(v) for v in tab[i, :4])
            if bi < 0:
                continue
            b = m["buckets"][bi]
            q = m["encodings"][b["encoding"]]["quantizer"]
            w_st = (w + 1) // 2 if b["packed"] else w
            s = np.asarray(g[b["path"] + "/data"][slot, :, :h, :w_st])
            out[f"{name}_l{level}"] = _spec_values(s, b, q, m["catalog"]["dtypes"][int(sources[i, 0])], h, w,
                                                   lambda b=b, slot=slot: np.asarray(g[b["path"] + "/qparams"][slot]))
    return out


def _spec_decoder_2(store_path: Path) -> dict[str, np.ndarray]:
    """Format 2.0 with stock zarr-python, numcodecs and numpy (format.md §7, §8.6, §9): a record
    is ``task, offset, bytes`` of the level's record array; one tile, so record = [params] [hcrc]
    chunk crc; the chunk is the bucket codec's (zstd or blosc) bytes of the padded tile."""
    import google_crc32c
    import zarr
    from numcodecs import Blosc, Zstd

    g: Any = zarr.open_group(str(store_path), mode="r")
    m, names, sources = _spec_catalog(g)
    out = {}
    for level in range(m["levels"]):
        tab = g[f"catalog/level_{level}"][...]
        heap = g[f"levels/{level}"]
        for i, name in enumerate(names):
            bi, task, h, w, n, _dec, off = (int(v) for v in tab[i])
            if bi < 0:
                continue
            b = m["buckets"][bi]
            enc = m["encodings"][b["encoding"]]
            q = enc["quantizer"]
            rec = bytes(heap[task, off:off + n])
            # §8.1: the record's geometry is the size class of its own sides; §9.6 its parameters
            H, W = (max(16, 2 ** (x.bit_length() - 1) // 4) * -(-x // max(16, 2 ** (x.bit_length() - 1) // 4)) for x in (h, w))
            np_ = 0
            if q["dtype"] in ("uint8", "int8", "uint4", "int4"):
                g_ = q.get("granularity", "level")
                shape = [2, 1] if g_ == "level" else [2, b["channels"]] if g_ == "channel" else \
                    [2, b["channels"], -(-h // q.get("block", 8)), -(-w // q.get("block", 8))]
                np_ = 4 * int(np.prod(shape))
                head = rec[:np_]
                assert int.from_bytes(rec[np_:np_ + 4], "little") == google_crc32c.value(head)
                params = np.frombuffer(head, "<f4").reshape(shape)
                np_ += 4
            chunk = rec[np_:]
            assert int.from_bytes(chunk[-4:], "little") == google_crc32c.value(chunk[:-4])
            codec = Zstd() if enc["codec"]["name"] == "zstd" else Blosc()
            dt = np.dtype(b["dtype"]).newbyteorder("<")
            w_st = (W + 1) // 2 if b["packed"] else W
            tile = np.frombuffer(bytes(codec.decode(chunk[:-4])), dt).reshape(b["channels"], H, w_st)
            s = tile[:, :h, :((w + 1) // 2 if b["packed"] else w)]
            out[f"{name}_l{level}"] = _spec_values(s, b, q, m["catalog"]["dtypes"][int(sources[i, 0])], h, w,
                                                   lambda params=params if np_ else None: params)
    return out


@pytest.mark.parametrize("name", GOLDEN_2_NAMES)
def test_golden_2_store_reads_back_exactly_and_equals_the_1x_store(name: str) -> None:
    store = qpyr.open(str(GOLDEN_2 / name / "store.qpyr"))
    assert store.manifest["format_version"] == "2.0" and store.names == list(ITEMS)
    assert _schema_errors("manifest", store.manifest) == []
    for item in ITEMS:
        for level, t in store.read(item).items():
            for root in (GOLDEN_2, GOLDEN):  # the 2.0 vectors are the 1.x ones
                exp = np.load(root / name / "expected" / f"{item}_l{level}.npy", allow_pickle=False)
                assert np.array_equal(t.numpy(), exp), f"{name}: {item} level {level} ({root.name})"


@pytest.mark.parametrize("root,name", [(GOLDEN, n) for n in GOLDEN_NAMES] + [(GOLDEN_2, n) for n in GOLDEN_2_NAMES],
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_golden_stores_of_both_majors_verify(root: Path, name: str) -> None:
    """Every committed 1.x and 2.0 golden store passes ``verify`` with every level decoded."""
    from qpyr.ops.verify import verify

    rep = verify(qpyr.open(str(root / name / "store.qpyr")), decode=True)
    assert rep.ok, rep.problems
    assert rep.shards > 0 and rep.chunks >= 6


def _standard_codecs_only(name: str) -> bool:
    """Whether a golden store's encodings all use zstd/blosc (records of the namespaced codecs
    decode by spec/codecs/*.md, which the codec-vector tests cover)."""
    encs = _load(GOLDEN_2 / name / "vector.json")["encodings"].values()
    return all(e["codec"]["name"] in ("zstd", "blosc") for e in encs)


@pytest.mark.parametrize("root,name", [(GOLDEN, n) for n in GOLDEN_NAMES]
                         + [(GOLDEN_2, n) for n in GOLDEN_2_NAMES if _standard_codecs_only(n)],
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_golden_store_decodes_by_the_spec(root: Path, name: str) -> None:
    """1.x stores by the bucket decoder, 2.0 ones by the record decoder (format.md §8, §8.6)."""
    decoded = (_spec_decoder if root == GOLDEN else _spec_decoder_2)(root / name / "store.qpyr")
    expected = {p.stem: np.load(p, allow_pickle=False) for p in (root / name / "expected").glob("*.npy")}
    assert set(decoded) == set(expected)
    for key, exp in expected.items():
        assert np.array_equal(decoded[key], exp), f"{name}: {key}: format.md decoding differs from the vector"


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_fresh_pack_reproduces_golden_values(name: str, tmp_path: Path) -> None:
    """The encoder still produces the committed values (quantizer maths unchanged)."""
    vec = _load(GOLDEN / name / "vector.json")
    inputs = {n: np.load(GOLDEN / "inputs" / f"{n}.npy", allow_pickle=False) for n in vec["items"]}
    store = qpyr.pack(inputs, str(tmp_path / "s.qpyr"), policy=vec["policy"], levels=vec["levels"],
                      slots_per_task=vec["slots_per_task"])
    assert set(store.manifest["encodings"]) == set(vec["encodings"])
    for item in vec["items"]:
        for level, t in store.read(item).items():
            exp = np.load(GOLDEN / name / "expected" / f"{item}_l{level}.npy")
            assert np.array_equal(t.numpy(), exp), f"{name}: a fresh pack of {item} level {level} differs"


# ----------------------------------------------------------------------------- bytes on disk
def test_crc32c_reference_vector() -> None:
    assert _crc32c_reference(b"123456789") == 0xE3069283


def test_int4_nibble_order_from_raw_bytes(tmp_path: Path) -> None:
    # uint4 affine over [0, 1]: scale 1/15, zero point 0, so a uint8 value 17 n is code n.
    codes = np.array([[1, 2, 15, 0, 7, 8, 3], [4, 5, 6, 9, 10, 11, 12]], np.uint8)
    codes[0, 3], codes[1, 6] = 0, 15  # full range present: lo = 0, hi = 1
    store = qpyr.pack({"a": (codes * 17).astype(np.uint8)}, str(tmp_path / "u.qpyr"), policy="int4", levels=1, format="1")  # reads bucket chunk objects
    b = store.manifest["buckets"][0]
    assert b["packed"] and b["dtype"] == "uint8" and (b["height"], b["width"]) == (16, 16)
    shard = (tmp_path / "u.qpyr" / b["path"] / "data" / "c/0/0/0/0").read_bytes()
    from qpyr.format.layout import BucketSpec

    spec = BucketSpec.from_dict(b)
    raw = zstandard.ZstdDecompressor().decompress(_shard_chunk(shard, spec.n_inner, 0))
    chunk = np.frombuffer(raw, np.uint8).reshape(1, 16, 8)
    # edge replication to the 16 x 16 tile, then element 2j -> low nibble, 2j+1 -> high nibble
    padded = np.pad(codes, ((0, 14), (0, 9)), mode="edge")
    want = padded[:, 0::2] | (padded[:, 1::2] << 4)
    assert np.array_equal(chunk[0], want)
    assert chunk[0, 0, 0] == 0x21 and chunk[0, 0, 1] == 0x0F  # codes 1, 2 | 15, 0
    qp = zstandard.ZstdDecompressor().decompress(
        _shard_chunk_plain(tmp_path / "u.qpyr" / b["path"] / "qparams" / "c/0/0/0"))
    scale, zero = np.frombuffer(qp, "<f4")[:2]
    assert scale == np.float32(1 / 15) and zero == 0


def _shard_chunk_plain(p: Path) -> bytes:
    data = p.read_bytes()
    assert _crc32c_reference(data[:-4]) == int.from_bytes(data[-4:], "little")
    return data[:-4]


def test_signed_int4_is_twos_complement(tmp_path: Path) -> None:
    # int4 symmetric over [-7, 7] (float source units): scale 1, zero point 0, code = value.
    vals = np.array([[-7, -1, 0, 1, 7, -8 + 1, 3, -3]], np.float32)
    store = qpyr.pack({"s": vals}, str(tmp_path / "s.qpyr"), policy="int4:scheme=symmetric", levels=1, format="1")  # reads bucket chunk objects
    b = store.manifest["buckets"][0]
    from qpyr.format.layout import BucketSpec

    spec = BucketSpec.from_dict(b)
    shard = (tmp_path / "s.qpyr" / b["path"] / "data" / "c/0/0/0/0").read_bytes()
    raw = zstandard.ZstdDecompressor().decompress(_shard_chunk(shard, spec.n_inner, 0))
    row = np.frombuffer(raw, np.uint8).reshape(16, 8)[0]
    assert list(row[:4]) == [0xF9, 0x10, 0x97, 0xD3]  # (-7,-1) (0,1) (7,-7) (3,-3)
    assert np.array_equal(store.read("s")[0].numpy()[0, 0], vals[0])


def test_bfloat16_bits_from_raw_bytes(tmp_path: Path) -> None:
    from numcodecs import blosc

    patterns = [
        [0x3F808000, 0x3F818000, 0x3F808001, 0x3F80FFFF, 0xBF7FFFFF, 0x3DCCCCCD, 0x7F7FFFFF, 0x00000001],
        [0xBF808000, 0xBF818000, 0x3F7F8000, 0x00008000, 0x00018000, 0x477FE000, 0xC2C80000, 0x3EAAAAAB],
    ]  # ties to even (down and up), just above a tie, carries into the exponent, overflow to inf, subnormals
    vals = np.array(patterns, np.uint32).view(np.float32)
    store = qpyr.pack({"f": vals}, str(tmp_path / "b.qpyr"), policy="bf16", levels=1, format="1")  # reads bucket chunk objects
    b = store.manifest["buckets"][0]
    assert b["dtype"] == "uint16" and not b["packed"]
    from qpyr.format.layout import BucketSpec

    spec = BucketSpec.from_dict(b)
    shard = (tmp_path / "b.qpyr" / b["path"] / "data" / "c/0/0/0/0").read_bytes()
    raw = bytes(blosc.decompress(_shard_chunk(shard, spec.n_inner, 0)))
    got = np.frombuffer(raw, "<u2").reshape(16, 16)[:2, :8]
    want = np.array([[_bf16_reference(float(v)) for v in row] for row in vals], np.uint16)
    assert np.array_equal(got, want)
    assert want[0, 0] == 0x3F80 and want[0, 1] == 0x3F82 and want[0, 5] == 0x3DCD and want[0, 6] == 0x7F80
    back = store.read("f")[0].numpy()[0]
    assert np.array_equal(back.view(np.uint32), want.astype(np.uint32) << 16)


def test_golden_chunk_bytes(tmp_path: Path) -> None:
    """Shard index layout and checksums of a committed shard, read by hand (format.md §8.5)."""
    m = _load(GOLDEN / "mixed" / "store.qpyr" / "zarr.json")["attributes"]["qpyr"]
    b = next(b for b in m["buckets"] if b["packed"])
    shard = (GOLDEN / "mixed" / "store.qpyr" / b["path"] / "data" / "c/0/0/0/0").read_bytes()
    n = 2  # k = 2 items per shard, one tile per item
    index = np.frombuffer(shard[-(16 * n + 4):-4], "<u8").reshape(n, 2)
    assert index[0, 0] == 0 and index[0, 1] == len(shard) - (16 * n + 4)
    assert (index[1] == 2**64 - 1).all()  # slot 1 of shard row 0 is not owned by any item
    chunk = _shard_chunk(shard, n, 0)
    raw = zstandard.ZstdDecompressor().decompress(chunk)
    assert len(raw) == 1 * 16 * 8
    assert zstandard.get_frame_parameters(chunk).content_size == 128
    import google_crc32c

    body = shard[:int(index[0, 1])]
    assert int.from_bytes(body[-4:], "little") == google_crc32c.value(body[:-4]) == _crc32c_reference(body[:-4])


def test_golden_catalog_by_hand() -> None:
    """catalog/ tables read with stock zarr-python match format.md §7."""
    import zarr

    g: Any = zarr.open_group(str(GOLDEN / "mixed" / "store.qpyr"), mode="r")
    assert bytes(g["catalog/names"][...]) == b"rgb8gray16float32"
    assert g["catalog/name_offsets"][...].tolist() == [0, 4, 10, 17]
    assert g["catalog/sources"][...].tolist() == [[0, 3, 8, 10, 2], [1, 1, 5, 7, 2], [2, 1, 6, 6, 2]]
    lv0 = g["catalog/level_0"][...]
    assert lv0.shape == (3, 6) and lv0[:, :4].tolist() == [[0, 0, 8, 10], [1, 0, 5, 7], [1, 2, 6, 6]]
    assert (lv0[:, 5] == 0).all()  # decision 'planned'
    q = g["catalog/quality_0"][...]
    assert q.dtype == np.float32 and q.shape == (3, 2) and np.isfinite(q).all()
    lossless: Any = zarr.open_group(str(GOLDEN / "lossless" / "store.qpyr"), mode="r")
    ql = lossless["catalog/quality_1"][...]
    assert np.isposinf(ql[:, 0]).all() and (ql[:, 1] == 1).all()  # exact: PSNR +inf, SSIM 1
