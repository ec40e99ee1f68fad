"""The qpyr format, versions 1.x and 2.0: the manifest, the catalog's columns and limits, and their checks.

See ``spec/format.md`` for the normative text. This module validates a manifest read from an
untrusted store (types, ranges and limits checked *before* anything is allocated) and names the
catalog's columns, codes and keys. The Zarr v3 documents and plain-array chunks are built in
:mod:`qpyr.format.documents`; this module re-exports those names.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from qpyr._version import FORMAT_VERSION
from qpyr.errors import FormatError, UnsupportedVersionError
from qpyr.format.documents import (
    bucket_data_doc,
    decode_plain_array,
    decode_plain_chunk,
    encode_plain_chunk,
    encode_plain_chunks,
    group_doc,
    plain_array_doc,
)
from qpyr.format.layout import BucketSpec

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_KEY",
    "LIMITS",
    "LEVEL_COLUMNS_2",
    "SHARD_COLUMNS",
    "level_columns",
    "major_version",
    "check_version",
    "validate_manifest",
    "group_doc",
    "bucket_data_doc",
    "plain_array_doc",
    "encode_plain_chunk",
    "encode_plain_chunks",
    "decode_plain_chunk",
    "decode_plain_array",
    "DTYPE_CODES",
    "catalog_path",
    "catalog_nbytes",
]

#: Root attribute holding the manifest.
MANIFEST_KEY = "qpyr"

#: Limits a reader enforces on untrusted metadata before allocating (spec/format.md §Limits).
LIMITS = {
    "max_items": 2**40,
    "max_levels": 32,
    "max_buckets": 1_000_000,
    "max_side": 2**20,
    "max_channels": 16,
    "max_catalog_bytes": 2**34,
    "max_doc_bytes": 2**28,
    "max_slot_samples": 2**33,
}

#: Source dtypes and their codes in the catalog's ``sources`` table.
DTYPE_CODES = ["uint8", "uint16", "float32", "float16", "float64", "int8", "int16", "int32",
               "int64", "uint32", "uint64", "bool"]

_CATALOG_CHUNK_ROWS = 65536

#: Codes of the ``decision`` column of ``catalog/level_{l}``: why a level got its encoding.
DECISIONS = ["planned", "raised", "searched", "lossless-fallback"]
#: Columns of ``catalog/level_{l}`` (int64), format 1.x.
LEVEL_COLUMNS = ["bucket", "slot", "height", "width", "stored_bytes", "decision"]
#: Columns of ``catalog/level_{l}`` (int64), format 2.0: ``task`` (row of the level's record
#: heap), ``stored_bytes`` (exact record length) and ``offset`` (of the record in that row).
LEVEL_COLUMNS_2 = ["bucket", "task", "height", "width", "stored_bytes", "decision", "offset"]
#: Columns of ``catalog/shards_{l}`` (int64, format 2.0): one row per shard object of the level.
SHARD_COLUMNS = ["task", "shard", "used_bytes", "object_bytes"]
#: Shard numbers a task may use per level (format 2.0 ``records.task_shards``, as qpyr writes it).
TASK_SHARDS = 2**16
#: Default and allowed shard sizes (``records.shard_bytes``) of format 2.0.
SHARD_BYTES = 32 * 2**20
SHARD_BYTES_RANGE = (2**16, 2**31 - 1)


def level_columns(m: dict[str, Any]) -> list[str]:
    """The ``catalog/level_{l}`` columns of a validated manifest's format version."""
    return LEVEL_COLUMNS_2 if major_version(m) >= 2 else LEVEL_COLUMNS


def major_version(m: dict[str, Any]) -> int:
    return int(str(m["format_version"]).split(".")[0])

#: Sample types a data array may hold (numpy names; bfloat16 is stored as uint16, 4-bit as uint8).
STORED_DTYPES = {"uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
                 "float16", "float32", "float64"}


#: Format majors this qpyr reads (one reader per major, newest first).
_READ_MAJORS = (2, 1)


def check_version(v: Any, where: str) -> tuple[int, int]:
    """Parse ``MAJOR.MINOR``; refuse an unknown major, accept newer minors."""
    if not isinstance(v, str) or v.count(".") != 1:
        raise FormatError(f"{where}: expected format_version 'MAJOR.MINOR'. Got {v!r}.")
    try:
        major, minor = (int(p) for p in v.split("."))
    except ValueError:
        raise FormatError(f"{where}: expected format_version 'MAJOR.MINOR'. Got {v!r}.") from None
    ours = int(FORMAT_VERSION.split(".")[0])
    if major not in _READ_MAJORS:
        raise UnsupportedVersionError(
            f"{where}: format_version {v} is not supported by this qpyr (reads "
            f"{', '.join(f'{x}.x' for x in _READ_MAJORS)}); "
            f"{'upgrade qpyr' if major > ours else 'convert the store with an older qpyr'}."
        )
    return major, minor


def catalog_path(generation: int) -> str:
    """Key prefix of the catalog of store generation ``generation``.

    Generation 1 keeps the catalog at ``catalog/``; every append commit (generation ``g`` >= 2)
    writes a complete new catalog at ``catalog/g{g}/`` and removes the previous one only after
    the new root document is in place, so a reader holding any committed root reads a catalog
    that matches it.
    """
    return "catalog" if generation <= 1 else f"catalog/g{generation}"


def catalog_nbytes(m: dict[str, Any]) -> int:
    """Bytes a reader allocates to hold the decoded catalog of a validated manifest."""
    n = int(m["items"])
    row = 5 * 8 + m["levels"] * (len(level_columns(m)) * 8 + 2 * 4)
    shards = sum(m["records"]["shards"]) * len(SHARD_COLUMNS) * 8 if "records" in m else 0
    return int(m["catalog"]["name_bytes"]) + 8 * (n + 1) + n * row + shards


CATALOG_CHUNK_ROWS = _CATALOG_CHUNK_ROWS


# ------------------------------------------------------------------------- manifest checks
def _req(d: Any, key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict):
        raise FormatError(f"{where}: expected an object. Got {type(d).__name__}.")
    if key not in d:
        raise FormatError(f"{where}: missing required field {key!r}.")
    v = d[key]
    if isinstance(v, bool) and typ is not bool and bool not in (typ if isinstance(typ, tuple) else (typ,)):
        raise FormatError(f"{where}.{key}: expected {getattr(typ, '__name__', typ)}. Got a boolean.")
    if not isinstance(v, typ):
        raise FormatError(f"{where}.{key}: expected {getattr(typ, '__name__', typ)}. Got {type(v).__name__}.")
    return v


def _int_in(d: Any, key: str, lo: int, hi: int, where: str) -> int:
    v = _req(d, key, int, where)
    if not lo <= v <= hi:
        raise FormatError(f"{where}.{key}: expected an integer in {lo}..{hi}. Got {v}.")
    return int(v)


_MANIFEST_FIELDS = {
    "format_version", "writer", "generation", "items", "levels", "policy", "filter", "tasks",
    "slots_per_task", "encodings", "buckets", "level_summary", "catalog", "total_bytes",
    "created", "optional", "plan", "records",
}
_BUCKET_FIELDS = {"path", "level", "encoding", "channels", "height", "width", "packed",
                  "slots_per_task", "slots", "dtype", "stored_bytes", "params_shape"}
#: Format 2.0 record classes: a bucket without geometry (each record's follows from its h x w).
_RECORD_CLASS_FIELDS = {"path", "level", "encoding", "channels", "packed", "slots", "dtype", "stored_bytes"}


_ENCODING_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*-[0-9a-f]{8}$")
_SUMMARY_INTS = ("stored_bytes", "fp32_bytes", "uint8_bytes")
_SUMMARY_FLOATS = ("psnr_mean", "psnr_min", "ssim_mean", "ssim_min")


def _nullable_number(d: dict[str, Any], key: str, where: str) -> None:
    if key not in d:
        raise FormatError(f"{where}: missing required field {key!r}.")
    v = d[key]
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise FormatError(f"{where}.{key}: expected a finite number or null. Got {v!r}.")


def _validate_level_summary(m: dict[str, Any], encs: dict[str, Any], where: str) -> None:
    ls = _req(m, "level_summary", list, where)
    if len(ls) > LIMITS["max_levels"]:
        raise FormatError(f"{where}.level_summary: too many levels ({len(ls)}).")
    if len(ls) != m["levels"]:
        raise FormatError(f"{where}.level_summary: expected one entry per level ({m['levels']}). Got {len(ls)}.")
    for li, e in enumerate(ls):
        w = f"{where}.level_summary[{li}]"
        if _int_in(e, "level", 0, LIMITS["max_levels"] - 1, w) != li:
            raise FormatError(f"{w}.level: expected {li}. Got {e['level']}.")
        _int_in(e, "items", 0, LIMITS["max_items"], w)
        for k in _SUMMARY_INTS:
            _int_in(e, k, 0, 2**62, w)
        for k in _SUMMARY_FLOATS:
            _nullable_number(e, k, w)
        for k in ("shape_min", "shape_max"):
            if k not in e:
                raise FormatError(f"{w}: missing required field {k!r}.")
            v = e[k]
            if v is not None and (not isinstance(v, list) or len(v) != 3 or
                                  not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= LIMITS["max_side"] for x in v)):
                raise FormatError(f"{w}.{k}: expected null or [C, h, w] of integers. Got {v!r}.")
        counts = _req(e, "encodings", dict, w)
        for eid, c in counts.items():
            if eid not in encs:
                raise FormatError(f"{w}.encodings: {eid!r} is not in the manifest's encodings.")
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise FormatError(f"{w}.encodings[{eid!r}]: expected a count. Got {c!r}.")
        dec = e.get("decisions", {})
        if not isinstance(dec, dict) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in dec.values()):
            raise FormatError(f"{w}.decisions: expected an object of counts. Got {dec!r}.")


def validate_manifest(m: Any, where: str) -> dict[str, Any]:
    """Check a manifest from an untrusted store; returns it unchanged when valid.

    Every type, range and limit that a later allocation or object key depends on is checked
    here, before the catalog is read: encoding ids (they appear in object keys) match
    ``<label>-<8 hex>``, bucket paths equal their geometry, ``params_shape`` is the shape the
    bucket's quantizer implies, and one slot holds at most ``max_slot_samples`` samples.
    Unknown fields fail unless listed in ``optional`` (additive minor versions list the
    fields an older reader may ignore).
    """
    from qpyr.codecs.encoding import Encoding  # local: encoding -> codecs -> ... must not import format first
    from qpyr.errors import QpyrError

    if not isinstance(m, dict):
        raise FormatError(f"{where}: manifest is not a JSON object.")
    major, _minor = check_version(m.get("format_version"), where)
    optional = m.get("optional", [])
    if not isinstance(optional, list) or not all(isinstance(x, str) for x in optional):
        raise FormatError(f"{where}.optional: expected a list of field names.")
    unknown = set(m) - _MANIFEST_FIELDS - set(optional)
    if unknown:
        raise FormatError(f"{where}: unknown required manifest field(s) {sorted(unknown)}; upgrade qpyr.")
    _int_in(m, "items", 0, LIMITS["max_items"], where)
    _int_in(m, "levels", 0, LIMITS["max_levels"], where)
    _int_in(m, "tasks", 0, 2**40, where)
    _int_in(m, "slots_per_task", 1, 2**20, where)
    _int_in(m, "total_bytes", 0, 2**62, where)
    _int_in(m, "generation", 1, 2**40, where)
    _req(m, "policy", str, where)
    for k in ("writer", "created", "filter"):
        if k in m and not isinstance(m[k], str):
            raise FormatError(f"{where}.{k}: expected str. Got {type(m[k]).__name__}.")
    encs = _req(m, "encodings", dict, where)
    parsed: dict[str, Any] = {}
    for eid, e in encs.items():
        if not _ENCODING_ID.match(eid):
            raise FormatError(f"{where}.encodings: {eid[:80]!r} is not an encoding id ('<label>-<8 hex digits>').")
        try:
            parsed[eid] = Encoding.from_dict(e)
        except QpyrError as err:
            raise FormatError(f"{where}.encodings[{eid!r}]: {err}") from err
        except (TypeError, ValueError, KeyError, AttributeError) as err:  # a hostile value the parser did not foresee
            raise FormatError(f"{where}.encodings[{eid!r}]: malformed encoding ({type(err).__name__}: {err}).") from err
    buckets = _req(m, "buckets", list, where)
    if len(buckets) > LIMITS["max_buckets"]:
        raise FormatError(f"{where}.buckets: {len(buckets)} buckets exceeds the limit {LIMITS['max_buckets']}.")
    for i, b in enumerate(buckets):
        w = f"{where}.buckets[{i}]"
        if not isinstance(b, dict):
            raise FormatError(f"{w}: expected an object.")
        extra = set(b) - (_RECORD_CLASS_FIELDS if major >= 2 else _BUCKET_FIELDS)
        if extra:
            raise FormatError(f"{w}: unknown field(s) {sorted(extra)}.")
        level = _int_in(b, "level", 0, LIMITS["max_levels"] - 1, w)
        c = _int_in(b, "channels", 1, LIMITS["max_channels"], w)
        if major >= 2:  # a record class: each record's geometry follows from its own h x w
            h = wd = 1
            b = dict(b, height=1, width=1, slots_per_task=1, params_shape=None)
        else:
            h = _int_in(b, "height", 1, LIMITS["max_side"], w)
            wd = _int_in(b, "width", 1, LIMITS["max_side"], w)
            _int_in(b, "slots_per_task", 1, 2**20, w)
        _int_in(b, "slots", 0, 2**50, w)
        if "stored_bytes" in b:
            _int_in(b, "stored_bytes", 0, 2**62, w)
        if level >= m["levels"]:
            raise FormatError(f"{w}.level: {level} but the store has {m['levels']} levels.")
        if c * h * wd > LIMITS["max_slot_samples"]:
            raise FormatError(f"{w}: one slot of {c} x {h} x {wd} samples exceeds the limit "
                              f"max_slot_samples = {LIMITS['max_slot_samples']}.")
        packed = _req(b, "packed", bool, w)
        dtype = _req(b, "dtype", str, w)
        if dtype not in STORED_DTYPES:
            raise FormatError(f"{w}.dtype: expected one of {sorted(STORED_DTYPES)}. Got {b['dtype']!r}.")
        enc = _req(b, "encoding", str, w)
        if enc not in encs:
            raise FormatError(f"{w}.encoding: {enc!r} is not in the manifest's encodings.")
        p = _req(b, "path", str, w)
        spec = BucketSpec.from_dict(b)
        if p != (spec.record_class["path"] if major >= 2 else spec.path):
            raise FormatError(f"{w}.path: {p!r} does not match the bucket's geometry.")
        q = parsed[enc].quantizer
        if packed != q.is_packed:
            raise FormatError(f"{w}.packed: {packed} disagrees with encoding {enc!r}.")
        if not q.is_lossless and dtype != q.storage_dtype(np.dtype(np.uint8)).name:
            raise FormatError(f"{w}.dtype: {dtype!r} is not the stored type of encoding {enc!r}.")
        if major >= 2:
            continue
        want = q.param_shape(c, h, wd)
        ps = b.get("params_shape")
        if (list(want) if want is not None else None) != ps:
            raise FormatError(f"{w}.params_shape: expected {list(want) if want else None} for encoding {enc!r}. Got {ps!r}.")
    cat = _req(m, "catalog", dict, where)
    _int_in(cat, "chunk_rows", 1, 2**24, f"{where}.catalog")
    _int_in(cat, "name_bytes", 0, LIMITS["max_catalog_bytes"], f"{where}.catalog")
    if cat.get("dtypes", DTYPE_CODES) != DTYPE_CODES:
        raise FormatError(f"{where}.catalog.dtypes: expected exactly {DTYPE_CODES} in format 1.x.")
    _validate_level_summary(m, encs, where)
    if major >= 2:
        _validate_records(m, where)
    elif "records" in m:
        raise FormatError(f"{where}: 'records' is a format 2.0 field; this store says {m['format_version']}.")
    if "plan" in m:  # optional (format 1.1): what the policy decided
        from qpyr.format.plan import validate_plan

        validate_plan(m["plan"], where)
    if catalog_nbytes(m) > LIMITS["max_catalog_bytes"]:
        raise FormatError(f"{where}: a catalog of {m['items']} items and {m['levels']} levels needs "
                          f"{catalog_nbytes(m)} bytes, over the limit max_catalog_bytes = {LIMITS['max_catalog_bytes']}.")
    return m


def _validate_records(m: dict[str, Any], where: str) -> None:
    """Format 2.0 ``records``: the record heap's shard size, shard numbers per task, shard counts."""
    w = f"{where}.records"
    r = _req(m, "records", dict, where)
    extra = set(r) - {"shard_bytes", "task_shards", "shards"}
    if extra:
        raise FormatError(f"{w}: unknown field(s) {sorted(extra)}.")
    _int_in(r, "shard_bytes", *SHARD_BYTES_RANGE, w)
    _int_in(r, "task_shards", 1, 2**24, w)
    shards = _req(r, "shards", list, w)
    if len(shards) != m["levels"] or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 2**40
                                             for x in shards):
        raise FormatError(f"{w}.shards: expected one shard count per level ({m['levels']}). Got {shards!r:.200}.")


def json_float(x: float) -> float | None:
    """JSON has no inf/nan: encode them as null (lossless levels have PSNR = inf)."""
    return None if (x is None or not math.isfinite(x)) else float(x)
