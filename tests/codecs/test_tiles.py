"""qpyr.tiles: round trip per class, config, golden vectors and hostile bytes (only CodecError,
never a crash)."""

from __future__ import annotations

import numpy as np
import pytest
from codec_kit import VECTORS, check_config, check_golden, check_hostile, check_round_trip, golden_cases, photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpyr.codecs import codec_from_dict
from qpyr.codecs.tiles import TilesChunkCodec
from qpyr.errors import QpyrError

SHAPE = (1, 3, 40, 56)


def _chunk() -> np.ndarray:
    """``float32 [1, 3, 40, 56]`` in [0, 1]: a crop of a real photo."""
    return photo(40, 56, 200, 200)[None].astype(np.float32) / 255


CODEC = TilesChunkCodec(tile=16)
CLASSES = np.array([[0, 1, 2, 3], [4, 3, 2, 1], [1, 2, 3, 4]], np.uint8)  # every class, 3x4 tiles of 16 px
VALID = CODEC.encode_classes(_chunk(), CLASSES)


def test_round_trip_error_per_class() -> None:
    x = _chunk()
    y = CODEC.decode(VALID, SHAPE, np.dtype(np.float32))
    assert y.shape == x.shape
    for i in range(3):
        for j in range(4):
            a = x[0, :, 16 * i:16 * (i + 1), 16 * j:16 * (j + 1)]
            b = y[0, :, 16 * i:16 * (i + 1), 16 * j:16 * (j + 1)]
            k = CLASSES[i, j]
            if k == 0:
                assert np.isnan(b).all()  # pruned: the reader fills it from the coarser level
                continue
            err = float(np.abs(a - b).max())
            bound = {1: 1 / 15 / 2, 2: 1 / 255 / 2, 3: 1e-3, 4: 0.0}[int(k)]
            assert err <= bound + 1e-6, (k, err)


def test_plain_encode_round_trips_exactly() -> None:
    check_round_trip(CODEC, [_chunk(), np.zeros((1, 1, 16, 16), np.float32)])


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=4096))
def test_random_bytes_raise_codec_errors_only(data: bytes) -> None:
    check_hostile(CODEC, [data], SHAPE, np.float32)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(pos=st.integers(0, len(VALID) - 1), val=st.integers(0, 255), cut=st.integers(0, len(VALID)))
def test_mutated_and_truncated_chunks_raise_codec_errors_only(pos: int, val: int, cut: int) -> None:
    buf = bytearray(VALID)
    buf[pos] = val
    check_hostile(CODEC, [bytes(buf), VALID[:cut]], SHAPE, np.float32)


@pytest.mark.parametrize("codec", [TilesChunkCodec(), TilesChunkCodec(tile=8), TilesChunkCodec(tile=32)])
def test_config_round_trip(codec: TilesChunkCodec) -> None:
    check_config(codec)


GOLDEN = golden_cases("tiles")


def test_golden_vectors_exist() -> None:
    assert len(GOLDEN) >= 3


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_vector(name: str) -> None:
    check_golden(codec_from_dict, VECTORS / "tiles" / name,
                 encode=lambda codec, d: codec.encode_classes(np.load(d / "input.npy"), np.load(d / "classes.npy")))


def test_bad_configuration_is_rejected_naming_the_parameter() -> None:
    with pytest.raises(QpyrError, match="tile"):
        TilesChunkCodec(tile=12)
    with pytest.raises(QpyrError, match="tile"):
        TilesChunkCodec.from_dict({"name": "qpyr.tiles", "configuration": {"tiles": 16}})
