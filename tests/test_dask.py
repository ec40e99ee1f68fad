"""Distributed packing on a real Dask ``LocalCluster`` of two worker *processes*.

The store a cluster writes must be the store one process writes: same objects, byte for byte
(except the root document's ``created`` time), so it decodes identically.
"""

from __future__ import annotations

import json
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

import qpyr
from qpyr.cli import main
from qpyr.errors import InputError
from qpyr.ops.verify import verify

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def crops(photos):
    """24 crops of real photos, mixed sizes (several buckets), plus a grey one."""
    rng = np.random.default_rng(3)
    out = {}
    names = list(photos)
    for i in range(24):
        a = photos[names[i % len(names)]]
        h, w = (int(x) for x in rng.integers(40, 120, 2))
        y, x = int(rng.integers(0, a.shape[0] - h)), int(rng.integers(0, a.shape[1] - w))
        out[f"{names[i % len(names)]}/{i:02d}.png"] = np.ascontiguousarray(a[y:y + h, x:x + w])
    out["grey.png"] = np.ascontiguousarray(out["astronaut/00.png"][..., 0])
    return out


def _objects(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _manifest_sans_time(doc: bytes) -> dict:
    m = json.loads(doc)["attributes"]["qpyr"]
    m.pop("created")
    return m


@pytest.mark.parametrize("policy", ["int8", "mixed"])
def test_cluster_pack_equals_single_process_pack(tmp_path, client, crops, policy):
    one = qpyr.pack(crops, str(tmp_path / "one.qpyr"), policy=policy, slots_per_task=4)
    many = qpyr.pack(crops, str(tmp_path / "many.qpyr"), policy=policy, slots_per_task=4, client=client)
    a, b = _objects(tmp_path / "one.qpyr"), _objects(tmp_path / "many.qpyr")
    assert sorted(a) == sorted(b)
    assert [k for k in a if k != "zarr.json" and a[k] != b[k]] == []
    assert _manifest_sans_time(a["zarr.json"]) == _manifest_sans_time(b["zarr.json"])
    assert many.manifest["tasks"] == 7  # 25 items, 4 per task
    for n in one.names:
        x, y = one.read(n), many.read(n)
        assert x.keys() == y.keys() and all(bool((x[li] == y[li]).all()) for li in x)
    assert verify(many, decode=True).ok
    # every task ran on a worker process with one torch thread (no oversubscription)
    assert set(client.run(lambda: __import__("torch").get_num_threads()).values()) == {1}


def test_in_flight_tasks_are_bounded_and_arguments_are_small(tmp_path, client, crops):
    class Spy:
        """A client that reports one worker thread (so one task at a time is in flight)."""

        def __init__(self) -> None:
            self.futures: list = []
            self.most = 0
            self.arg_sizes: list[int] = []

        def nthreads(self):
            return {"w": 1}

        def submit(self, fn, *args, **kw):
            import pickle

            self.arg_sizes.append(len(pickle.dumps(args[:2] + args[3:])))  # all but the task's refs
            fut = client.submit(fn, *args, **kw)
            self.futures.append(fut)
            self.most = max(self.most, sum(not f.done() for f in self.futures))
            return fut

    spy = Spy()
    src = tmp_path / "in"
    src.mkdir()
    for n, a in list(crops.items())[:12]:
        (src / n.replace("/", "_")).write_bytes(imagecodecs.png_encode(a))
    st = qpyr.pack(str(src), str(tmp_path / "s.qpyr"), slots_per_task=2, client=spy)
    assert len(st) == 12 and len(spy.futures) == 6
    assert spy.most == 1
    assert max(spy.arg_sizes) < 2000  # url, options, task number: no receipts, no store objects


def test_bad_input_on_a_worker_fails_cleanly(tmp_path, client):
    imgs = {f"ok{i}": np.full((8, 8), i, np.uint8) for i in range(6)}
    imgs["bad"] = np.zeros((0, 3), np.uint8)
    url = tmp_path / "s.qpyr"
    with pytest.raises(InputError, match="non-empty"):
        qpyr.pack(imgs, str(url), slots_per_task=2, client=client)
    assert not url.exists() or not any(url.iterdir())


def test_cli_workers_and_scheduler(tmp_path, client, crops):
    src = tmp_path / "in"
    src.mkdir()
    for n, a in list(crops.items())[:6]:
        (src / n.replace("/", "_")).write_bytes(imagecodecs.png_encode(a))
    addr = client.scheduler.address
    assert main(["pack", str(src), "-o", str(tmp_path / "a.qpyr"), "--scheduler", addr, "-q"]) == 0
    assert main(["pack", str(src), "-o", str(tmp_path / "b.qpyr"), "--workers", "2", "-q"]) == 0
    assert main(["pack", str(src), "-o", str(tmp_path / "c.qpyr"), "-q"]) == 0
    a, b, c = (_objects(tmp_path / f"{x}.qpyr") for x in "abc")
    assert {k: v for k, v in a.items() if k != "zarr.json"} == {k: v for k, v in c.items() if k != "zarr.json"}
    assert {k: v for k, v in b.items() if k != "zarr.json"} == {k: v for k, v in c.items() if k != "zarr.json"}
    for x in "ab":
        assert main(["verify", str(tmp_path / f"{x}.qpyr"), "--decode", "-q"]) == 0
