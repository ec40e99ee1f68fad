"""CLI: every input format, every verb, every bad input, the exit codes and a light start-up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import qpyr
from qpyr.cli import main

RNG = np.random.default_rng(7)


def _store_is_complete(url) -> bool:
    try:
        qpyr.open(str(url))
        return True
    except qpyr.QpyrError:
        return False


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, small_photos):
    d = tmp_path_factory.mktemp("imgs")
    rgb = small_photos["astronaut"]
    Image.fromarray(rgb).save(d / "a.png")
    Image.fromarray(rgb).save(d / "b.jpg", quality=90)
    Image.fromarray(rgb).save(d / "c.webp", lossless=True)
    Image.fromarray(rgb).save(d / "d.bmp")
    Image.fromarray(rgb).save(d / "e.tif")
    Image.fromarray(rgb[..., 0]).save(d / "gray.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(d / "rgba.png")
    g16 = RNG.integers(0, 65536, (23, 17), dtype=np.uint16)
    Image.fromarray(g16).save(d / "gray16.png")
    import imagecodecs

    rgb16 = RNG.integers(0, 65536, (11, 13, 3), dtype=np.uint16)
    (d / "rgb16.png").write_bytes(imagecodecs.png_encode(rgb16))
    import tifffile

    tifffile.imwrite(d / "rgb16.tif", rgb16, photometric="rgb")
    (d / "sub").mkdir()
    np.save(d / "sub" / "f.npy", RNG.normal(size=(9, 7, 2)).astype(np.float32))
    np.save(d / "sub" / "i.npy", RNG.integers(-5, 5, (6, 6), dtype=np.int32))
    return d


EXPECT = {"a.png": "rgb", "b.jpg": None, "c.webp": "rgb", "d.bmp": "rgb", "e.tif": "rgb", "gray.png": "gray",
          "rgba.png": "rgba", "gray16.png": "g16", "rgb16.png": "rgb16", "rgb16.tif": "rgb16", "sub/f.npy": "f", "sub/i.npy": "i"}


def _expected(image_dir, name, small_photos):
    rgb = small_photos["astronaut"]
    kind = EXPECT[name]
    if kind == "rgb":
        return rgb
    if kind == "gray":
        return rgb[..., :1]
    if kind == "rgba":
        return np.dstack([rgb, rgb[..., :1]])
    if kind == "g16":
        return np.asarray(Image.open(image_dir / "gray16.png"))[..., None]
    if kind == "rgb16":
        import imagecodecs

        return imagecodecs.png_decode((image_dir / "rgb16.png").read_bytes())
    if kind in ("f", "i"):
        a = np.load(image_dir / name)
        return a if a.ndim == 3 else a[..., None]
    return None


def test_pack_directory_all_formats_lossless_then_unpack_bit_exact(tmp_path, image_dir, small_photos, capsys):
    store = tmp_path / "s.qpyr"
    assert main(["pack", str(image_dir), "-o", str(store), "--levels", "2", "--policy", "lossless"]) == 0
    out = capsys.readouterr().out
    assert "level" in out and "SSIM" in out
    s = qpyr.open(str(store))
    assert sorted(s.names) == sorted(EXPECT)
    assert s.item_info("gray16.png")["dtype"] == "uint16" and s.item_info("rgb16.tif")["dtype"] == "uint16"
    assert s.item_info("sub/f.npy")["dtype"] == "float32"
    assert main(["verify", str(store)]) == 0
    for fmt, ext in (("png", "png"), ("tiff", "tif"), ("npy", "npy")):
        od = tmp_path / f"out-{fmt}"
        items = [n for n in EXPECT if fmt != "png" or not n.endswith(".npy")]
        args = ["unpack", str(store), "-o", str(od), "--level", "0", "--format", fmt]
        for n in items:
            args += ["--item", n]
        assert main(args) == 0
        for n in items:
            exp = _expected(image_dir, n, small_photos)
            if exp is None:
                continue
            p = od / f"{n.rsplit('.', 1)[0]}_l0.{ext}"
            if fmt == "npy":
                got = np.load(p)
            elif fmt == "tiff":
                import tifffile

                got = tifffile.imread(p)
            else:
                import imagecodecs

                got = imagecodecs.png_decode(p.read_bytes())
            got = got if got.ndim == 3 else got[..., None]
            np.testing.assert_array_equal(got.astype(exp.dtype) if exp.dtype.kind == "f" else got, exp, err_msg=f"{fmt} {n}")


def test_globs_files_and_info_json(tmp_path, image_dir, capsys):
    store = tmp_path / "g.qpyr"
    assert main(["pack", str(image_dir / "*.png"), str(image_dir / "b.jpg"), "-o", str(store), "--policy", "int8", "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["info", str(store), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["items"] == 6 and d["policy"] == "int8" and d["total_bytes"] == qpyr.open(str(store)).total_bytes
    for lv in d["level_summary"]:
        for key in ("level", "shape_min", "dtype", "encoding", "stored_bytes", "psnr", "ssim", "ratio_vs_fp32", "ratio_vs_uint8"):
            assert key in lv
    assert {it["name"] for it in d["items_detail"]} == {"a.png", "gray.png", "rgba.png", "gray16.png", "rgb16.png", "b.jpg"}
    assert main(["info", str(store)]) == 0
    assert "vs fp32" in capsys.readouterr().out


def _fails(args, capsys, *needles):
    rc = main(args)
    err = capsys.readouterr().err
    assert rc != 0, err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("qpyr "), err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_bad_inputs_give_one_line_errors_and_no_complete_store(tmp_path, capsys):
    out = tmp_path / "s.qpyr"
    _fails(["pack", str(tmp_path / "nope.png"), "-o", str(out)], capsys, "nope.png", "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    _fails(["pack", str(empty), "-o", str(out)], capsys, "empty", "holds no images")
    good = tmp_path / "good.png"
    Image.fromarray(RNG.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(good)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:200])
    _fails(["pack", str(good), str(trunc), "-o", str(out)], capsys, "trunc.png")
    jpg = tmp_path / "bad.jpg"
    Image.fromarray(RNG.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(jpg)
    data = jpg.read_bytes()
    jpg.write_bytes(data[:len(data) // 3])
    _fails(["pack", str(jpg), "-o", str(out)], capsys, "bad.jpg")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(RNG.integers(0, 255, 300, dtype=np.uint8)))
    _fails(["pack", str(junk), "-o", str(out)], capsys, "junk.png")
    z = tmp_path / "zero.npy"
    np.save(z, np.zeros((0, 5), np.float32))
    _fails(["pack", str(z), "-o", str(out)], capsys, "zero.npy", "non-empty")
    nan = tmp_path / "nan.npy"
    a = RNG.normal(size=(8, 8)).astype(np.float32)
    a[3, 3] = np.nan
    a[1, 1] = np.inf
    np.save(nan, a)
    _fails(["pack", str(nan), "-o", str(out)], capsys, "nan.npy", "NaN/Inf", "--nonfinite")
    assert not _store_is_complete(out)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(big)
    _fails(["pack", str(big), "-o", str(out), "--max-pixels", "100000"], capsys, "big.png", "exceeds the limit")
    assert not _store_is_complete(out)
    assert not out.exists() or not any(out.iterdir())
    # documented alternative for NaN: replace
    assert main(["pack", str(nan), "-o", str(out), "--nonfinite", "replace", "--policy", "lossless", "-q"]) == 0
    got = qpyr.open(str(out)).read("nan.npy", [0])[0][0].numpy()
    assert got[3, 3] == 0.0 and got[1, 1] == np.nanmax(np.where(np.isfinite(a), a, np.nan))
    # existing output without --overwrite
    _fails(["pack", str(good), "-o", str(out)], capsys, "already holds a qpyr store", "--overwrite")
    assert main(["pack", str(good), "-o", str(out), "--overwrite", "-q"]) == 0
    # bad policy
    _fails(["pack", str(good), "-o", str(tmp_path / "p.qpyr"), "--policy", "int3"], capsys, "Unknown policy 'int3'", "lossless")
    _fails(["pack", str(good), "-o", str(tmp_path / "p.qpyr"), "--policy", "int8:bits=3"], capsys, "bits", "scheme")
    _fails(["pack", str(good), "-o", str(tmp_path / "p.qpyr"), "--policy", "mixed:fp16_min=10,int8_min=64"], capsys, "in order")


def test_broken_stores_fail_clearly(tmp_path, capsys):
    url = tmp_path / "s.qpyr"
    qpyr.pack({"img": RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)}, str(url), levels=2)
    bad = tmp_path / "bad.qpyr"
    shutil.copytree(url, bad)
    doc = json.loads((bad / "zarr.json").read_text())
    doc["attributes"]["qpyr"]["format_version"] = "9.0"
    (bad / "zarr.json").write_text(json.dumps(doc))
    _fails(["info", str(bad)], capsys, "format_version 9.0 is not supported")
    (bad / "zarr.json").write_text("{not json")
    _fails(["verify", str(bad)], capsys, "malformed JSON")
    _fails(["info", str(tmp_path / "missing.qpyr")], capsys, "not a qpyr store")
    # altered chunk bytes: verify names item, level and chunk; exit 1
    shard = next(p for p in (url / "levels" / "1").rglob("*") if p.is_file() and "/c/" in p.as_posix())
    data = bytearray(shard.read_bytes())
    from qpyr.format.heap import span

    used = int(qpyr.open(str(url)).catalog.shards[1][0, 2])
    data[span(used - 6, used - 5)[0]] ^= 0x55  # a byte of the level's (last) tile, before its crc
    shard.write_bytes(bytes(data))
    assert main(["verify", str(url)]) == 1
    out = capsys.readouterr().out
    assert "CORRUPT: item 'img' level 1: chunk (0, 0)" in out and "crc32c" in out and "FAILED" in out
    _fails(["unpack", str(url), "-o", str(tmp_path / "o")], capsys, "'img' level 1", "crc32c")


def test_unpack_never_writes_outside_output_dir(tmp_path):
    names = ["../escape", "/abs/path", "a/../../b", "nul\x00byte", "CON", "..", "", "x/./y", "C:\\win\\evil"]
    url = tmp_path / "s.qpyr"
    qpyr.pack([(n, np.full((4, 4), i, np.uint8)) for i, n in enumerate(names)], str(url), levels=1)
    out = tmp_path / "deep" / "out"
    assert main(["unpack", str(url), "-o", str(out), "-q"]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".png"]
    assert len(written) == len(names)
    for p in written:
        assert os.path.commonpath([str(out.resolve()), str(p.resolve())]) == str(out.resolve())


def test_installed_entry_point_runs(tmp_path):
    exe = shutil.which("qpyr", path=os.path.dirname(sys.executable)) or shutil.which("qpyr")
    assert exe, "the qpyr console script is not installed"
    img = tmp_path / "x.png"
    Image.fromarray(RNG.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(img)
    r = subprocess.run([exe, "pack", str(img), "-o", str(tmp_path / "s.qpyr"), "--policy", "mixed"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "float16" in r.stdout or "uint8" in r.stdout
    r = subprocess.run([exe, "verify", str(tmp_path / "nonexistent")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "error" in r.stderr
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("qpyr ")


def test_parser_and_help_import_no_heavy_module():
    """``qpyr --version`` and ``qpyr VERB --help`` build the parser from argparse alone: no torch,
    numpy, zarr, fsspec or policies (checked in sys.modules, not by timing)."""
    code = (
        "import sys, contextlib, io\n"
        "from qpyr.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['--version']) == 0\n"
        "    for verb in ('pack', 'unpack', 'info', 'verify', 'demo', 'estimate', 'plan'):\n"
        "        assert main([verb, '--help']) == 0, verb\n"
        "heavy = ('torch', 'numpy', 'zarr', 'fsspec', 'numba', 'PIL', 'qpyr.policies', 'qpyr.io.storage')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_help_names_the_library_defaults_and_the_exit_codes(capsys):
    """The parser's copies of the library defaults (it does not import their modules) match them."""
    from qpyr.cli import _common
    from qpyr.io.inputs import DEFAULT_PIXEL_LIMIT
    from qpyr.policies import DEFAULT_POLICY, POLICIES

    assert _common.HELP_DEFAULT_POLICY == DEFAULT_POLICY
    assert _common.HELP_PIXEL_LIMIT == DEFAULT_PIXEL_LIMIT
    assert list(_common.HELP_POLICIES) == list(POLICIES)
    assert main(["pack", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default {DEFAULT_POLICY})" in out and "lossless: every level exact in the source dtype;" in out
    assert "exit status: 0 ok; 1 error" in out and "2 usage error" in out and "130 interrupted" in out


def test_one_exit_code_contract_for_every_verb(tmp_path, capsys):
    """A qpyr error exits 1 with one line on stderr for every verb; argparse usage errors exit 2."""
    missing = str(tmp_path / "missing.qpyr")
    for argv in (["info", missing], ["verify", missing], ["unpack", missing, "-o", str(tmp_path / "o")],
                 ["estimate", str(tmp_path / "nope")], ["plan", str(tmp_path / "nope.png"), "--policy", "int8"],
                 ["pack", str(tmp_path / "nope.png"), "-o", str(tmp_path / "s.qpyr")],
                 ["info", missing, "--storage-option", "novalue"]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"qpyr {argv[0]}: error: "), (argv, err)
    for argv in (["info"], ["pack", "x.png"], ["estimate", "x", "--sample", "0"], ["frobnicate"], []):
        assert main(argv) == 2, argv
        assert "usage: qpyr" in capsys.readouterr().err
