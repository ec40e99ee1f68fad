"""Pack safety (issue #16): ``--overwrite`` only replaces qpyr stores, ``--append`` needs a store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import qpyr
from qpyr.cli import main
from qpyr.errors import InputError, QpyrWarning, StoreExistsError

RNG = np.random.default_rng(16)


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("qpyr "), err
    for n in needles:
        assert n in err, (n, err)
    return err


# --- 3. --overwrite replaces only qpyr stores (or an empty directory) -----------------------

def _user_dir(tmp_path):
    d = tmp_path / "ow"
    (d / "sub").mkdir(parents=True)
    (d / "keep.txt").write_text("notes")
    (d / "sub" / "thesis.tex").write_text("\\documentclass{article}")
    return d


def test_cli_overwrite_refuses_a_directory_that_is_not_a_store(tmp_path, capsys):
    Image.fromarray(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    d = _user_dir(tmp_path)
    assert main(["pack", str(tmp_path / "x.png"), "-o", str(d), "--overwrite", "-q"]) == 1
    _one_line_error(capsys, "2 files that are not a qpyr store", "keep.txt", "sub/thesis.tex", "refusing to overwrite")
    assert (d / "keep.txt").read_text() == "notes" and (d / "sub" / "thesis.tex").exists()
    assert sorted(p.name for p in d.iterdir()) == ["keep.txt", "sub"]
    # without the flag: the same refusal, and no advice to pass --overwrite
    assert main(["pack", str(tmp_path / "x.png"), "-o", str(d), "-q"]) == 1
    err = _one_line_error(capsys, "not a qpyr store", "keep.txt")
    assert "--overwrite" not in err
    assert sorted(p.name for p in d.iterdir()) == ["keep.txt", "sub"]


def test_api_overwrite_refuses_a_foreign_zarr_group(tmp_path):
    d = tmp_path / "z"
    d.mkdir()
    (d / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    (d / "data").mkdir()
    (d / "data" / "zarr.json").write_text("{}")
    with pytest.raises(StoreExistsError, match="not a qpyr store"):
        qpyr.pack({"x": np.zeros((8, 8), np.uint8)}, str(d), overwrite=True)
    assert (d / "zarr.json").exists() and (d / "data" / "zarr.json").exists()


def test_api_overwrite_replaces_a_store_and_an_empty_directory(tmp_path):
    url = tmp_path / "s.qpyr"
    qpyr.pack({"a": np.zeros((8, 8), np.uint8)}, str(url), policy="lossless")
    with pytest.raises(StoreExistsError, match="--overwrite"):  # a store: the advice stands
        qpyr.pack({"b": np.ones((8, 8), np.uint8)}, str(url), policy="lossless")
    assert qpyr.pack({"b": np.ones((8, 8), np.uint8)}, str(url), policy="lossless", overwrite=True).names == ["b"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(qpyr.pack({"c": np.ones((8, 8), np.uint8)}, str(empty), overwrite=True)) == 1


# --- 12. --append needs a store; floors name levels that exist ------------------------------

def test_append_to_a_missing_path_is_an_error(tmp_path, capsys):
    url = tmp_path / "nothing.qpyr"
    with pytest.raises(InputError, match="no store at .* to append to; drop --append to create one"):
        qpyr.pack({"x": np.zeros((8, 8), np.uint8)}, str(url), append=True)
    assert not url.exists()
    np.save(tmp_path / "x.npy", np.zeros((8, 8), np.uint8))
    assert main(["pack", str(tmp_path / "x.npy"), "-o", str(url), "--append", "-q"]) == 1
    _one_line_error(capsys, "no store at", "nothing.qpyr", "drop --append")
    assert not url.exists()


# --- the default policy keeps sources above 8 bits exact ----------------------------------

def _deep_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(16)
    yy, xx = np.mgrid[0:96, 0:80]
    mri = (yy * 523 + xx * 97 + rng.integers(0, 4000, (96, 80))).astype(np.int64) % 65536
    return {"mri16": mri.astype(np.uint16),
            "f32": (np.sin(yy / 7.0) * np.cos(xx / 5.0) + rng.normal(0, 0.05, (96, 80))).astype(np.float32)}


def _level0(st, name, src):
    from qpyr.ops.unpack import to_source_array

    return to_source_array(st.read(name, [0])[0], src.dtype.name)[..., 0]


def test_the_default_policy_stores_16_bit_and_float_sources_exactly(tmp_path, capsys):
    src = _deep_arrays()
    st = qpyr.pack(dict(src, u8=np.zeros((32, 32, 3), np.uint8)), str(tmp_path / "deep.qpyr"), levels=2)
    for name, a in src.items():
        assert np.array_equal(_level0(st, name, a), a), name
        assert all(lv["encoding"].startswith("lossless") for lv in st.item_info(name)["levels"])
    assert not st.item_info("u8")["levels"][0]["encoding"].startswith("lossless")  # 8-bit: lossy default
    assert main(["info", st.url, "--items"]) == 0
    assert "lossless" in capsys.readouterr().out  # info names the encoding per item and level


def test_an_explicit_lossy_policy_is_still_lossy_for_16_bit_sources(tmp_path):
    a = _deep_arrays()["mri16"]
    st = qpyr.pack({"mri16": a}, str(tmp_path / "lossy.qpyr"), levels=2, policy="quality:ssim=0.95")
    assert not np.array_equal(_level0(st, "mri16", a), a)


def test_cli_default_policy_keeps_a_16_bit_png_exact(tmp_path):
    a = _deep_arrays()["mri16"]
    Image.fromarray(a).save(tmp_path / "mri.png")
    out = tmp_path / "s.qpyr"
    assert main(["pack", str(tmp_path / "mri.png"), "-o", str(out), "--levels", "2", "--quiet"]) == 0
    assert np.array_equal(_level0(qpyr.open(str(out)), "mri.png", a), a)


@pytest.mark.parametrize("flag", ["--min-ssim", "--min-psnr"])
def test_a_floor_for_a_level_the_pack_does_not_have_is_an_error(tmp_path, capsys, flag):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "x.png")
    value = "9:0.9" if flag == "--min-ssim" else "9:30"
    rc = main(["pack", str(tmp_path / "x.png"), "-o", str(tmp_path / "s.qpyr"), "--levels", "3", flag, value])
    err = capsys.readouterr().err
    assert rc == 1 and f"{flag} names level 9, but the pack has 3 level(s)" in err, err
    assert not (tmp_path / "s.qpyr" / "zarr.json").exists()
    # a floor for an existing level is accepted
    assert main(["pack", str(tmp_path / "x.png"), "-o", str(tmp_path / "t.qpyr"), "--levels", "3", flag,
                 value.replace("9:", "2:"), "--quiet"]) == 0


@pytest.mark.parametrize("flag", ["--min-ssim", "--min-psnr"])
def test_without_levels_a_floor_for_an_impossible_level_is_an_error(tmp_path, capsys, flag):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "x.png")
    value = "25:0.9" if flag == "--min-ssim" else "25:30"
    rc = main(["pack", str(tmp_path / "x.png"), "-o", str(tmp_path / "s.qpyr"), flag, value])
    err = capsys.readouterr().err
    assert rc == 1 and f"{flag} names level 25, but no image can have it: with --min-side 32" in err, err
    assert not (tmp_path / "s.qpyr" / "zarr.json").exists()


def test_without_levels_a_floor_for_a_level_no_image_reached_warns(tmp_path, capsys):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "x.png")  # levels 0..1
    rc = main(["pack", str(tmp_path / "x.png"), "-o", str(tmp_path / "s.qpyr"), "--min-ssim", "5:0.9", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0 and "qpyr pack: warning: --min-ssim names level 5, but no image of the store has it (levels 0..1)" in err, err
    with pytest.warns(QpyrWarning, match="--min-psnr names level 4"):
        qpyr.pack({"x": np.zeros((64, 64), np.uint8)}, str(tmp_path / "t.qpyr"), min_psnr={4: 30.0})
