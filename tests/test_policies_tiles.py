"""qpyr.tiles chunk codec: golden vectors, round trip, hostile bytes, config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from qpyr.codecs import TilesChunkCodec, codec_from_dict
from qpyr.codecs.tiles import MAGIC, chunk_classes, fill_pruned
from qpyr.errors import CodecError

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors" / "tiles"
GOLDEN = sorted(p.name for p in VECTORS.glob("*")) if VECTORS.exists() else []


def _vector_inputs() -> dict[str, tuple[dict, np.ndarray, np.ndarray]]:
    """The inputs of the committed vectors (used once to write them; see --write below)."""
    import skimage.data as skd

    a = skd.astronaut()
    rgb = (np.moveaxis(a[200:240, 180:230], -1, 0) / 255.0).astype(np.float32)[None]
    gray = (skd.camera()[100:164, 100:164] / 255.0).astype(np.float32)[None, None]
    rgba = np.concatenate([np.moveaxis(a[300:324, 300:324], -1, 0) / 255.0, np.linspace(0, 1, 576).reshape(1, 24, 24)])
    rgba = rgba.astype(np.float32)[None]
    return {
        "00-rgb-all-classes": ({"name": "qpyr.tiles", "configuration": {"tile": 16}}, rgb,
                               np.array([[0, 1, 2, 3], [4, 3, 2, 1], [1, 1, 4, 0]], np.uint8)),
        "01-gray-int4": ({"name": "qpyr.tiles", "configuration": {"tile": 32}}, gray, np.ones((2, 2), np.uint8)),
        "02-rgba-tile8-mixed": ({"name": "qpyr.tiles", "configuration": {"tile": 8}}, rgba,
                                np.array([[2, 3, 1], [4, 2, 2], [0, 1, 3]], np.uint8)),
    }


def write_vectors() -> None:  # pragma: no cover - run by hand: python tests/test_policies_tiles.py --write
    for name, (cfg, x, cls) in _vector_inputs().items():
        d = VECTORS / name
        d.mkdir(parents=True, exist_ok=True)
        codec = codec_from_dict(cfg)
        enc = codec.encode_classes(x, cls)
        (d / "config.json").write_text(json.dumps(cfg) + "\n")
        np.save(d / "input.npy", x)
        np.save(d / "classes.npy", cls)
        (d / "encoded.bin").write_bytes(enc)
        np.save(d / "decoded.npy", codec.decode(enc, x.shape, np.float32))


def test_golden_vectors_exist() -> None:
    assert len(GOLDEN) >= 3


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_vector_decodes(name: str) -> None:
    d = VECTORS / name
    codec = codec_from_dict(json.loads((d / "config.json").read_text()))
    x = np.load(d / "input.npy")
    encoded = (d / "encoded.bin").read_bytes()
    expected = np.load(d / "decoded.npy")
    got = codec.decode(encoded, x.shape, np.dtype(np.float32))
    np.testing.assert_array_equal(got, expected)  # NaN (pruned) positions compare equal
    assert codec.encode_classes(x, np.load(d / "classes.npy")) == encoded


def test_round_trip_per_class() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 40, 50), dtype=np.float32)
    codec = TilesChunkCodec(tile=16)
    for code, tol in ((1, 1 / 30 + 1e-6), (2, 1 / 510 + 1e-6), (3, 1e-3), (4, 0.0)):
        cls = np.full((3, 4), code, np.uint8)
        y = codec.decode(codec.encode_classes(x, cls), x.shape, np.float32)
        assert np.abs(y - x).max() <= tol  # half a quantization step (int), fp16 rounding
    y = codec.decode(codec.encode_classes(x, np.zeros((3, 4), np.uint8)), x.shape, np.float32)
    assert np.isnan(y).all()
    y = codec.decode(codec.encode(np.where(x > 2, np.nan, x)), x.shape, np.float32)  # plain encode: all fp32
    np.testing.assert_array_equal(y, x)


def test_config_round_trip_and_validation() -> None:
    assert TilesChunkCodec().to_dict() == {"name": "qpyr.tiles"}
    c = codec_from_dict({"name": "qpyr.tiles", "configuration": {"tile": 32}})
    assert c == TilesChunkCodec(tile=32) and codec_from_dict(c.to_dict()) == c
    for bad in ({"name": "qpyr.tiles", "configuration": {"tile": 48}}, {"name": "qpyr.tiles", "configuration": {"x": 1}}):
        with pytest.raises(CodecError):
            codec_from_dict(bad)


def test_hostile_bytes_are_codec_errors() -> None:
    x = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    codec = TilesChunkCodec(tile=16)
    good = codec.encode_classes(x, np.array([[1, 2], [3, 4]], np.uint8))
    cases = [b"", good[:10], b"XXXX" + good[4:], good[:-5], good + b"\0"]
    import zstandard

    body = zstandard.ZstdDecompressor().decompress(good[16:])
    cases.append(good[:16] + zstandard.ZstdCompressor().compress(b"\x07" + body[1:]))  # class code 7
    cases.append(good[:16] + zstandard.ZstdCompressor().compress(body + b"\0"))  # trailing bytes
    for bad in cases:
        with pytest.raises(CodecError):
            codec.decode(bad, x.shape, np.float32)
    with pytest.raises(CodecError):
        codec.decode(good, (1, 3, 32, 48), np.float32)  # shape disagrees with the header
    assert good[:4] == MAGIC


def test_chunk_classes_and_fill() -> None:
    import torch

    level = np.arange(12, dtype=np.uint8).reshape(3, 4) % 5
    # a 256-px chunk of a tile-64 grid at chunk (1, 0); past the item's extent: pruned
    c = chunk_classes(np.full((6, 6), 3, np.uint8), 256, 0, 256, 256, 300, 380, 64)
    assert c.shape == (4, 4) and (c[0, :] == 3).all() and (c[1:, :] == 0).all()
    c = chunk_classes(level, 0, 0, 64, 64, 48, 60, 16)  # a whole-item chunk: padded rows pruned
    assert c.shape == (4, 4) and (c[:3] == level).all() and (c[3] == 0).all()
    fine = torch.full((1, 4, 4), float("nan"))
    fine[0, 0, 0] = 5.0
    out = fill_pruned(fine, torch.ones(1, 2, 2))
    assert out[0, 0, 0] == 5.0 and torch.equal(out[0, 1:], torch.ones(3, 4))


if __name__ == "__main__" and "--write" in sys.argv:  # pragma: no cover
    write_vectors()
