"""The standard Zarr v3 byte codecs (qpyr/codecs/standard.py): ``zstd`` and ``blosc``."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from codec_kit import check_config, check_hostile, check_round_trip, photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpyr.codecs import BloscCodec, ZstdCodec, codec_from_dict, is_lossy
from qpyr.errors import CodecError

CODECS = [ZstdCodec(), ZstdCodec(level=19), ZstdCodec(level=-7), BloscCodec(), BloscCodec(clevel=0),
          BloscCodec(clevel=9, shuffle="bitshuffle"), BloscCodec(shuffle="noshuffle")]
IDS = [str(c.to_dict()) for c in CODECS]


def _arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    img = photo(24, 40)[None]  # uint8 [1, 3, 24, 40]
    return [
        img,
        img.astype(np.uint16) * 257,
        (img.astype(np.int16) - 128),
        (img / 255).astype(np.float16),
        rng.normal(size=(1, 2, 7, 5)).astype(np.float32),
        np.zeros((1, 1, 1, 1), np.uint8),
    ]


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
def test_round_trip_is_exact(codec) -> None:
    check_round_trip(codec, _arrays())
    assert not is_lossy(codec)


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
def test_big_endian_and_strided_input_give_the_little_endian_bytes(codec) -> None:
    a = _arrays()[1]
    assert codec.encode(a.astype(">u2")) == codec.encode(a)
    view = a[:, :, ::2, ::3]
    np.testing.assert_array_equal(codec.decode(codec.encode(view), view.shape, view.dtype), view)


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
def test_config_round_trip(codec) -> None:
    d = check_config(codec)
    assert codec_from_dict(d) == codec


def test_config_defaults_left_out_and_zarr_chain() -> None:
    assert ZstdCodec().to_dict() == {"name": "zstd"}
    assert ZstdCodec(level=5).to_dict() == {"name": "zstd", "configuration": {"level": 5}}
    assert BloscCodec().to_dict() == {"name": "blosc"}
    assert BloscCodec(shuffle="noshuffle").to_dict() == {"name": "blosc", "configuration": {"shuffle": "noshuffle"}}
    assert ZstdCodec().zarr_chain(np.dtype(np.uint8)) == [
        {"name": "bytes"}, {"name": "zstd", "configuration": {"level": 3, "checksum": False}}]
    chain = BloscCodec().zarr_chain(np.dtype(np.uint16))
    assert chain[0] == {"name": "bytes", "configuration": {"endian": "little"}}
    assert chain[1]["configuration"] == {"cname": "zstd", "clevel": 5, "shuffle": "shuffle", "typesize": 2,
                                         "blocksize": 0}


@pytest.mark.parametrize("bad", [
    lambda: ZstdCodec(level=23), lambda: ZstdCodec(level=-8), lambda: ZstdCodec(level=True),
    lambda: ZstdCodec(level="3"), lambda: BloscCodec(clevel=10), lambda: BloscCodec(clevel=1.0),
    lambda: BloscCodec(shuffle="byte"),
    lambda: ZstdCodec.from_dict({"name": "zstd", "configuration": {"clevel": 3}}),
    lambda: BloscCodec.from_dict({"name": "blosc", "configuration": {"cname": "lz4"}}),
    lambda: ZstdCodec.from_dict({"name": "blosc"}),
    lambda: ZstdCodec.from_dict({"name": "zstd", "configuration": [3]}),
    lambda: ZstdCodec.from_dict({"name": "zstd", "extra": 1}),
])
def test_bad_configuration_is_a_codec_error(bad) -> None:
    with pytest.raises(CodecError):
        bad()


def test_stock_decoders_read_the_bytes() -> None:
    """The bytes are plain zstd frames / blosc buffers: numcodecs decodes them."""
    from numcodecs import Blosc, Zstd

    a = _arrays()[1]
    np.testing.assert_array_equal(np.frombuffer(Zstd().decode(ZstdCodec().encode(a)), "<u2").reshape(a.shape), a)
    np.testing.assert_array_equal(np.frombuffer(Blosc().decode(BloscCodec().encode(a)), "<u2").reshape(a.shape), a)


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
def test_truncated_and_extended_chunks_are_codec_errors(codec) -> None:
    a = _arrays()[1]
    good = codec.encode(a)
    check_hostile(codec, [b"", good[:4], good[:-1], good[: len(good) // 2]], a.shape, a.dtype, must_raise=True)
    # bytes after a complete zstd frame are not looked at; blosc checks its compressed size
    check_hostile(codec, [good + b"\0"], a.shape, a.dtype, must_raise=codec.name == "blosc")
    # the size is checked against the expected chunk before anything is allocated
    check_hostile(codec, [good], (1, 3, 24, 41), a.dtype, must_raise=True)
    check_hostile(codec, [good], a.shape, np.uint8, must_raise=True)


def test_blosc_header_declaring_another_size_is_rejected() -> None:
    a = _arrays()[0]
    good = BloscCodec().encode(a)
    for off, val in ((4, 2**31), (4, a.nbytes + 1), (12, len(good) + 1), (12, 3)):
        bad = bytearray(good)
        struct.pack_into("<I", bad, off, val)
        check_hostile(BloscCodec(), [bytes(bad)], a.shape, a.dtype, must_raise=True)


_ZSTD_GOOD = ZstdCodec().encode(_arrays()[0])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=300), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4))
def test_zstd_hostile_bytes_raise_codec_errors_only(data: bytes, edits: list[tuple[int, int]]) -> None:
    buf = bytearray(_ZSTD_GOOD)
    for pos, val in edits:
        buf[pos % len(buf)] = val
    shape = _arrays()[0].shape
    check_hostile(ZstdCodec(), [data, bytes(buf), b"\x28\xb5\x2f\xfd" + data], shape, np.uint8)
