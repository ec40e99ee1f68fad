"""Same inputs and policy, same bytes (DESIGN decision 13), with the default policy.

A pack takes decisions on floating-point values (an SSIM against a floor, a DCT coefficient
against a rounding threshold); multi-threaded kernels may sum in an order that depends on their
thread count. Every pack task therefore computes on one thread, in whatever process it runs. The
test packs the same 40 varied crops of every scikit-image photo once in this process, with 8
torch and 8 BLAS threads set by the caller, and once on a real Dask cluster of two worker
processes (which Dask starts with one BLAS thread each), and compares every object byte for byte.
Before the fix the two differed in 2 of ~400 objects on this corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

import qpyr
from qpyr.policies.threads import single_threaded
from qpyr.samples import random_crops, sample_photo

distributed = pytest.importorskip("distributed")

# every photo of skimage.data (RGB and grey, natural and not)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "camera", "hubble_deep_field",
          "immunohistochemistry", "retina", "cat", "page", "moon", "brick", "grass", "gravel",
          "colorwheel", "logo")


def _objects(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_single_threaded_restores_the_callers_threads() -> None:
    torch.set_num_threads(3)
    try:
        with threadpool_limits(limits=2, user_api="blas"):
            with single_threaded():
                assert torch.get_num_threads() == 1
                assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} <= {1}
            assert torch.get_num_threads() == 3
            assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} <= {2}
    finally:
        torch.set_num_threads(2)


@pytest.mark.timeout(600)
def test_default_policy_pack_is_byte_identical_in_one_process_and_on_dask(tmp_path: Path) -> None:
    crops = {f"c{i:03d}.png": a for i, a in
             enumerate(random_crops([sample_photo(p) for p in PHOTOS], 40, 160, 560, seed=5))}
    assert len({a.shape for a in crops.values()}) > 30 and {a.ndim for a in crops.values()} == {2, 3}
    before = torch.get_num_threads()
    torch.set_num_threads(8)
    try:
        with threadpool_limits(limits=8, user_api="blas"):
            one = qpyr.pack(crops, str(tmp_path / "one.qpyr"), slots_per_task=4)
    finally:
        torch.set_num_threads(before)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        many = qpyr.pack(crops, str(tmp_path / "many.qpyr"), slots_per_task=4, client=client)
    finally:
        client.close()
        cluster.close()
    a, b = _objects(tmp_path / "one.qpyr"), _objects(tmp_path / "many.qpyr")
    assert sorted(a) == sorted(b) and len(a) > 60  # 10 tasks: one shard per task and level, documents, catalog
    assert [k for k in a if k != "zarr.json" and a[k] != b[k]] == []
    ma, mb = (json.loads(x["zarr.json"])["attributes"]["qpyr"] for x in (a, b))
    ma.pop("created")
    mb.pop("created")
    assert ma == mb
    assert one.manifest["policy"] == many.manifest["policy"]
    for n in list(one.names)[::7]:
        x, y = one.read(n), many.read(n)
        assert x.keys() == y.keys() and all(bool(np.array_equal(x[k].numpy(), y[k].numpy())) for k in x)
