"""The chunk-codec adapters of qpyr's own codecs (qpyr/codecs/adapters.py) and the codecs stock
zarr-python finds through the ``zarr.codecs`` entry points (qpyr/codecs/zarr.py)."""

from __future__ import annotations

from importlib.metadata import entry_points

import numpy as np
import pytest
from codec_kit import check_config, check_hostile, check_round_trip, photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpyr.codecs import DctChunkCodec, LosslessChunkCodec, codec_from_dict, is_lossy
from qpyr.codecs.dct import DctCodec, pad_for_dct
from qpyr.codecs.lossless import LosslessCodec
from qpyr.codecs.zarr import DctZarrCodec, LosslessZarrCodec, TilesZarrCodec
from qpyr.errors import CodecError

RGB = photo(24, 40)[None]  # uint8 [1, 3, 24, 40]
ADAPTERS = [DctChunkCodec.create(), DctChunkCodec.create(quality=60, chroma="444", entropy="fast"),
            DctChunkCodec.create(entropy="jfif"), LosslessChunkCodec.create(),
            LosslessChunkCodec.create(predictor="grad", color="rct", level=3)]
IDS = [str(c.to_dict()) for c in ADAPTERS]


@pytest.mark.parametrize("codec", ADAPTERS, ids=IDS)
def test_config_round_trip(codec) -> None:
    d = check_config(codec)
    assert codec.zarr_chain(np.dtype(np.uint8)) == [d]
    assert codec_from_dict(d) == codec and codec.name == d["name"]


def test_empty_configuration_is_left_out() -> None:
    assert DctChunkCodec.create().to_dict() == {"name": "qpyr.dct"}
    assert LosslessChunkCodec.create().to_dict() == {"name": "qpyr.lossless"}
    assert DctChunkCodec.create(quality=50).to_dict() == {"name": "qpyr.dct", "configuration": {"quality": 50}}


def test_bad_configuration_is_a_codec_error() -> None:
    for bad in (lambda: DctChunkCodec.create(quality=0), lambda: DctChunkCodec.create(colour="rgb"),
                lambda: LosslessChunkCodec.create(predictor="paeth"),
                lambda: DctChunkCodec.from_dict({"name": "qpyr.dct", "configuration": {"level": 3}}),
                lambda: LosslessChunkCodec.from_dict({"name": "qpyr.lossless", "configuration": {"x": 1}}),
                lambda: codec_from_dict({"name": "qpyr.dct", "configuration": {"quality": 101}})):
        with pytest.raises(CodecError):
            bad()


def test_dct_adapter_codes_one_tile_per_chunk() -> None:
    codec = DctChunkCodec.create(quality=80)
    (data,) = check_round_trip(codec, [RGB], exact=False, atol=64)
    assert is_lossy(codec)
    inner = DctCodec(quality=80)
    assert data == inner.encode(RGB[0])
    np.testing.assert_array_equal(codec.decode(data, RGB.shape, np.dtype(np.uint8))[0], inner.decode(data, RGB.shape[1:]))
    np.testing.assert_array_equal(codec.simulate(RGB), codec.decode(data, RGB.shape, np.dtype(np.uint8)))


def test_dct_adapter_rejects_what_it_cannot_code() -> None:
    codec = DctChunkCodec.create()
    data = codec.encode(RGB)
    for bad in (lambda: codec.encode(RGB.astype(np.uint16)), lambda: codec.simulate(RGB.astype(np.float32)),
                lambda: DctChunkCodec.create(quality="chunk").encode(RGB),
                lambda: codec.decode(data, RGB.shape, np.dtype(np.uint16)),
                lambda: codec.decode(data, RGB.shape[1:], np.dtype(np.uint8)),
                lambda: codec.decode(data, (2, *RGB.shape[1:]), np.dtype(np.uint8))):
        with pytest.raises(CodecError):
            bad()
    # quality "chunk" decodes (each chunk header holds its quality)
    np.testing.assert_array_equal(DctChunkCodec.create(quality="chunk").decode(data, RGB.shape, np.dtype(np.uint8)),
                                  codec.decode(data, RGB.shape, np.dtype(np.uint8)))


def test_dct_adapter_pads_uint8_for_the_dct_and_other_dtypes_by_edge() -> None:
    codec = DctChunkCodec.create()
    img = RGB[0]
    np.testing.assert_array_equal(codec.pad(img, 40, 56), pad_for_dct(img, 40, 56))
    u16 = img.astype(np.uint16)
    np.testing.assert_array_equal(codec.pad(u16, 40, 56), np.pad(u16, ((0, 0), (0, 16), (0, 16)), mode="edge"))


def test_lossless_adapter_round_trips_exactly() -> None:
    codec = LosslessChunkCodec.create()
    arrays = [RGB, RGB.astype(np.uint16) * 250, (RGB.astype(np.int16) - 128), RGB[:, :1].copy()]
    for data, a in zip(check_round_trip(codec, arrays, contiguous=True), arrays, strict=True):
        assert data == LosslessCodec().encode(a[0])
    assert not is_lossy(codec)
    with pytest.raises(CodecError):
        codec.decode(codec.encode(RGB), RGB.shape[1:], np.dtype(np.uint8))


_GOOD = {"dct": (DctChunkCodec.create(), DctChunkCodec.create().encode(RGB)),
         "lossless": (LosslessChunkCodec.create(), LosslessChunkCodec.create().encode(RGB))}


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(which=st.sampled_from(sorted(_GOOD)), data=st.binary(max_size=200),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4), cut=st.integers(0, 10**6))
def test_hostile_bytes_raise_codec_errors_only(which: str, data: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    codec, good = _GOOD[which]
    buf = bytearray(good)
    for pos, val in edits:
        buf[pos % len(buf)] = val
    check_hostile(codec, [data, bytes(buf), good[: cut % len(good)]], RGB.shape, np.uint8)


# -- zarr.codecs entry points ----------------------------------------------------------------

ZARR = {"qpyr.dct": DctZarrCodec, "qpyr.lossless": LosslessZarrCodec, "qpyr.tiles": TilesZarrCodec}


def test_entry_points_name_the_zarr_codecs() -> None:
    from zarr.registry import get_codec_class

    eps = {e.name: e for e in entry_points(group="zarr.codecs") if e.name.startswith("qpyr.")}
    assert sorted(eps) == sorted(ZARR)
    for name, cls in ZARR.items():
        assert eps[name].load() is cls
        assert get_codec_class(name) is cls


@pytest.mark.parametrize(("cls", "conf"), [(DctZarrCodec, {}), (DctZarrCodec, {"quality": 70, "chroma": "444"}),
                                           (LosslessZarrCodec, {"predictor": "left"}), (TilesZarrCodec, {"tile": 32})])
def test_zarr_codec_document_round_trip(cls, conf) -> None:
    c = cls(configuration=conf)
    d = c.to_dict()
    assert d == ({"name": cls.codec_name, "configuration": conf} if conf else {"name": cls.codec_name})
    back = cls.from_dict(d)
    assert back == c and hash(back) == hash(c)
    assert codec_from_dict(d).to_dict() == d  # the same document names the qpyr chunk codec


def test_zarr_codec_validates_its_configuration() -> None:
    with pytest.raises(CodecError):
        DctZarrCodec(configuration={"quality": 0})
    with pytest.raises(CodecError):
        TilesZarrCodec(configuration={"tile": 12})


@pytest.mark.parametrize("cls", [DctZarrCodec, LosslessZarrCodec])
def test_stock_zarr_writes_and_reads_through_the_codec(cls) -> None:
    import zarr

    x = np.concatenate([RGB, RGB[:, :, ::-1]])
    arr = zarr.create_array(store={}, shape=x.shape, chunks=(1, *x.shape[1:]), dtype="uint8",
                            serializer=cls(configuration={}), compressors=None)
    arr[:] = x
    chunk = codec_from_dict({"name": cls.codec_name})
    expected = np.concatenate([chunk.decode(chunk.encode(x[i:i + 1]), (1, *x.shape[1:]), np.dtype(np.uint8))
                               for i in range(2)])
    np.testing.assert_array_equal(arr[:], expected)
