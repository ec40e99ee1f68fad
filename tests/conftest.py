"""Shared fixtures: real photos shipped with scikit-image (no downloads) and small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from qpyr.samples import SAMPLE_PHOTOS, sample_photo


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """The five real RGB photos as uint8 [H, W, 3] arrays."""
    return {n: sample_photo(n) for n in SAMPLE_PHOTOS}


@pytest.fixture(scope="session")
def small_photos(photos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Centre crops (<= 128 px) of the photos, for fast tests."""
    out = {}
    for n, a in photos.items():
        h, w = a.shape[:2]
        out[n] = np.ascontiguousarray(a[h // 2 - 64:h // 2 + 64, w // 2 - 80:w // 2 + 50])
    return out


# ==============================================================================================
# S3 on loopback (reader / cloud tests): a real moto S3 server started once per session, a fresh
# bucket per test. Stores are reached through s3fs with storage_options, as on AWS.
# ==============================================================================================
@pytest.fixture(scope="session")
def s3_server():
    """The session's moto S3 server (``tests/s3server.py``); skipped without moto/s3fs."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from s3server import S3Server

    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server):
    """``(bucket_url, storage_options)`` for a fresh bucket; fsspec's instance cache is cleared
    before and after so no test reuses another's session."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    bucket = s3_server.new_bucket()
    try:
        yield f"s3://{bucket}", s3_server.storage_options()
    finally:
        s3_server.require_auth(False)
        s3_server.fail_next(0)
        s3fs.S3FileSystem.clear_instance_cache()
# ============================================================================ end of S3 fixtures
