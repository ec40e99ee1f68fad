"""``tools/make_golden.py`` reproduces every committed codec vector byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

from codec_kit import VECTORS, make_golden

CODEC_SETS = ("dct", "dct-v2", "lossless", "tiles")


def test_check_mode_reproduces_the_committed_codec_vectors(capsys) -> None:
    assert sorted(make_golden().CODEC_SETS) == sorted(CODEC_SETS)
    assert make_golden().main(["--check", *CODEC_SETS]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")


def test_check_mode_reports_a_changed_byte_and_writing_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    shutil.copytree(VECTORS / "tiles", tmp_path / "tiles")
    enc = tmp_path / "tiles" / "01-gray-int4" / "encoded.bin"
    data = bytearray(enc.read_bytes())
    data[-1] ^= 1
    enc.write_bytes(bytes(data))
    assert make_golden().main(["--check", "--root", str(tmp_path), "tiles"]) == 1
    assert "tiles/01-gray-int4: encoded.bin differs" in capsys.readouterr().out
    assert make_golden().main(["--root", str(tmp_path), "tiles"]) == 1  # never regenerated silently
    assert make_golden().main(["--root", str(tmp_path), "--force", "tiles"]) == 0
    assert make_golden().main(["--check", "--root", str(tmp_path), "tiles"]) == 0
