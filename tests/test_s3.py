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
from qpyr.errors import StorageError
from qpyr.torch.collate import collate_list
from qpyr.torch.datasets import PyramidDataset, StreamingPyramidDataset


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
    assert main(["pack", str(src), "-o", url, "--levels", "2", "--policy", "lossless", "-q", *_opts(so)]) == 0
    assert main(["info", url, "--json", *_opts(so)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["store"] == url and info["levels"] == 2
    assert main(["verify", url, "--decode", *_opts(so)]) == 0
    assert "OK:" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["unpack", url, "-o", str(out), "--level", "0", "-q", *_opts(so)]) == 0
    for n, a in small_photos.items():
        assert np.array_equal(imagecodecs.png_decode((out / f"{n}_l0.png").read_bytes()), a)
    assert main(["demo", "-o", f"{bucket}/demo.qpyr", "--policy", "lossless:codec=zstd", *_opts(so)]) == 0
    assert len(qpyr.open(f"{bucket}/demo.qpyr", storage_options=so)) == 5
    st = qpyr.open(url, storage_options=so)
    local = qpyr.pack(small_photos, str(tmp_path / "local.qpyr"), levels=2, policy="lossless")
    assert sorted(st.names) == sorted(f"{n}.png" for n in small_photos)
    for n in small_photos:
        for li, t in st.read(f"{n}.png", region=(5, 7, 60, 90)).items():
            assert torch.equal(t, local.read(n, li, region=(5, 7, 60, 90))[li])


def test_reading_a_level_from_s3_fetches_at_most_its_stored_bytes(s3_store, small_photos):
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
    # a level with quantization-parameter side arrays (per-block scale/zero-point)
    bucket = url.rsplit("/", 1)[0]
    blk = qpyr.pack({f"{n}-{k}": np.roll(a, 5 * k, axis=0) for k in range(2) for n, a in small_photos.items()},
                    f"{bucket}/block.qpyr", policy="int8:granularity=block,block=8", levels=2, storage_options=so)
    for level in range(2):
        sb = qpyr.open(blk.url, storage_options=so)
        sb.reset_io_stats()
        sb.read_batch(sb.names, level)
        assert sb.io_stats()["bytes_read"] <= 1.1 * sb.manifest["level_summary"][level]["stored_bytes"]
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


def test_format_2_streaming_epoch_is_one_get_per_shard_and_a_random_read_one_get(s3, s3_server, photos):
    """Format 2.0 on the S3 server, counted by the server: a streaming epoch of a level fetches
    every shard of it once per reader process (one GET each); a map-style read of one
    item-level is one ranged GET of its record."""
    bucket, so = s3
    url = f"{bucket}/crops.qpyr"
    rng = np.random.default_rng(3)
    crops = {}
    for k in range(36):
        a = list(photos.values())[k % len(photos)]
        h, w = int(rng.integers(48, 200)), int(rng.integers(48, 200))
        y, x = int(rng.integers(0, a.shape[0] - h)), int(rng.integers(0, a.shape[1] - w))
        crops[f"c{k:02d}"] = np.ascontiguousarray(a[y:y + h, x:x + w])
    st = qpyr.pack(crops, url, policy="int8", levels=3, storage_options=so, shard_bytes=2**16, slots_per_task=12)
    key = "/" + url[len("s3://"):]
    for level in (0, 2):
        shards = st.manifest["records"]["shards"][level]
        before = s3_server.gets(f"{key}/levels/{level}/c/")
        ds = StreamingPyramidDataset(url, levels=[level], storage_options=so, batch_size=4, seed=level)
        assert sorted(s["name"] for s in ds) == sorted(crops)
        assert s3_server.gets(f"{key}/levels/{level}/c/") - before == shards >= (3 if level == 0 else 1)
        # two workers: each reads the shards its runs touch, at most once
        before = s3_server.gets(f"{key}/levels/{level}/c/")
        loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_list)
        assert sorted(n for b in loader for n in b["name"]) == sorted(crops)
        assert s3_server.gets(f"{key}/levels/{level}/c/") - before <= 2 * shards
    st = qpyr.open(url, storage_options=so)
    for name in ("c03", "c17", "c35"):
        before = s3_server.gets(f"{key}/levels/0/c/")
        st.read(name, 0)
        assert s3_server.gets(f"{key}/levels/0/c/") - before == 1


def test_missing_bucket_bad_credentials_and_unreachable_endpoint_are_clear_errors(s3_store, s3_server, capsys,
                                                                                  tmp_path, small_photos):
    url, so = s3_store
    with pytest.raises(StorageError, match="bucket of 's3://qpyr-does-not-exist/x.qpyr' does not exist"):
        qpyr.open("s3://qpyr-does-not-exist/x.qpyr", storage_options=so)
    assert main(["info", "s3://qpyr-does-not-exist/x.qpyr", *_opts(so)]) == 1
    assert "does not exist" in capsys.readouterr().err
    np.save(tmp_path / "a.npy", small_photos["coffee"])
    assert main(["pack", str(tmp_path / "a.npy"), "-o", "s3://qpyr-does-not-exist/x.qpyr", "-q", *_opts(so)]) == 1
    assert "qpyr pack: error:" in (err := capsys.readouterr().err) and "does not exist" in err

    st = qpyr.open(url, storage_options=so)  # opened while credentials were still accepted
    s3_server.require_auth(True)
    bad = dict(so, key="AKIAWRONGWRONGWRONG", secret="wrong")
    with pytest.raises(StorageError, match="access denied.*Check the credentials"):
        qpyr.open(url, storage_options=bad)
    with pytest.raises(StorageError, match="access denied"):
        st.read("coffee", 2)  # a read in flight when credentials stop working
    assert main(["verify", url, *_opts(bad)]) == 1
    assert "access denied" in (err := capsys.readouterr().err) and "Check the credentials" in err
    assert main(["pack", str(tmp_path / "a.npy"), "-o", url.replace("photos", "new"), "-q", *_opts(bad)]) == 1
    assert "access denied" in capsys.readouterr().err
    s3_server.require_auth(False)

    from s3server import free_port

    dead = dict(so, endpoint_url=f"http://127.0.0.1:{free_port()}",
                config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 1})
    t = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach endpoint .*127.0.0.1.* Is the endpoint reachable"):
        qpyr.open(url, storage_options=dead)
    assert time.monotonic() - t < 30


def test_transient_s3_errors_are_retried_with_backoff(s3_store, s3_server, monkeypatch):
    """The server itself fails requests (500 InternalError, 503 SlowDown); with botocore and
    s3fs each trying once, what recovers is qpyr's own retry loop, with exponential backoff."""
    import types

    import s3fs

    import qpyr.io.storage as qs

    url, so = s3_store
    ref = qpyr.open(url, storage_options=so)
    want = ref.read_batch(ref.names, 1)
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    once = dict(so, config_kwargs={"retries": {"total_max_attempts": 1}})
    sleeps: list[float] = []
    monkeypatch.setattr(qs, "time", types.SimpleNamespace(sleep=lambda d: (sleeps.append(d), time.sleep(d)),
                                                     monotonic=time.monotonic))

    s3_server.fail_next(2, 500, "InternalError")  # the root document's GET fails twice
    st = qpyr.open(url, storage_options=once)
    assert s3_server.failures_served == 2 and len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2  # 0.1 s doubling, jittered down to half

    sleeps.clear()
    s3_server.fail_next(3)  # 503 SlowDown on 3 of the concurrent ranged GETs of one batch
    got = st.read_batch(st.names, 1)
    assert s3_server.failures_served == 3 and 1 <= len(sleeps) <= 3
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    io = st.io_stats()
    assert io["bytes_read"] <= 1.1 * st.manifest["level_summary"][1]["stored_bytes"] + 20_000  # + root, catalog

    sleeps.clear()
    s3_server.fail_next(1000)  # a persistent failure: 4 retries, then a clear error
    with pytest.raises(StorageError, match=r"levels/2/.* failed after 5 tries: .*injected by the test server"):
        st.read("coffee", 2)
    assert s3_server.failures_served == 5
    assert len(sleeps) == 4 and all(b / 2 <= d <= b for d, b in zip(sleeps, (0.1, 0.2, 0.4, 0.8), strict=True))
    s3_server.fail_next(0)
    assert torch.equal(st.read("coffee", 2)[2], ref.read("coffee", 2)[2])


def test_credentials_come_from_the_usual_environment_variables(s3_store, monkeypatch):
    import s3fs

    url, so = s3_store
    endpoint_only = {"endpoint_url": so["endpoint_url"]}  # no key/secret: AWS_* variables (set by the server)
    assert len(qpyr.open(url, storage_options=endpoint_only)) == 5
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(StorageError, match="Unable to locate credentials.*AWS_ACCESS_KEY_ID"):
        qpyr.open(url, storage_options=endpoint_only)


def test_cli_plan_reads_an_image_from_the_bucket(s3, small_photos, capsys):
    import json

    import fsspec
    import imagecodecs

    bucket, so = s3
    with fsspec.open(f"{bucket}/img/chelsea.png", "wb", **so) as f:
        f.write(imagecodecs.png_encode(small_photos["chelsea"]))
    assert main(["plan", f"{bucket}/img/chelsea.png", "--policy", "adaptive", "--json", "--levels", "2", *_opts(so)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["shape"][0] == 3 and len(d["levels"]) == 2
