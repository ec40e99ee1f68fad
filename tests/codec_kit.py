"""Checks every chunk codec's tests share, in the manner of numcodecs' ``tests/common.py``.

* :func:`check_round_trip`: encode then decode gives the input back (exactly, or within a bound);
* :func:`check_config`: the ``{"name": ..., "configuration": ...}`` document survives JSON, the
  codec's own ``from_dict`` and :func:`qpyr.codecs.codec_from_dict`; equality, hash and repr agree;
* :func:`check_golden`: a committed vector (``spec/vectors/<codec>/<case>/``, written by
  ``tools/make_golden.py``) decodes bit-exactly, and re-encodes to the same bytes where the
  encoder is deterministic;
* :func:`check_hostile`: corrupt or truncated bytes give :class:`~qpyr.errors.CodecError` (or a
  chunk of the right shape and dtype), never another exception.

A codec here is anything with ``encode(array) -> bytes`` and ``decode(data, shape[, dtype])``:
the chunk codecs of :mod:`qpyr.codecs` and the tile codecs they wrap (``DctCodec.decode`` takes
no dtype: it always gives uint8).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from qpyr.codecs import codec_from_dict
from qpyr.errors import CodecError
from qpyr.samples import sample_photo

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
"""The committed golden vectors (``dct/``, ``lossless/``, ``tiles/``, ``stores/``)."""


@cache
def make_golden() -> ModuleType:
    """``tools/make_golden.py``, the one writer of the golden vectors, imported as a module."""
    path = Path(__file__).resolve().parent.parent / "tools" / "make_golden.py"
    spec = importlib.util.spec_from_file_location("make_golden", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_golden"] = mod  # dataclasses look their module up while being defined
    spec.loader.exec_module(mod)
    return mod


@cache
def _sample(name: str) -> np.ndarray:
    return sample_photo(name)


def photo(h: int = 96, w: int = 128, y: int = 100, x: int = 180, name: str = "astronaut") -> np.ndarray:
    """``uint8 [C, h, w]`` in 0..255: the crop at row ``y``, column ``x`` of a :mod:`qpyr.samples` photo."""
    a = _sample(name)[y : y + h, x : x + w]
    return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))


def decode(codec: Any, data: bytes, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``codec.decode(data, shape, dtype)``, or ``codec.decode(data, shape)`` for a codec whose
    output dtype is fixed."""
    if len(inspect.signature(codec.decode).parameters) >= 3:
        out: np.ndarray = codec.decode(data, shape, np.dtype(dtype))
    else:
        out = codec.decode(data, shape)
    return out


def check_round_trip(codec: Any, arrays: Iterable[np.ndarray], *, exact: bool = True, atol: float | None = None,
                     contiguous: bool = False) -> list[bytes]:
    """Encode each array, decode it (same shape and dtype) and compare: bit for bit when
    ``exact``, else within ``atol`` (max abs error) when given. Decoding twice gives the same
    array. With ``contiguous``, the decoded array is also writeable and C-contiguous.
    Returns the encoded bytes, one per array."""
    out = []
    for a in arrays:
        data = codec.encode(a)
        assert isinstance(data, bytes), type(data)
        y = decode(codec, data, a.shape, a.dtype)
        assert y.shape == a.shape and y.dtype == a.dtype, (y.shape, y.dtype, a.shape, a.dtype)
        if exact:
            np.testing.assert_array_equal(y, a)
        elif atol is not None:
            err = float(np.nanmax(np.abs(y.astype(np.float64) - a.astype(np.float64)))) if a.size else 0.0
            assert err <= atol, (err, atol)
        np.testing.assert_array_equal(decode(codec, data, a.shape, a.dtype), y)
        if contiguous:
            assert y.flags.writeable and y.flags.c_contiguous
        out.append(data)
    return out


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """A codec document with an empty configuration left out (both spellings mean the defaults)."""
    return {k: v for k, v in d.items() if not (k == "configuration" and not v)}


def check_config(codec: Any, *, codec_document: bool = True) -> dict[str, Any]:
    """The codec's document: JSON-serialisable, rebuilt equal (same hash, same repr) by the
    class's ``from_dict``. A codec document (``codec_document``; a quantizer's is not one) is
    ``{"name": ..., "configuration": ...}`` and :func:`qpyr.codecs.codec_from_dict` rebuilds it too
    (maybe wrapped in its chunk-codec adapter: then the adapter's ``inner`` is the codec).
    Returns the document."""
    d = codec.to_dict()
    assert isinstance(d, dict) and json.loads(json.dumps(d)) == d
    back = type(codec).from_dict(json.loads(json.dumps(d)))
    assert back == codec and hash(back) == hash(codec) and repr(back) == repr(codec)
    assert type(codec).__name__ in repr(codec)
    if not codec_document:
        return dict(d)
    assert d["name"] == getattr(codec, "name", d["name"])
    assert set(d) <= {"name", "configuration"}, d
    reg = codec_from_dict(json.loads(json.dumps(d)))
    same = reg if type(reg) is type(codec) else getattr(reg, "inner", reg)
    assert same == codec and hash(same) == hash(codec), (reg, codec)
    assert _plain(reg.to_dict()) == _plain(d)
    if hasattr(codec, "zarr_chain"):
        chain = codec.zarr_chain(np.dtype(np.uint8))
        assert json.loads(json.dumps(chain)) == chain
    return dict(d)


def golden_cases(codec_dir: str) -> list[str]:
    """The committed vectors of one codec (``spec/vectors/<codec_dir>/``), by name."""
    root = VECTORS / codec_dir
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def check_golden(codec_or_factory: Any, vector_dir: Path | str, *, reencode: bool = True,
                 encode: Callable[[Any, Path], bytes] | None = None) -> Any:
    """Check one committed vector directory (``config.json``, ``input.npy``, ``encoded.bin``, and
    ``decoded.npy`` for a lossy codec; a lossless one decodes to ``input.npy``).

    ``codec_or_factory`` is a codec, a codec class (built with its ``from_dict``) or a callable
    building one from ``config.json`` (such as :func:`qpyr.codecs.codec_from_dict`). The committed bytes must decode bit-exactly (same dtype too); with
    ``reencode`` the input must encode to the committed bytes again, through ``encode(codec,
    vector_dir)`` when given (e.g. ``qpyr.tiles``' ``encode_classes``), else ``codec.encode``.
    Returns the codec."""
    d = Path(vector_dir)
    config = json.loads((d / "config.json").read_text())
    if isinstance(codec_or_factory, type):
        codec = codec_or_factory.from_dict(config)
    elif hasattr(codec_or_factory, "decode"):
        codec = codec_or_factory
    else:
        codec = codec_or_factory(config)
    x = np.load(d / "input.npy", allow_pickle=False)
    encoded = (d / "encoded.bin").read_bytes()
    expected = np.load(d / "decoded.npy", allow_pickle=False) if (d / "decoded.npy").exists() else x
    got = decode(codec, encoded, x.shape, expected.dtype)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # NaN (pruned tiles) compares equal to NaN
    if reencode:
        again = encode(codec, d) if encode is not None else codec.encode(x)
        assert again == encoded, f"{d.name}: re-encoding gives other bytes"
    return codec


def check_hostile(codec: Any, blobs: Iterable[bytes], shape: tuple[int, ...], dtype: Any, *,
                  must_raise: bool = False) -> None:
    """Decoding each blob as a chunk of ``shape``/``dtype`` raises :class:`CodecError` or returns an
    array of that shape and dtype; any other exception fails. With ``must_raise``, every blob
    must raise :class:`CodecError`."""
    for blob in blobs:
        try:
            out = decode(codec, blob, shape, dtype)
        except CodecError:
            continue
        assert not must_raise, f"decoding {len(blob)} hostile bytes did not raise CodecError"
        assert out.shape == tuple(shape) and out.dtype == np.dtype(dtype), (out.shape, out.dtype)
