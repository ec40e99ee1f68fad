"""Inputs that must be refused, with a clear message and nothing left behind: PNGs whose data
stops early, images past the pixel limit (however far), file names that are not UTF-8."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import qpyr
from qpyr.cli import main
from qpyr.errors import InputError, PixelLimitError


def _chunk(t: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def _short_png(w: int = 2000, h: int = 2000, rows: int = 10) -> bytes:
    """A PNG whose header says ``h`` rows and whose (cleanly ended) zlib stream holds ``rows``."""
    raw = b"".join(b"\x00" + bytes([100]) * (w * 3) for _ in range(rows))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def test_a_png_whose_data_stops_early_is_an_error(tmp_path, capsys):
    p = tmp_path / "short.png"
    p.write_bytes(_short_png())
    with pytest.raises(InputError, match=r"short\.png: truncated or corrupt PNG"):
        qpyr.pack([str(p)], str(tmp_path / "a.qpyr"), policy="lossless")
    assert main(["pack", str(p), "-o", str(tmp_path / "b.qpyr"), "--policy", "lossless", "--quiet"]) != 0
    assert "truncated or corrupt PNG" in capsys.readouterr().err
    assert not (tmp_path / "a.qpyr" / "zarr.json").exists() and not (tmp_path / "b.qpyr" / "zarr.json").exists()


def test_complete_pngs_still_pack(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (33, 17, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "ok.png")
    st = qpyr.pack([str(tmp_path / "ok.png")], str(tmp_path / "ok.qpyr"), policy="lossless")
    got = (st.read("ok.png", levels=[0])[0] * 255).round().byte().numpy()
    assert np.array_equal(got, np.moveaxis(a, -1, 0))


@pytest.mark.parametrize("factor", [1.5, 3, 100])
def test_the_pixel_limit_error_names_max_pixels_however_far_past_the_limit(tmp_path, factor):
    w = h = 64
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "big.png")
    limit = int(w * h / factor)
    with pytest.raises(PixelLimitError) as e:
        qpyr.pack([str(tmp_path / "big.png")], str(tmp_path / "x.qpyr"), pixel_limit=limit)
    msg = str(e.value)
    assert "--max-pixels" in msg and f"{h} x {w}" in msg and str(limit) in msg and "decompression" not in msg.lower()


def test_a_file_name_that_is_not_utf8_is_refused_up_front_and_the_pack_can_be_rerun(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    a = np.zeros((16, 16, 3), np.uint8)
    Image.fromarray(a).save(src / "good.png")
    bad = os.path.join(os.fsencode(src), b"\xff\xfe.png")
    Image.fromarray(a).save(bad.decode("utf-8", "surrogateescape"))
    out = tmp_path / "s.qpyr"
    with pytest.raises(InputError, match="not valid UTF-8"):
        qpyr.pack([str(src)], str(out), policy="lossless")
    assert main(["pack", str(src), "-o", str(out), "--policy", "lossless", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "not valid UTF-8" in err and "Traceback" not in err
    os.remove(bad)
    st = qpyr.pack([str(src)], str(out), policy="lossless")  # nothing half-written blocks the re-run
    assert st.names == ["good.png"]


def test_an_explicit_utf8_name_makes_such_a_file_packable(tmp_path):
    a = np.zeros((16, 16, 3), np.uint8)
    bad = os.path.join(os.fsencode(tmp_path), b"\xff.png").decode("utf-8", "surrogateescape")
    Image.fromarray(a).save(bad)
    st = qpyr.pack([("renamed.png", bad)], str(tmp_path / "s.qpyr"), policy="lossless")
    assert st.names == ["renamed.png"]
