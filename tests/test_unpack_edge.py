"""`qpyr unpack` on edge shapes: PNGs of 1-pixel-wide and 1x1 images, no `*.partial` files or
empty output directories left behind by a failure."""

from __future__ import annotations

import os
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

import qpyr
from qpyr.cli import main
from qpyr.ops import unpack as unpack_mod

SHAPES = [((1, 1, 3), np.uint8), ((37, 1, 3), np.uint8), ((1, 53), np.uint8), ((5, 1), np.uint16),
          ((1, 9, 4), np.uint8), ((2, 1, 3), np.uint16), ((64, 1, 3), np.uint8), ((17, 33, 3), np.uint8)]


def test_png_unpack_of_thin_and_tiny_images_round_trips(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = {f"im{i}.png": rng.integers(0, np.iinfo(dt).max + 1, shape).astype(dt)
              for i, (shape, dt) in enumerate(SHAPES)}
    qpyr.pack(arrays, str(tmp_path / "s.qpyr"), policy="lossless", levels=1)
    out = tmp_path / "out"
    assert main(["unpack", str(tmp_path / "s.qpyr"), "-o", str(out), "--format", "png"]) == 0, capsys.readouterr().err
    for name, a in arrays.items():
        got = np.asarray(imagecodecs.png_decode((out / name.replace(".png", "_l0.png")).read_bytes()))
        assert got.shape == a.shape and got.dtype == a.dtype and np.array_equal(got, a), name
    assert not [f for f in os.listdir(out) if f.endswith(".partial")]


@pytest.mark.parametrize("shape", [(h, 1, 3) for h in range(1, 40, 3)] + [(1, w, 3) for w in range(1, 40, 7)])
def test_png_bytes_decode_to_the_array_for_every_thin_shape(shape):
    a = np.random.default_rng(shape[0] * 100 + shape[1]).integers(0, 256, shape).astype(np.uint8)
    assert np.array_equal(np.asarray(imagecodecs.png_decode(unpack_mod.png_bytes(a))).reshape(shape), a)


def test_a_failed_write_leaves_no_partial_file_and_no_empty_directory(tmp_path, monkeypatch):
    qpyr.pack({"a.png": np.zeros((8, 8, 3), np.uint8)}, str(tmp_path / "s.qpyr"), policy="lossless")
    st = qpyr.open(str(tmp_path / "s.qpyr"))

    def boom(arr):
        raise RuntimeError("encoder failed")

    monkeypatch.setattr(unpack_mod, "png_bytes", boom)
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError):
        unpack_mod.unpack(st, str(out))
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(RuntimeError):
        unpack_mod.unpack(st, str(kept))
    assert kept.exists() and os.listdir(kept) == []  # an existing directory stays; no partial file


def _varied(tmp_path: Path) -> tuple[str, list[str]]:
    rng = np.random.default_rng(3)
    inputs = {}
    for i in range(10):
        s = 256 if i % 2 == 0 else 8  # 8x8 items have fewer levels
        inputs[f"i{i}.png"] = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    url = str(tmp_path / "v.qpyr")
    store = qpyr.pack(inputs, url, policy="lossless")
    lacking = [n for n in store.names if len(store.item_info(n)["levels"]) <= 3]
    assert 0 < len(lacking) < len(store)
    return url, lacking


def test_unpack_level_only_some_items_have_writes_the_rest_and_reports(tmp_path, capsys):
    url, lacking = _varied(tmp_path)
    out = tmp_path / "o"
    assert main(["unpack", url, "-o", str(out), "--level", "3", "--format", "npy"]) == 0
    assert len(list(out.glob("*.npy"))) == 10 - len(lacking)
    err = capsys.readouterr()
    text = err.out + err.err
    assert f"{len(lacking)} items have no level 3: {lacking[0]}" in text and "(skipped)" in text


def test_unpack_level_no_item_has_fails_and_leaves_no_output_dir(tmp_path, capsys):
    url, _ = _varied(tmp_path)
    out = tmp_path / "o"
    assert main(["unpack", url, "-o", str(out), "--level", "9"]) == 1
    assert "level 9" in capsys.readouterr().err
    assert not out.exists()
