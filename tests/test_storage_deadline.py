"""Storage operations have one deadline: a frozen S3 endpoint (a real moto server process,
stopped with SIGSTOP) fails a read with a StorageError naming the key and the wait, instead of
stalling for botocore's and s3fs's stacked retries; the endpoint answers again once thawed."""

from __future__ import annotations

import re

import numpy as np
import pytest

import qpyr
from qpyr.errors import InputError, StorageError
from qpyr.io import storage as qs
from qpyr.io.storage import DEADLINE_ENV, ObjectStore

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of stalling the suite


@pytest.fixture
def frozen_able_s3():
    pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    from s3server import S3ServerProcess

    server = S3ServerProcess().start()
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        fs = s3fs.S3FileSystem(**server.storage_options())
        fs.mkdir("qpyr-frozen")
        yield server, "s3://qpyr-frozen/store.qpyr", server.storage_options()
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def test_a_frozen_endpoint_fails_within_the_deadline_naming_what_was_fetched(frozen_able_s3, monkeypatch):
    server, url, so = frozen_able_s3
    rng = np.random.default_rng(0)
    qpyr.pack({"a": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)}, url, policy="lossless",
              storage_options=so)
    os_ = ObjectStore(url, so, deadline=3)
    assert os_.read("zarr.json")
    server.freeze()
    try:
        with pytest.raises(StorageError) as e:
            os_.read("zarr.json")
        msg = str(e.value)
        assert "zarr.json" in msg and "3 s storage deadline" in msg and DEADLINE_ENV in msg, msg
        waited = float(re.search(r"waited (\d+\.\d) s", msg).group(1))
        assert 2.5 <= waited < 30, msg  # the deadline, not the backend's stacked retries (minutes)
        with pytest.raises(StorageError, match=r"deadline") as e2:
            os_.read_ranges(["zarr.json", "zarr.json"], [0, 1], [10, 11])
        assert "Reading zarr.json" in str(e2.value)
        # the environment variable reaches readers opened through the public API
        monkeypatch.setenv(DEADLINE_ENV, "2")
        with pytest.raises(StorageError, match=r"2 s storage deadline"):
            qpyr.open(url, storage_options=so)
    finally:
        server.thaw()
    assert qpyr.open(url, storage_options=so).read("a", levels=[0])[0].shape == (3, 64, 64)


def test_qpyr_is_the_only_retry_layer_for_s3(frozen_able_s3):
    _server, url, so = frozen_able_s3
    os_ = ObjectStore(url, so, deadline=5)
    cfg = os_.fs.config_kwargs if hasattr(os_.fs, "config_kwargs") else {}
    assert cfg["retries"] == {"total_max_attempts": 1} and cfg["connect_timeout"] <= 5 and cfg["read_timeout"] <= 5
    assert os_.fs.retries == 1
    # options the caller sets win
    mine = ObjectStore(url, dict(so, config_kwargs={"connect_timeout": 2, "retries": {"max_attempts": 3}}))
    assert mine.fs.config_kwargs["connect_timeout"] == 2 and mine.fs.config_kwargs["retries"] == {"max_attempts": 3}


def test_deadline_settings_are_checked(monkeypatch, tmp_path):
    monkeypatch.setenv(DEADLINE_ENV, "soon")
    with pytest.raises(InputError, match=DEADLINE_ENV):
        ObjectStore(str(tmp_path))
    monkeypatch.setenv(DEADLINE_ENV, "none")
    assert ObjectStore(str(tmp_path)).deadline is None
    monkeypatch.setenv(DEADLINE_ENV, "7.5")
    assert ObjectStore(str(tmp_path)).deadline == 7.5
    monkeypatch.delenv(DEADLINE_ENV)
    assert ObjectStore(str(tmp_path)).deadline == qs.DEFAULT_DEADLINE
    with pytest.raises(InputError, match="positive"):
        ObjectStore(str(tmp_path), deadline=-1)


def test_the_deadline_travels_with_a_pickled_store(tmp_path):
    import pickle

    os_ = ObjectStore(str(tmp_path), deadline=4)
    assert pickle.loads(pickle.dumps(os_)).deadline == 4
