"""Outputs that cannot be written give one clear line naming the path and the cause, a non-zero
exit code, and no traceback."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from qpyr.cli import main


@pytest.fixture
def photo(tmp_path):
    p = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(p)
    return str(p)


def _pack_fails(photo, out, capsys):
    rc = main(["pack", photo, "-o", out, "--policy", "lossless", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_an_output_under_a_file(tmp_path, photo, capsys):
    (tmp_path / "afile").write_text("not a directory")
    err = _pack_fails(photo, str(tmp_path / "afile" / "x.qpyr"), capsys)
    assert "afile' is a file, not a directory" in err and "Choose another output path" in err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_an_output_where_no_directory_can_be_made(photo, capsys):
    err = _pack_fails(photo, "/proc/x.qpyr", capsys)
    assert "Cannot write the store '/proc/x.qpyr'" in err


def test_an_output_in_an_unwritable_directory(tmp_path, photo, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: make the directory immutable instead
        if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("root without chattr +i: no directory it cannot write")
    else:
        ro.chmod(0o555)
    try:
        err = _pack_fails(photo, str(ro / "x.qpyr"), capsys)
        assert f"no permission to write in '{ro}'" in err
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(ro)], capture_output=True)
        ro.chmod(0o755)
