"""Zarr v3 documents and plain-array chunks, as the store holds them (spec/format.md).

The ``zarr.json`` of groups, of bucket data arrays (sharded, crc32c per chunk) and of small
plain arrays (catalog columns, qparams; bytes + zstd + crc32c), and the chunk bytes of those
plain arrays: the document and the bytes it describes are one definition. :func:`bucket_docs`
gives every array document of one bucket, as the commit writes them and verify expects them.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from qpyr.codecs.encoding import Encoding
from qpyr.errors import FormatError
from qpyr.format.layout import BucketSpec
from qpyr.format.shard import add_crc, strip_crc

__all__ = [
    "group_doc",
    "bucket_data_doc",
    "plain_array_doc",
    "records_doc",
    "bucket_docs",
    "encode_plain_chunk",
    "encode_plain_chunks",
    "decode_plain_chunk",
    "decode_plain_array",
]


def _dumps(d: dict[str, Any]) -> bytes:
    """Compact JSON (no indentation or spaces): a store holds several documents per bucket, and
    a small corpus spread over size classes has many buckets, so whitespace would be a sizeable
    share of a small store's bytes. Readers parse any JSON."""
    return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()


def group_doc(attributes: dict[str, Any] | None = None) -> bytes:
    d: dict[str, Any] = {"zarr_format": 3, "node_type": "group"}
    if attributes:
        d["attributes"] = attributes
    return _dumps(d)


def _named(name: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "configuration": conf} if conf else {"name": name}


def bucket_data_doc(b: BucketSpec, slots: int, dtype: np.dtype[Any], chain: list[dict[str, Any]], attrs: dict[str, Any]) -> bytes:
    """``zarr.json`` of a bucket's data array: ``[slots, C, H, W']`` sharded, crc32c per chunk."""
    th, _ = b.chunk_hw
    sh, sw_px = b.shard_hw
    sw = (sw_px + 1) // 2 if b.packed else sw_px
    k = b.items_per_shard
    d = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [slots, b.channels, b.height, b.stored_width],
        "data_type": np.dtype(dtype).name,
        "chunk_grid": _named("regular", {"chunk_shape": [k, b.channels, sh, sw]}),
        "chunk_key_encoding": _named("default", {"separator": "/"}),
        "fill_value": 0,
        "codecs": [
            _named("sharding_indexed", {
                "chunk_shape": [1, b.channels, th, b.stored_chunk_w],
                "codecs": chain + [{"name": "crc32c"}],
                "index_codecs": [_named("bytes", {"endian": "little"}), {"name": "crc32c"}],
                "index_location": "end",
            })
        ],
        "attributes": attrs,
        "dimension_names": ["slot", "channel", "y", "x"],
    }
    return _dumps(d)


def records_doc(tasks: int, shard_bytes: int, task_shards: int) -> bytes:
    """``zarr.json`` of a level's record heap (format 2.0): ``uint8 [tasks, task_shards *
    shard_bytes]``, one chunk (shard) per ``shard_bytes`` of a row, each a zstd frame of stored
    blocks (:mod:`qpyr.format.heap`), so stock Zarr readers decode it."""
    d = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [tasks, task_shards * shard_bytes],
        "data_type": "uint8",
        "chunk_grid": _named("regular", {"chunk_shape": [1, shard_bytes]}),
        "chunk_key_encoding": _named("default", {"separator": "/"}),
        "fill_value": 0,
        "codecs": [{"name": "bytes"}, _named("zstd", {"level": 0, "checksum": False})],
        "attributes": {"qpyr": {"role": "records"}},
        "dimension_names": ["task", "byte"],
    }
    return _dumps(d)


def plain_array_doc(shape: list[int], chunks: list[int], dtype: np.dtype[Any], dims: list[str], attrs: dict[str, Any] | None = None) -> bytes:
    """``zarr.json`` of a small unsharded array (catalog columns, qparams) with zstd + crc32c."""
    dt = np.dtype(dtype)
    bytes_codec = _named("bytes", {"endian": "little"}) if dt.itemsize > 1 else {"name": "bytes"}
    d: dict[str, Any] = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": dt.name,
        "chunk_grid": _named("regular", {"chunk_shape": chunks}),
        "chunk_key_encoding": _named("default", {"separator": "/"}),
        "fill_value": 0,
        "codecs": [bytes_codec, _named("zstd", {"level": 3, "checksum": False}), {"name": "crc32c"}],
        "dimension_names": dims,
    }
    if attrs:
        d["attributes"] = attrs
    return _dumps(d)


def encode_plain_chunk(a: np.ndarray) -> bytes:
    import zstandard

    le = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
    return add_crc(zstandard.ZstdCompressor(level=3).compress(np.ascontiguousarray(a, dtype=le).tobytes()))


def encode_plain_chunks(a: np.ndarray, chunk_rows: int) -> dict[str, bytes]:
    """Chunk objects (key relative to the array) of an array chunked only along axis 0."""
    out: dict[str, bytes] = {}
    rest = "/0" * (a.ndim - 1)
    for i in range(0, max(a.shape[0], 1), chunk_rows):
        block = a[i:i + chunk_rows]
        if block.shape[0] < chunk_rows:  # Zarr chunks are full-size: pad the last one
            pad = np.zeros((chunk_rows - block.shape[0],) + a.shape[1:], a.dtype)
            block = np.concatenate([block, pad])
        out[f"c/{i // chunk_rows}{rest}"] = encode_plain_chunk(block)
    return out


def decode_plain_chunk(data: bytes, shape: tuple[int, ...], dtype: np.dtype[Any], where: str,
                       rows: int | None = None) -> np.ndarray:
    """Decode one plain chunk of ``shape``; with ``rows``, only its first ``rows`` rows.

    Exists because a chunk is always full-size (``chunk_rows`` rows, however few are used) and
    ``chunk_rows`` comes from an untrusted manifest: decompressing only the rows that are used
    keeps the allocation proportional to the store's real item count, whatever a zstd frame of
    zeros claims to expand to.
    """
    import zstandard

    body = strip_crc(data, where)
    dt = np.dtype(dtype)
    full = int(np.prod(shape)) * dt.itemsize
    rows = shape[0] if rows is None else min(int(rows), shape[0])
    n = rows * (full // shape[0] if shape[0] else 0)
    try:
        with zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=False) as r:
            raw = r.read(n) if n else b""
            while len(raw) < n:  # stream_reader may return short reads
                more = r.read(n - len(raw))
                if not more:
                    break
                raw += more
            if rows == shape[0] and r.read(1):
                raise FormatError(f"{where}: chunk holds more than the expected {full} bytes.")
    except zstandard.ZstdError as e:
        raise FormatError(f"{where}: corrupt chunk ({e}).") from e
    if len(raw) != n:
        raise FormatError(f"{where}: chunk holds fewer bytes than the expected {full}.")
    le = dt.newbyteorder("<") if dt.itemsize > 1 else dt
    return np.frombuffer(raw, dtype=le).reshape((rows,) + tuple(shape[1:]))


def decode_plain_array(chunks: list[bytes], rows: int, chunk_rows: int, tail: tuple[int, ...], dtype: np.dtype[Any], where: str) -> np.ndarray:
    """Concatenate decoded chunks of a plain array of ``rows`` rows (padding never decoded)."""
    parts = [decode_plain_chunk(c, (chunk_rows,) + tail, dtype, f"{where} chunk {i}", rows=rows - i * chunk_rows)
             for i, c in enumerate(chunks)]
    if not parts:
        return np.zeros((0,) + tail, dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def bucket_docs(b: dict[str, Any], slots: int, encodings: dict[str, Any]) -> dict[str, bytes]:
    """The array documents of a bucket with ``slots`` slots (data, and qparams if any).

    ``b`` is the bucket's manifest entry (:meth:`BucketSpec.to_dict` plus ``params_shape``),
    ``encodings`` the manifest's encoding table; keys are relative to the store root.
    """
    spec = BucketSpec.from_dict(b)
    enc = Encoding.from_dict(encodings[spec.encoding_id])
    dt = np.dtype(b["dtype"])
    attrs = {"qpyr": {"role": "data", "encoding": spec.encoding_id, "packed_int4": spec.packed}}
    out = {f"{spec.path}/data/zarr.json": bucket_data_doc(spec, slots, dt, enc.codec.zarr_chain(dt), attrs)}
    if b.get("params_shape"):
        ps = list(b["params_shape"])
        dims = ["slot", "param"] + (["channel"] if len(ps) == 2 else ["channel", "by", "bx"])
        out[f"{spec.path}/qparams/zarr.json"] = plain_array_doc(
            [slots] + ps, [spec.items_per_shard] + ps, np.dtype(np.float32), dims,
            {"qpyr": {"role": "qparams", "params": ["scale", "zero_point"]}})
    return out
