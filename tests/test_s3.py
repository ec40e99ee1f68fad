"""Stores in an S3 bucket: a real S3-API server on loopback (moto, started by the ``s3``
fixture) reached through s3fs — pack, info, verify, read, unpack, DataLoader, I/O accounting,
and clear errors for a missing bucket, bad credentials and an unreachable endpoint."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import qpyr
from qpyr.cli import main
from qpyr.collate import collate_list
from qpyr.errors import StorageError
from qpyr.torch import PyramidDataset, StreamingPyramidDataset


def _opts(so: dict) -> list[str]:
    return [a for k, v in so.items() for a in ("--storage-option", f"{k}={v}")]


@pytest.fixture
def s3_store(s3, small_photos):
    bucket, so = s3
    url = f"{bucket}/photos.qpyr"
    qpyr.pack(small_photos, url, policy="lossless:codec=zstd", levels=3, storage_options=so)
    return url, so


def test_pack_info_verify_read_unpack_through_the_cli_and_api(s3, small_photos, tmp_path, capsys):
    bucket, so = s3
    src = tmp_path / "in"
    src.mkdir()
    import imagecodecs

    for n, a in small_photos.items():
        (src / f"{n}.png").write_bytes(imagecodecs.png_encode(a))
    url = f"{bucket}/cli.qpyr"
    assert main(["pack", str(src), "-o", url, "--levels", "2", "-q", *_opts(so)]) == 0
    assert main(["info", url, "--json", *_opts(so)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["store"] == url and info["levels"] == 2
    assert main(["verify", url, "--decode", *_opts(so)]) == 0
    assert "OK:" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["unpack", url, "-o", str(out), "--level", "0", "-q", *_opts(so)]) == 0
    for n, a in small_photos.items():
        assert np.array_equal(imagecodecs.png_decode((out / f"{n}_l0.png").read_bytes()), a)
    st = qpyr.open(url, storage_options=so)
    local = qpyr.pack(small_photos, str(tmp_path / "local.qpyr"), levels=2)
    assert sorted(st.names) == sorted(f"{n}.png" for n in small_photos)
    for n in small_photos:
        for li, t in st.read(f"{n}.png", region=(5, 7, 60, 90)).items():
            assert torch.equal(t, local.read(n, li, region=(5, 7, 60, 90))[li])


def test_reading_a_level_from_s3_fetches_at_most_its_stored_bytes(s3_store):
    url, so = s3_store
    st = qpyr.open(url, storage_options=so)
    meta = st.io_stats()
    assert meta["requests"] <= 20 and meta["bytes_read"] < 20_000  # manifest + catalog only
    for level in range(3):
        st.reset_io_stats()
        st.read_batch(st.names, level)  # all ranges of the level in one concurrent batch
        io = st.io_stats()
        stored = st.manifest["level_summary"][level]["stored_bytes"]
        assert io["bytes_read"] <= 1.1 * stored, (level, io, stored)
    st.reset_io_stats()
    st.read("coffee", 1)  # index cached: one ranged GET for the item's chunk
    assert st.io_stats()["requests"] == 1
    assert st.io_stats()["bytes_read"] <= st.item_info("coffee")["levels"][1]["stored_bytes"]


def test_dataloader_reads_from_s3_in_forked_workers(s3_store, small_photos):
    url, so = s3_store
    st = qpyr.open(url, storage_options=so)
    ds = PyramidDataset(url, levels=[1], storage_options=so)
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork", collate_fn=collate_list)
    got = {n: t for b in loader for n, t in zip(b["name"], b["levels"][1], strict=True)}
    assert sorted(got) == sorted(small_photos)
    for n, t in got.items():
        assert torch.equal(t, st.read(n, 1)[1])
    sd = StreamingPyramidDataset(url, levels=[2], storage_options=so, batch_size=2, device_decode=True)
    names = [n for b in DataLoader(sd, batch_size=2, num_workers=2, collate_fn=collate_list) for n in b["name"]]
    assert names == [st.names[i] for i in sd.epoch_order(0)]


def test_missing_bucket_bad_credentials_and_unreachable_endpoint_are_clear_errors(s3_store, s3_server, capsys):
    url, so = s3_store
    with pytest.raises(StorageError, match="bucket of 's3://qpyr-does-not-exist/x.qpyr' does not exist"):
        qpyr.open("s3://qpyr-does-not-exist/x.qpyr", storage_options=so)
    assert main(["info", "s3://qpyr-does-not-exist/x.qpyr", *_opts(so)]) == 1
    assert "does not exist" in capsys.readouterr().err

    st = qpyr.open(url, storage_options=so)  # opened while credentials were still accepted
    s3_server.require_auth(True)
    bad = dict(so, key="AKIAWRONGWRONGWRONG", secret="wrong")
    with pytest.raises(StorageError, match="access denied.*Check the credentials"):
        qpyr.open(url, storage_options=bad)
    with pytest.raises(StorageError, match="access denied"):
        st.read("coffee", 2)  # a read in flight when credentials stop working
    s3_server.require_auth(False)

    from s3server import free_port

    dead = dict(so, endpoint_url=f"http://127.0.0.1:{free_port()}",
                config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 1})
    t = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach endpoint .*127.0.0.1.* Is the endpoint reachable"):
        qpyr.open(url, storage_options=dead)
    assert time.monotonic() - t < 30
