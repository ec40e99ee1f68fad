"""Layout benchmark: format 1.x ("before", ``format="1"``) against 2.0 ("after", the default), same run.

    python tools/bench_layout.py [--crops 240] [--synthetic 10000] [--quick] [--slots-per-task N]
                                 [--synthetic-slots 1024] [--small-shard-kib 256] [--no-s3] [--no-estimate]

What it packs (everything seeded; the photos ship with scikit-image, nothing is downloaded):

1. **Crops**: ``--crops`` random crops of every bundled ``skimage.data`` photo, colour and grey
   (a window of 20-100 % of the photo per side, resized bilinearly to ``h x w``, both sides drawn
   from 64..640, so the aspect is random too), packed with the default policy (no ``policy=``) as
   1.x, as 2.0 and as 2.0 with small shards (``--small-shard-kib``, default 256 KiB, so that level 0
   and level 2 have several shards). Per level: objects (files under ``levels/{l}/``), the level's bytes, the
   bound ``ceil(level bytes / shard_bytes) + pack tasks`` and whether objects <= bound (both for
   all files and for the data objects alone: 2.0 always adds 2 ``zarr.json`` documents per level).
   Metadata share: (every ``zarr.json`` + every catalog object + 1.x shard indexes [16 B per inner
   chunk + 4, from each sharded array's geometry] + 2.0 shard framing [zstd frame and block headers,
   read from the shard objects]) / store bytes; target <= 2 %.
2. **Synthetic**: ``--synthetic`` smooth random images (bicubic upsampling of a 2..8 x 2..8 grid of
   random colours; 80 % RGB, 20 % grey; sides 32..256, random aspect), packed as 1.x and 2.0 with
   ``--synthetic-slots`` items per pack task: objects per level vs the bound, metadata share (target
   <= 0.5 %).
3. **Streaming requests**: the crop stores uploaded to a moto S3 server on 127.0.0.1 (own process,
   behind a WSGI middleware that logs every request it serves); one shuffled epoch of
   ``StreamingPyramidDataset`` of level 0 and of level 2 (``missing_level="skip"``), through a
   DataLoader with 0 and with 2 workers: requests to the level's objects / the level's shards
   (2.0: shard objects; 1.x: data shard objects of the level's buckets), target <= 2.
4. **Random single-item reads**: 50 random items, ``store.read(name, 0)`` on a freshly opened
   store each ("cold"; requests counted by the server after the open) and on one open store
   after ``reset_io_stats`` ("warm", ``io_stats``): GETs per item-level, 2.0 no worse than 1.x.
5. **Estimator dollars**: ``qpyr estimate --json`` (the CLI, in a subprocess) on the crops written
   as PNG files, projected to 1,000,000 images, 4 full reads a month for 12 months, every priced
   storage class: the default policy's total against JPEG q90 files, for each access pattern the
   estimator prices (``access.streaming`` / ``access.random`` of its cost entries; their plain
   total where it has no patterns), ratio target <= 1.0 (moonshot <= 0.8), and the storage-only
   ratio beside it. Whatever the estimator does not give is said, not invented; if it fails,
   ``estimator: unavailable (<error>)``.

Ends with a summary table: measure | 1.x | 2.0 | target | met? (the verdict is 2.0's).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np

#: Bundled 2-D photographs of ``skimage.data`` (no download), colour and grey. Left out: synthetic
#: or graphic images (checkerboard, clock, colorwheel, logo, horse, shepp_logan_phantom,
#: binary_blobs), ``cat`` (the same photo as ``chelsea``), ``lfw_subset`` (25 x 25 faces) and
#: 3-D / downloaded data sets.
COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field",
                 "immunohistochemistry", "retina")
GREY_PHOTOS = ("camera", "brick", "grass", "gravel", "coins", "moon", "page", "text", "microaneurysms", "cell")

MiB = 2**20
ROWS: list[tuple[str, str, str, str, str]] = []  # the summary: measure, 1.x, 2.0, target, met?


def row(measure: str, v1: str, v2: str, target: str, met: bool | None) -> None:
    ROWS.append((measure, v1, v2, target, "-" if met is None else ("yes" if met else "NO")))


def section(title: str) -> None:
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}", flush=True)


# ------------------------------------------------------------------------------------------ inputs
def load_photos() -> dict[str, np.ndarray]:
    from qpyr.samples import sample_photo

    return {n: np.ascontiguousarray(sample_photo(n)) for n in COLOUR_PHOTOS + GREY_PHOTOS}


def make_crops(photos: dict[str, np.ndarray], n: int, lo: int, hi: int, seed: int
               ) -> tuple[dict[str, np.ndarray], list[tuple[str, int, int, int, int, int, int]]]:
    """``n`` crops (as ``qpyr.samples.random_crops`` makes them, recording where each came from):
    a window of ``h/s x w/s`` (zoom ``s`` uniform in [0.2, 1]) resized bilinearly to ``h x w``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = list(photos)
    items: dict[str, np.ndarray] = {}
    log = []
    for i in range(n):
        p = names[int(rng.integers(len(names)))]
        a = photos[p]
        h, w = (int(x) for x in rng.integers(lo, hi + 1, 2))
        s = rng.uniform(0.2, 1.0)
        ph, pw = a.shape[:2]
        ch, cw = min(ph, max(8, int(h / s))), min(pw, max(8, int(w / s)))
        y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        items[f"crop{i:05d}"] = np.ascontiguousarray(
            np.asarray(Image.fromarray(a[y:y + ch, x:x + cw]).resize((w, h), Image.Resampling.BILINEAR)))
        log.append((p, y, x, ch, cw, h, w))
    return items, log


def synthetic(n: int, lo: int, hi: int, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """Smooth random images, generated lazily (``qpyr.pack`` takes a one-shot iterator)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(x) for x in rng.integers(lo, hi + 1, 2))
        gh, gw = (int(x) for x in rng.integers(2, 9, 2))
        c = 3 if rng.random() < 0.8 else 1
        grid = rng.integers(0, 256, (gh, gw, c), dtype=np.uint8)
        im = Image.fromarray(grid if c == 3 else grid[..., 0]).resize((w, h), Image.Resampling.BICUBIC)
        yield f"syn{i:05d}", np.asarray(im)


# ------------------------------------------------------------------------------------------ layout
def files_of(root: str) -> dict[str, int]:
    out = {}
    for r, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(r, f)
            out[os.path.relpath(p, root).replace(os.sep, "/")] = os.path.getsize(p)
    return out


def shard_framing(path: str) -> tuple[int, int]:
    """(used bytes, framing bytes) of a 2.0 shard object, walking its zstd block headers."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(9)
        if head[:4] != (0xFD2FB528).to_bytes(4, "little"):
            raise ValueError(f"{path}: not a zstd frame")
        used = 0
        while True:
            b = f.read(3)
            if len(b) < 3:
                raise ValueError(f"{path}: truncated frame")
            v = int.from_bytes(b, "little")
            last, kind, bsize = v & 1, (v >> 1) & 3, v >> 3
            if kind == 0:
                used += bsize
                f.seek(bsize, 1)
            elif kind == 1:
                f.seek(1, 1)
            else:
                raise ValueError(f"{path}: compressed block in a shard frame")
            if last:
                break
    return used, size - used


def index_bytes_1x(root: str, files: dict[str, int]) -> int:
    """Shard-index bytes of a 1.x store: per chunk object of every ``sharding_indexed`` array,
    16 bytes per inner chunk of the shard's grid (+ 4 for the index's crc32c)."""
    total = 0
    for rel in files:
        if not (rel.startswith("levels/") and rel.endswith("zarr.json")):
            continue
        with open(os.path.join(root, rel)) as f:
            doc = json.load(f)
        if doc.get("node_type") != "array":
            continue
        codecs = doc.get("codecs", [])
        if not codecs or codecs[0].get("name") != "sharding_indexed":
            continue
        cfg = codecs[0]["configuration"]
        outer = doc["chunk_grid"]["configuration"]["chunk_shape"]
        inner = cfg["chunk_shape"]
        n_inner = math.prod(-(-o // i) for o, i in zip(outer, inner, strict=True))
        per = 16 * n_inner + (4 if any(c.get("name") == "crc32c" for c in cfg.get("index_codecs", [])) else 0)
        base = rel[: -len("zarr.json")] + "c/"
        total += per * sum(1 for k in files if k.startswith(base))
    return total


def layout(root: str, store: Any, shard_bytes: int) -> dict[str, Any]:
    """Objects and bytes per level, and the metadata share, of the local store at ``root``."""
    files = files_of(root)
    man = store.manifest
    two = "records" in man
    tasks = int(man["tasks"])
    n_levels = int(man["levels"])
    levels = []
    framing = 0
    for li in range(n_levels):
        pre = f"levels/{li}/"
        mine = {k: v for k, v in files.items() if k.startswith(pre)}
        data = {k: v for k, v in mine.items() if not k.endswith("zarr.json")}
        nbytes = sum(mine.values())
        bound = -(-nbytes // shard_bytes) + tasks
        if two:
            shards = [k for k in data if k.startswith(pre + "c/")]
            fr = sum(shard_framing(os.path.join(root, k))[1] for k in shards)
            framing += fr
            n_shards = len(shards)
        else:
            n_shards = sum(1 for k in data if "/data/c/" in k)
        levels.append({"level": li, "objects": len(mine), "data_objects": len(data), "shards": n_shards,
                       "bytes": nbytes, "bound": bound})
    check = ""
    if two:  # cross-check the framing read from the objects with the catalog's shard tables (internal API)
        try:
            tabs = [np.asarray(store.catalog.shards[li]) for li in range(n_levels)]
            fr_cat = int(sum(int((t[:, 3] - t[:, 2]).sum()) for t in tabs))
            check = "matches" if fr_cat == framing else f"MISMATCH: catalog shard tables say {fr_cat:,}"
        except Exception as e:  # noqa: BLE001 - an internal attribute; the figure above stands without it
            check = f"not checked ({type(e).__name__}: {e})"
    zarr_json = sum(v for k, v in files.items() if k.endswith("zarr.json") and not k.startswith("catalog/"))
    catalog = sum(v for k, v in files.items() if k.startswith("catalog/"))
    index = 0 if two else index_bytes_1x(root, files)
    total = sum(files.values())
    meta = zarr_json + catalog + index + framing
    return {"format": man["format_version"], "tasks": tasks, "levels": levels, "files": len(files), "total": total,
            "zarr_json": zarr_json, "catalog": catalog, "index": index, "framing": framing, "meta": meta,
            "share": meta / total, "shard_bytes": shard_bytes, "total_bytes_api": int(store.total_bytes),
            "root_json": files.get("zarr.json", 0), "items": len(store), "meta_per_item": meta / max(1, len(store)),
            "catalog_per_item": catalog / max(1, len(store)), "bytes_per_item": total / max(1, len(store)),
            "framing_check": check}


def print_layouts(labels: list[str], lays: list[dict[str, Any]]) -> None:
    n_levels = max(len(x["levels"]) for x in lays)
    print(f"{'':>5}" + "".join(f"{lb:^44}" for lb in labels))
    print(f"{'level':>5}" + f"{'objects':>9}{'(data)':>7}{'bytes':>12}{'bound':>7}{'met?':>9}" * len(lays))
    for li in range(n_levels):
        line = f"{li:>5}"
        for x in lays:
            if li < len(x["levels"]):
                r = x["levels"][li]
                ok = ("yes" if r["objects"] <= r["bound"] else "NO") + "/" + ("yes" if r["data_objects"] <= r["bound"]
                                                                                else "NO")
                line += f"{r['objects']:>9}{'(' + str(r['data_objects']) + ')':>7}{r['bytes']:>12,}{r['bound']:>7}{ok:>9}"
            else:
                line += " " * 44
        print(line)
    print("  (bound = ceil(level bytes / shard_bytes) + pack tasks; met? = all files / data objects only)")
    print(f"{'':>5}" + "".join(f"{lb:^44}" for lb in labels))
    for key, what in (("files", "objects in the store"), ("tasks", "pack tasks"), ("total", "store bytes (files)"),
                      ("total_bytes_api", "store.total_bytes"), ("bytes_per_item", "store bytes per item"),
                      ("zarr_json", "zarr.json bytes (not catalog)"), ("root_json", "  of which root (manifest)"),
                      ("catalog", "catalog objects bytes"), ("index", "1.x shard-index bytes"),
                      ("framing", "2.0 shard framing bytes"), ("meta", "metadata bytes"),
                      ("meta_per_item", "metadata bytes per item"), ("catalog_per_item", "  of which catalog")):
        print(f"  {what:<31}" + "".join(f"{x[key]:>14,.0f}" for x in lays))
    print(f"  {'metadata / store bytes':<31}" + "".join(f"{100 * x['share']:>13.3f}%" for x in lays))
    for lb, x in zip(labels, lays, strict=True):
        if x["framing_check"]:
            print(f"  {lb}: framing read from the shard objects vs the catalog's shard tables: {x['framing_check']}")


def all_within(lay: dict[str, Any], key: str) -> bool:
    return all(r[key] <= r["bound"] for r in lay["levels"])


def worst_excess(lay: dict[str, Any], key: str) -> str:
    ex = [r[key] - r["bound"] for r in lay["levels"]]
    tot = sum(r[key] for r in lay["levels"])
    return f"{tot} obj, max {max(ex):+d} vs bound"


def pack_timed(items: Any, url: str, label: str, **kw: Any) -> tuple[Any, float]:
    import qpyr

    t = time.perf_counter()
    st = qpyr.pack(items, url, overwrite=True, **kw)
    dt = time.perf_counter() - t
    print(f"  packed {label}: {len(st)} items, {st.manifest['levels']} levels, format "
          f"{st.manifest['format_version']}, {st.manifest['tasks']} task(s), {dt:.1f} s", flush=True)
    return st, dt


# ------------------------------------------------------------------------------------------ S3
SERVER = r'''
import json, logging, sys, threading
logging.disable(logging.CRITICAL)
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
log = []
def counting(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/__bench__/"):
        with lock:
            body = json.dumps(log).encode()
            if path == "/__bench__/reset":
                log.clear()
                body = b"[]"
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    with lock:
        log.append([environ.get("REQUEST_METHOD", ""), path, environ.get("HTTP_RANGE", "")])
    return app(environ, start_response)
srv = make_server("127.0.0.1", int(sys.argv[1]), counting, threaded=True, request_handler=MotoRequestHandler)
srv.serve_forever()
'''


class CountingS3:
    """moto's S3 server in a child process on 127.0.0.1, every request it serves logged
    (method, path, Range) by a WSGI middleware in front of it."""

    def __init__(self) -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = int(s.getsockname()[1])
        s.close()
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   AWS_DEFAULT_REGION="us-east-1")
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen([sys.executable, "-c", SERVER, str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self.proc.returncode}")
            try:
                self.log()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("moto server did not start within 30 s")
        for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                     ("AWS_DEFAULT_REGION", "us-east-1")):
            os.environ.setdefault(k, v)
        self.so = {"endpoint_url": f"http://127.0.0.1:{self.port}", "key": "testing", "secret": "testing"}

    def _call(self, what: str) -> list[list[str]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/__bench__/{what}", timeout=30) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def log(self) -> list[list[str]]:
        return self._call("log")

    def reset(self) -> None:
        self._call("reset")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def classify(log: list[list[str]], prefix: str, level: int) -> dict[str, int]:
    """Requests of ``log`` (paths ``/bucket/key``) to the store under ``prefix``: to objects of
    ``level`` (not zarr.json), to anything else of the store, and GETs among the first."""
    lv = f"/{prefix}/levels/{level}/"
    out = {"level": 0, "level_get": 0, "other": 0, "all": len(log), "objects": 0}
    seen = set()
    for method, path, _rng in log:
        if path.startswith(lv) and not path.endswith("zarr.json"):
            out["level"] += 1
            out["level_get"] += method == "GET"
            seen.add(path)
        else:
            out["other"] += 1
    out["objects"] = len(seen)
    return out


def stream_epoch(url: str, level: int, so: dict[str, Any], workers: int, batch: int) -> tuple[int, int | None]:
    """(items streamed, in-process io_stats requests or None with workers) of one epoch."""
    import torch

    from qpyr.torch.collate import collate_list
    from qpyr.torch.datasets import StreamingPyramidDataset

    ds = StreamingPyramidDataset(url, levels=[level], batch_size=batch, shuffle=True, seed=0, storage_options=so,
                                 missing_level="skip")
    kw: dict[str, Any] = {"multiprocessing_context": "fork"} if workers else {}
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate_list, **kw)
    n = sum(len(b["name"]) for b in dl)
    return n, (ds.store.io_stats()["requests"] if workers == 0 else None)


def bench_s3(stores: dict[str, tuple[str, Any]], names: list[str], args: argparse.Namespace) -> None:
    import s3fs

    import qpyr

    srv = CountingS3()
    try:
        so = srv.so
        fs = s3fs.S3FileSystem(**so)
        fs.mkdir("bench")
        urls = {}
        t = time.perf_counter()
        for label, (root, _st) in stores.items():
            key = "bench/" + label.replace(" ", "_").replace(".", "").replace("(", "").replace(")", "") + ".qpyr"
            fs.put(root.rstrip("/") + "/", key + "/", recursive=True)
            urls[label] = key
        print(f"moto S3 server on 127.0.0.1:{srv.port} (own process; every request logged by a WSGI middleware); "
              f"stores uploaded in {time.perf_counter() - t:.1f} s: " + ", ".join(f"{k} -> s3://{v}"
                                                                                   for k, v in urls.items()))

        # -- opening a store
        opens = {}
        for label, key in urls.items():
            srv.reset()
            qpyr.open("s3://" + key, storage_options=so)
            opens[label] = len(srv.log())
        print("requests to open a store (manifest + catalog): " + ", ".join(f"{k} {v}" for k, v in opens.items()))

        # -- streaming epochs
        section(f"3. Streaming one shuffled epoch from S3 (StreamingPyramidDataset, batch {args.batch}, default "
                "readahead_bytes)")
        print(f"{'store':<22}{'level':>6}{'workers':>8}{'items':>7}{'shards':>8}{'level reqs':>11}{'GETs':>6}"
              f"{'objs':>6}{'other':>7}{'io_stats':>9}{'reqs/shard':>11}{'time':>7}")
        ratios: dict[tuple[str, int, int], float] = {}
        for label, key in urls.items():
            st = stores[label][1]
            for level in (0, 2):
                if level >= st.manifest["levels"]:
                    continue
                if "records" in st.manifest:
                    shards = int(st.manifest["records"]["shards"][level])
                else:
                    shards = sum(1 for k in files_of(stores[label][0]) if k.startswith(f"levels/{level}/")
                                 and "/data/c/" in k)
                for workers in (0, 2) if args.workers else (0,):
                    srv.reset()
                    t = time.perf_counter()
                    n, io = stream_epoch("s3://" + key, level, so, workers, args.batch)
                    dt = time.perf_counter() - t
                    c = classify(srv.log(), key, level)
                    r = c["level"] / shards
                    ratios[(label, level, workers)] = r
                    print(f"{label:<22}{level:>6}{workers:>8}{n:>7}{shards:>8}{c['level']:>11}{c['level_get']:>6}"
                          f"{c['objects']:>6}{c['other']:>7}{'-' if io is None else io:>9}{r:>11.2f}{dt:>6.1f}s",
                          flush=True)
        print("  level reqs = requests to the level's objects (not zarr.json) the server saw; objs = distinct objects;"
              "\n  other = the rest (opening the store, in every worker); io_stats = the dataset's own count "
              "(workers=0; includes opening);\n  shards = 2.0 shard objects of the level / 1.x data shard objects "
              "of the level's buckets")
        one, two, small = list(urls)[:3]
        for level in (0, 2):
            for workers in (0, 2) if args.workers else (0,):
                k1, k2, k3 = (one, level, workers), (two, level, workers), (small, level, workers)
                if k2 not in ratios:
                    continue
                v2 = f"{ratios[k2]:.2f} / {ratios[k3]:.2f}" if k3 in ratios else f"{ratios[k2]:.2f}"
                met = ratios[k2] <= 2 and (k3 not in ratios or ratios[k3] <= 2)
                row(f"stream L{level} w{workers}: reqs / shards (2.0: 32 MiB / {args.small_shard_kib} KiB)",
                    f"{ratios.get(k1, float('nan')):.2f}", v2, "<= 2", met)

        # -- random single-item reads
        section(f"4. Random single-item reads from S3: {args.random_reads} items, store.read(name, 0)")
        rng = np.random.default_rng(args.seed + 7)
        pick = [names[int(i)] for i in rng.choice(len(names), size=min(args.random_reads, len(names)),
                                                   replace=False)]
        print("items: " + " ".join(pick))
        print(f"{'store':<22}{'cold GETs/item':>15}{'cold reqs/item':>15}{'min..max':>10}{'+ open':>8}"
              f"{'warm reqs/item':>16}{'bytes/item (warm)':>19}{'time':>7}")
        per: dict[str, tuple[float, float]] = {}
        for label, key in urls.items():
            t = time.perf_counter()
            cold, cold_get = [], []
            for name in pick:
                st = qpyr.open("s3://" + key, storage_options=so)
                srv.reset()
                st.read(name, 0)
                lg = srv.log()
                cold.append(len(lg))
                cold_get.append(sum(1 for m, _, _ in lg if m == "GET"))
            st = qpyr.open("s3://" + key, storage_options=so)
            warm, warm_b = [], []
            for name in pick:
                st.reset_io_stats()
                st.read(name, 0)
                stats = st.io_stats()
                warm.append(stats["requests"])
                warm_b.append(stats["bytes_read"])
            dt = time.perf_counter() - t
            per[label] = (float(np.mean(cold_get)), float(np.mean(warm)))
            print(f"{label:<22}{np.mean(cold_get):>15.2f}{np.mean(cold):>15.2f}{f'{min(cold)}..{max(cold)}':>10}"
                  f"{np.mean(cold) + opens[label]:>8.1f}{np.mean(warm):>16.2f}{np.mean(warm_b):>19,.0f}{dt:>6.1f}s", flush=True)
        print("  cold = a freshly opened store per item, requests the server saw after the open (+ open: with the "
              "open's own requests);\n  warm = one open store, io_stats after reset_io_stats")
        one, two = list(urls)[:2]
        row("random read: GETs per item-level, cold", f"{per[one][0]:.2f}", f"{per[two][0]:.2f}", "2.0 <= 1.x",
            per[two][0] <= per[one][0])
        row("random read: requests per item-level, warm", f"{per[one][1]:.2f}", f"{per[two][1]:.2f}", "2.0 <= 1.x",
            per[two][1] <= per[one][1])
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------------ estimator
def bench_estimate(items: dict[str, np.ndarray], work: str, args: argparse.Namespace) -> None:
    from PIL import Image

    from qpyr.policies import DEFAULT_POLICY

    src = os.path.join(work, "crops_png")
    os.makedirs(src, exist_ok=True)
    for n, img in items.items():
        Image.fromarray(img).save(os.path.join(src, n + ".png"))
    cmd = [sys.executable, "-c", "import sys; from qpyr.cli import main; sys.exit(main(sys.argv[1:]))",
           "estimate", src, "--policy", DEFAULT_POLICY, "--sample", str(args.estimate_sample), "--seed", str(args.seed),
           "--count", "1000000", "--reads-per-month", "4", "--months", "12", "--provider", "all", "--json", "-q"]
    print("command: qpyr " + " ".join(cmd[3:]))
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.estimate_timeout)
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip()[-2000:]}")
        doc = json.loads(p.stdout)
        pols = doc["policies"]
        mine = next(x for x in pols if x.get("policy") == DEFAULT_POLICY and not x.get("baseline"))
        jpeg = next(x for x in pols if str(x.get("policy", "")).startswith("jpeg") or x.get("kind") == "jpeg")
    except Exception as e:  # the estimator is being reworked: say so, do not crash
        print(f"estimator: unavailable ({type(e).__name__}: {str(e)[:2000]})")
        row("estimator $ default / JPEG q90 (1M imgs, 4 reads/mo, 12 mo)", "-", "unavailable", "<= 1.0 (0.8)", None)
        return
    dt = time.perf_counter() - t
    usage = doc.get("usage", {})
    print(f"estimate in {dt:.0f} s: schema {doc.get('qpyr_estimate')}, corpus {doc.get('corpus', {}).get('items'):,} "
          f"images, sample {doc.get('sample', {}).get('packed')} packed; usage {usage}")
    def mean(v: Any) -> float:
        return float(v["mean"] if isinstance(v, dict) else v)

    def total(c: dict[str, Any], pattern: str) -> float | None:
        """Dollars over the months of cost entry ``c`` for access ``pattern`` (None: not given)."""
        acc = c.get("access")
        if isinstance(acc, dict) and isinstance(acc.get(pattern), dict) and "total_over_months" in acc[pattern]:
            return mean(acc[pattern]["total_over_months"])
        return None

    patterns = [pt for pt in ("streaming", "random") if any(total(c, pt) is not None for c in mine.get("costs", []))]
    print("access patterns priced: " + (", ".join(patterns) if patterns else
                                        "none separately (one read model: the entry's total_over_months)"))
    print(f"{'':<32}{'bytes/image':>12}{'objects':>12}")
    for x in (mine, jpeg):
        print(f"  {x.get('label', x.get('policy')):<30}{mean(x['bytes_per_image']):>12,.0f}{x.get('objects', 0):>12,}")
    cols = patterns or ["total"]
    head = "".join(f"{'qpyr ' + pt[:6] + ' $':>15}{'JPEG $':>11}{'ratio':>7}" for pt in cols)
    print(f"{'storage class':<34}{head}{'storage-only ratio':>20}")
    costs_j = {c["storage_class"]: c for c in jpeg.get("costs", [])}
    ratios: dict[str, list[tuple[float, str]]] = {pt: [] for pt in cols}
    for c in mine.get("costs", []):
        cj = costs_j.get(c["storage_class"])
        if cj is None:
            continue
        line = f"  {c['storage_class']:<32}"
        for pt in cols:
            a = mean(c["total_over_months"]) if pt == "total" else total(c, pt)
            b = mean(cj["total_over_months"]) if pt == "total" else total(cj, pt)
            if a is None or b is None:  # e.g. JPEG files priced with one model only
                b = mean(cj["total_over_months"]) if b is None else b
                a = mean(c["total_over_months"]) if a is None else a
            ratios[pt].append((a / b if b else float("inf"), c["storage_class"]))
            line += f"{a:>15,.2f}{b:>11,.2f}{ratios[pt][-1][0]:>7.3f}"
        try:
            line += f"{c['storage_total'] / cj['storage_total']:>20.3f}"
        except (KeyError, TypeError, ZeroDivisionError):
            line += f"{'-':>20}"
        print(line)
    for note in doc.get("notes", []):
        print(f"  note: {note}")
    for pt in cols:
        rs = ratios[pt]
        if not rs:
            continue
        lo, hi = min(rs), max(rs)
        label = "" if pt == "total" else f", {pt}"
        row(f"estimator $ default / JPEG q90 (1M imgs, 4 reads/mo, 12 mo{label})", "-",
            f"{lo[0]:.3f} ({lo[1]}) .. {hi[0]:.3f} ({hi[1]})", "<= 1.0 (0.8)", hi[0] <= 1.0)
        print(f"  {pt}: ratio <= 1.0 in {sum(r <= 1.0 for r, _ in rs)} of {len(rs)} storage classes, "
              f"<= 0.8 (moonshot) in {sum(r <= 0.8 for r, _ in rs)}")


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", type=int, default=240, help="photo crops (default 240)")
    ap.add_argument("--synthetic", type=int, default=10000, help="synthetic images (default 10000; 0 skips)")
    ap.add_argument("--slots-per-task", type=int, default=None, help="items per pack task for the crop stores "
                    "(default: qpyr's, 256)")
    ap.add_argument("--synthetic-slots", type=int, default=1024, help="items per pack task for the synthetic stores")
    ap.add_argument("--synthetic-policy", default=None, help="policy for the synthetic stores (default: the default)")
    ap.add_argument("--small-shard-kib", type=int, default=256,
                    help="shard_bytes of the small-shard 2.0 crop store, in KiB (default 256: several shards at "
                         "level 0 and at level 2 of 240 crops)")
    ap.add_argument("--batch", type=int, default=16, help="batch size of the streaming epochs")
    ap.add_argument("--no-workers", dest="workers", action="store_false", help="skip the 2-worker DataLoader epochs")
    ap.add_argument("--random-reads", type=int, default=50)
    ap.add_argument("--estimate-sample", type=int, default=50, help="images the estimator packs (default 50)")
    ap.add_argument("--estimate-timeout", type=float, default=600)
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--no-estimate", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show-crops", action="store_true", help="print every crop (default: the first 10)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 40 crops, 1000 synthetic, 20 random reads, "
                                                         "estimator sample 12")
    ap.add_argument("--dir", default=None, help="work directory, kept (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    if args.quick:
        args.crops, args.synthetic = min(args.crops, 40), min(args.synthetic, 1000)
        args.random_reads, args.estimate_sample = min(args.random_reads, 20), min(args.estimate_sample, 12)
        args.synthetic_slots = min(args.synthetic_slots, 256)

    import torch

    import qpyr
    from qpyr.format import manifest as fmt
    from qpyr.policies import DEFAULT_POLICY

    torch.set_num_threads(1)
    t_all = time.perf_counter()
    work = args.dir or tempfile.mkdtemp(prefix="qpyr-bench-layout-")
    os.makedirs(work, exist_ok=True)
    big = int(fmt.SHARD_BYTES)
    small = args.small_shard_kib * 1024
    try:
        # ---------------------------------------------------------------- 1. crops
        section(f"1. {args.crops} crops of skimage.data photos, default policy ({DEFAULT_POLICY}), 1.x vs 2.0")
        photos = load_photos()
        print("photos (colour): " + ", ".join(f"{n} {photos[n].shape[1]}x{photos[n].shape[0]}" for n in COLOUR_PHOTOS))
        print("photos (grey):   " + ", ".join(f"{n} {photos[n].shape[1]}x{photos[n].shape[0]}" for n in GREY_PHOTOS))
        items, log = make_crops(photos, args.crops, 64, 640, args.seed)
        per_photo = {p: sum(1 for x in log if x[0] == p) for p in photos}
        grey = sum(1 for a in items.values() if a.ndim == 2)
        hs, ws = np.array([x[5] for x in log]), np.array([x[6] for x in log])
        print(f"crops: seed {args.seed}, sides 64..640 (h, w drawn independently), zoom 0.2..1, bilinear; "
              f"{len(items) - grey} colour + {grey} grey; h {hs.min()}..{hs.max()}, w {ws.min()}..{ws.max()}, "
              f"aspect w/h {np.min(ws / hs):.2f}..{np.max(ws / hs):.2f}; {float((hs * ws).sum()) / 1e6:.1f} MP")
        print("crops per photo: " + ", ".join(f"{p} {c}" for p, c in per_photo.items()))
        show = log if args.show_crops else log[:10]
        print("crops (name: photo[y:y+h, x:x+w] -> w x h): " + "; ".join(
            f"crop{i:05d}: {p}[{y}:{y + ch}, {x}:{x + cw}] -> {w}x{h}" for i, (p, y, x, ch, cw, h, w) in enumerate(show))
              + ("" if args.show_crops else " ... (--show-crops prints all)"))

        first = next(iter(items.values()))
        qpyr.pack({"warm": first[:64, :64].copy()}, os.path.join(work, "warm.qpyr"), overwrite=True)  # first-call costs
        kw: dict[str, Any] = {} if args.slots_per_task is None else {"slots_per_task": args.slots_per_task}
        roots = {"1.x": os.path.join(work, "crops-1.qpyr"), "2.0": os.path.join(work, "crops-2.qpyr"),
                 f"2.0 ({args.small_shard_kib} KiB)": os.path.join(work, "crops-2-small.qpyr")}
        s1, t1 = pack_timed(items, roots["1.x"], "1.x", format="1", **kw)
        s2, t2 = pack_timed(items, roots["2.0"], "2.0", **kw)
        s3, t3 = pack_timed(items, roots[f"2.0 ({args.small_shard_kib} KiB)"], f"2.0 shard_bytes={small}",
                            shard_bytes=small, **kw)
        lays = [layout(roots["1.x"], s1, big), layout(roots["2.0"], s2, big),
                layout(list(roots.values())[2], s3, small)]
        print_layouts([f"1.x (bound at {big // MiB} MiB)", f"2.0 ({big // MiB} MiB shards)",
                       f"2.0 ({args.small_shard_kib} KiB shards)"], lays)
        row(f"crops ({args.crops}): objects per level (all files) <= bound", worst_excess(lays[0], "objects"),
            worst_excess(lays[1], "objects"), "<= bound", all_within(lays[1], "objects"))
        row(f"crops ({args.crops}): data objects per level <= bound", worst_excess(lays[0], "data_objects"),
            worst_excess(lays[1], "data_objects"), "<= bound", all_within(lays[1], "data_objects"))
        row(f"crops ({args.crops}): same, {args.small_shard_kib} KiB shards (2.0 column)", "-",
            worst_excess(lays[2], "data_objects"), "<= bound", all_within(lays[2], "data_objects"))
        row(f"crops ({args.crops}): metadata / store bytes", f"{100 * lays[0]['share']:.2f} %",
            f"{100 * lays[1]['share']:.2f} %", "<= 2 %", lays[1]["share"] <= 0.02)
        row(f"crops ({args.crops}): store bytes", f"{lays[0]['total']:,}", f"{lays[1]['total']:,}", "-", None)
        row(f"crops ({args.crops}): pack time (s)", f"{t1:.1f}", f"{t2:.1f}", "-", None)

        # ---------------------------------------------------------------- 2. synthetic
        if args.synthetic:
            pol = args.synthetic_policy
            section(f"2. {args.synthetic} synthetic smooth images (sides 32..256), policy {pol or DEFAULT_POLICY + ' (default)'}, "
                    f"slots_per_task={args.synthetic_slots}, 1.x vs 2.0")
            pkw: dict[str, Any] = {"slots_per_task": args.synthetic_slots}
            if pol:
                pkw["policy"] = pol
            r1, r2 = os.path.join(work, "syn-1.qpyr"), os.path.join(work, "syn-2.qpyr")
            y1, u1 = pack_timed(synthetic(args.synthetic, 32, 256, args.seed + 1), r1, "1.x", format="1", **pkw)
            y2, u2 = pack_timed(synthetic(args.synthetic, 32, 256, args.seed + 1), r2, "2.0", **pkw)
            sl = [layout(r1, y1, big), layout(r2, y2, big)]
            print_layouts([f"1.x (bound at {big // MiB} MiB)", f"2.0 ({big // MiB} MiB shards)"], sl)
            row(f"synthetic ({args.synthetic}): objects per level (all files) <= bound", worst_excess(sl[0], "objects"),
                worst_excess(sl[1], "objects"), "<= bound", all_within(sl[1], "objects"))
            row(f"synthetic ({args.synthetic}): data objects per level <= bound", worst_excess(sl[0], "data_objects"),
                worst_excess(sl[1], "data_objects"), "<= bound", all_within(sl[1], "data_objects"))
            row(f"synthetic ({args.synthetic}): metadata / store bytes", f"{100 * sl[0]['share']:.3f} %",
                f"{100 * sl[1]['share']:.3f} %", "<= 0.5 %", sl[1]["share"] <= 0.005)
            row(f"synthetic ({args.synthetic}): pack time (s)", f"{u1:.1f}", f"{u2:.1f}", "-", None)
            del y1, y2
            shutil.rmtree(r1, ignore_errors=True)
            shutil.rmtree(r2, ignore_errors=True)

        # ---------------------------------------------------------------- 3, 4. S3
        if not args.no_s3:
            section("3./4. S3 (moto, loopback)")
            try:
                bench_s3({k: (roots[k], s) for k, s in zip(roots, (s1, s2, s3), strict=True)}, list(items), args)
            except Exception:
                print("S3 part failed:")
                traceback.print_exc(file=sys.stdout)
                row("S3 streaming / random reads", "-", "FAILED", "-", False)

        # ---------------------------------------------------------------- 5. estimator
        if not args.no_estimate:
            section("5. Estimator: 1,000,000 images, 4 full reads/month, 12 months, every priced storage class")
            bench_estimate(items, work, args)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)

    section(f"Summary (1.x = format=\"1\", 2.0 = the default; met? = 2.0 against the target); "
            f"total {time.perf_counter() - t_all:.0f} s")
    w0 = max(len(r[0]) for r in ROWS)
    w1 = max(8, max(len(r[1]) for r in ROWS))
    w2 = max(8, max(len(r[2]) for r in ROWS))
    w3 = max(8, max(len(r[3]) for r in ROWS))
    print(f"{'measure':<{w0}} | {'1.x':>{w1}} | {'2.0':>{w2}} | {'target':<{w3}} | met?")
    print(f"{'-' * w0}-+-{'-' * w1}-+-{'-' * w2}-+-{'-' * w3}-+-----")
    for m, a, b, t, ok in ROWS:
        print(f"{m:<{w0}} | {a:>{w1}} | {b:>{w2}} | {t:<{w3}} | {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
