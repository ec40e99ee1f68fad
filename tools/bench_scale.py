"""Packing at scale: images/s, peak RSS against N, objects per level, and the Dask speed-up.

Packs N = 1,000 and N = 10,000 crops of real photos (scikit-image's sample photos, cropped at
random places and sizes, saved as JPEG q90 files — packing reads them back through the
streamed directory listing, as a real corpus would be read). Every pack runs in a fresh
process so its peak RSS (``ru_maxrss``) is its own. Then the same N = 1,000 corpus is packed on
a 2-worker Dask ``LocalCluster`` (worker processes, one thread each) and the speed-up over one
process is printed, against three single-process settings: torch's default thread pool, one
torch thread, and exactly the tuning a worker process gets (``writer.tune_worker_process``:
one torch thread and larger glibc malloc thresholds).

Targets (issue #5): peak RSS at N = 10k within 1.2x of N = 1k; objects per level ~ N /
items-per-shard; 2-worker Dask >= 1.6x the single-process images/s on a 2-core machine.

    python tools/bench_scale.py                 # N = 1,000 and 10,000
    python tools/bench_scale.py --sizes 1000 --policy int8

The machine's load average is printed with each timing: other processes on a 2-core machine
take cores away from whichever run is being timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, time
import torch
url, src, policy, threads, spt = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if threads == -1:  # exactly what a Dask worker process runs with
    from qpyr.writer import tune_worker_process
    tune_worker_process()
elif threads:
    torch.set_num_threads(threads)
import qpyr
import qpyr.writer  # import everything a pack needs before the baseline is taken
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
qpyr.pack(src, url, policy=policy, overwrite=True, slots_per_task=spt)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "rss_after_import_kib": base, "torch_threads": torch.get_num_threads()}))
"""


def make_corpus(root: Path, n: int, seed: int = 0, side: int = 128, mixed: bool = False) -> None:
    """``n`` JPEG q90 crops (``side`` x ``side``, or 64..192 px a side with ``mixed``) of
    scikit-image's real photos under ``root``, 100 files per sub-folder."""
    import imagecodecs
    import numpy as np
    import skimage.data as skd

    photos = [skd.astronaut(), skd.coffee(), skd.chelsea(), skd.rocket(), skd.stereo_motorcycle()[0],
              skd.retina()]
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = photos[i % len(photos)]
        h, w = (int(x) for x in rng.integers(64, 193, 2)) if mixed else (side, side)
        y, x = int(rng.integers(0, a.shape[0] - h)), int(rng.integers(0, a.shape[1] - w))
        d = root / f"{i // 100:04d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"crop{i:06d}.jpg").write_bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(a[y:y + h, x:x + w]), level=90))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pack_in_child(src: Path, url: Path, policy: str, threads: int, spt: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(url), str(src), policy, str(threads), str(spt)],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def objects_per_level(url: Path) -> list[dict]:
    import qpyr
    from qpyr.layout import BucketSpec

    st = qpyr.open(str(url))
    m = st.manifest
    out = []
    for li in range(m["levels"]):
        objs = [p for p in (url / "levels" / str(li)).rglob("*") if p.is_file() and p.name != "zarr.json"]
        shards = [p for p in objs if "/data/c/" in p.as_posix()]
        ks = sorted({BucketSpec.from_dict(b).items_per_shard for b in m["buckets"] if b["level"] == li})
        items = m["level_summary"][li]["items"]
        buckets = sum(1 for b in m["buckets"] if b["level"] == li)
        out.append({"level": li, "items": items, "buckets": buckets, "objects": len(objs), "shards": len(shards),
                    "items_per_shard": ks, "items_per_object": round(items / max(1, len(objs)), 1)})
    return out


def dask_speedup(src: Path, tmp: Path, policy: str, spt: int, n: int, repeats: int) -> None:
    from distributed import Client, LocalCluster

    import qpyr

    print(f"\n== Dask: {n} items, 2 worker processes x 1 thread vs one process (best of {repeats}) ==")
    labels = {0: "torch default threads", 1: "1 torch thread", -1: "tuned like a worker"}
    singles = {}
    for threads in labels:
        best = min(pack_in_child(src, tmp / "one.qpyr", policy, threads, spt)["seconds"] for _ in range(repeats))
        singles[threads] = best
        print(f"one process ({labels[threads]}): {n / best:8.1f} img/s  ({best:.2f} s)  load {load()}")
    t = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    print(f"cluster start: {time.perf_counter() - t:.1f} s (not counted)")
    try:
        warm = tmp / "warm"
        make_corpus(warm, 8, seed=99)
        qpyr.pack(str(warm), str(tmp / "warm.qpyr"), policy=policy, overwrite=True, client=client, slots_per_task=4)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            qpyr.pack(str(src), str(tmp / "many.qpyr"), policy=policy, overwrite=True, client=client, slots_per_task=spt)
            times.append(time.perf_counter() - t)
        best = min(times)
        print(f"2-worker Dask cluster:     {n / best:8.1f} img/s  ({best:.2f} s)  load {load()}")
        for threads, s in singles.items():
            print(f"speed-up over one process ({labels[threads]}): {s / best:.2f}x   (target >= 1.6x)")
    finally:
        client.close()
        cluster.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--policy", default="lossless", help="pack policy (default lossless, qpyr's default)")
    ap.add_argument("--slots-per-task", type=int, default=256, help="default: qpyr's default, 256")
    ap.add_argument("--side", type=int, default=128, help="crop side in pixels (default 128)")
    ap.add_argument("--mixed", action="store_true", help="crops of 64..192 px a side (many size-class buckets)")
    ap.add_argument("--repeats", type=int, default=2, help="Dask comparison: best of this many runs")
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--workdir", help="keep corpora and stores here (default: a temporary folder)")
    args = ap.parse_args()
    tmp_ctx = tempfile.TemporaryDirectory() if not args.workdir else None
    tmp = Path(args.workdir or tmp_ctx.name)  # type: ignore[union-attr]
    crops = "64..192 px" if args.mixed else f"{args.side}x{args.side}"
    print(f"qpyr bench_scale: policy {args.policy}, slots_per_task {args.slots_per_task}, {os.cpu_count()} CPUs, "
          f"{crops} crops of scikit-image photos as JPEG q90 files")
    rss = {}
    for n in args.sizes:
        src = tmp / f"corpus-{n}-{'mixed' if args.mixed else args.side}"
        if not src.exists():
            make_corpus(src, n, side=args.side, mixed=args.mixed)
        url = tmp / f"store-{n}.qpyr"
        r = pack_in_child(src, url, args.policy, 0, args.slots_per_task)
        rss[n] = r["rss_kib"]
        print(f"\n== N = {n} ==\npack: {n / r['seconds']:.1f} img/s ({r['seconds']:.1f} s, torch threads "
              f"{r['torch_threads']})  load {load()}")
        print(f"peak RSS: {r['rss_kib'] / 1024:.1f} MiB (after imports: {r['rss_after_import_kib'] / 1024:.1f} MiB)")
        print(f"{'level':>5} {'items':>7} {'buckets':>7} {'objects':>7} {'shards':>6} {'items/shard (k)':>16} {'items/object':>12}")
        for row in objects_per_level(url):
            print(f"{row['level']:>5} {row['items']:>7} {row['buckets']:>7} {row['objects']:>7} {row['shards']:>6} "
                  f"{str(row['items_per_shard']):>16} {row['items_per_object']:>12}")
    if len(rss) > 1:
        lo, hi = min(rss), max(rss)
        print(f"\npeak RSS N={hi} / N={lo}: {rss[hi] / rss[lo]:.3f}x   (target <= 1.2x)")
    if not args.no_dask:
        n = min(args.sizes)
        dask_speedup(tmp / f"corpus-{n}-{'mixed' if args.mixed else args.side}", tmp, args.policy,
                     args.slots_per_task, n, args.repeats)
    if tmp_ctx is not None:
        tmp_ctx.cleanup()


if __name__ == "__main__":
    main()
