"""The package type-checks (``mypy qpyr``, settings in pyproject.toml): typed code stays typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_package_type_checks(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "qpyr"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, f"mypy qpyr failed:\n{r.stdout}\n{r.stderr}"
