"""Default-policy benchmark: what `qpyr pack` stores by default vs JPEG pyramids and fp32.

For every photo, builds the pyramid qpyr builds (area filter, automatic level count), then:

- **qpyr default** (``qpyr.policies.DEFAULT_POLICY``): packs all photos into one local store and
  reports the bytes on disk (everything a bucket would bill: data, shard indexes, zarr.json,
  catalog) and the payload bytes (per-item chunk bytes + index entries), each as a ratio to the
  fp32 pyramid (C x H x W x 4 bytes per level), and the lowest RGB-SSIM of any level of any
  photo (the floor must hold everywhere);
- **JPEG q90 pyramid**: every level saved by Pillow (libjpeg-turbo, 4:2:0, optimize=True) at
  quality 90, one file per level: bytes ratio and the spread of per-level SSIM;
- **JPEG at the same floor**: per level, the smallest JPEG quality (4:2:0 and 4:4:4, the
  cheaper) whose RGB-SSIM meets the default policy's floor: the fair peer at equal quality;
- **pack speed**: megapixels of pyramid per second, qpyr pack (default policy, one process,
  after a warm-up pack of one small image: imports and first-call costs are per process, not
  per image) vs Pillow encoding the same levels as JPEG q90.

Quality: RGB-SSIM = Wang 2004 (11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03, population
variances, data range 255, mean over RGB) computed by ``qpyr.metrics.ssim`` (validated against
scikit-image to 1e-4 in tests/test_metrics.py). Bytes are stored bytes.

Usage: python tools/bench_default_policy.py [--policy SPEC] [--photos a,b,...] [--crops N]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch


def load(names: Sequence[str]) -> dict[str, np.ndarray]:
    from qpyr.samples import sample_photo

    return {n: np.ascontiguousarray(sample_photo(n)[..., :3]) for n in names}


def rgb_ssim(a: np.ndarray, b: np.ndarray) -> float:
    from qpyr.metrics import ssim

    ta = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()[None] / 255
    tb = torch.from_numpy(np.ascontiguousarray(b.transpose(2, 0, 1))).float()[None] / 255
    return float(ssim(ta, tb))


def jpeg(img: np.ndarray, q: int, subsampling: int = 2) -> tuple[int, np.ndarray]:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=q, optimize=True, subsampling=subsampling)
    n = buf.tell()
    buf.seek(0)
    return n, np.asarray(Image.open(buf).convert("RGB"))


def jpeg_at_floor(img: np.ndarray, floor: float) -> int:
    """Bytes of the cheapest JPEG (quality 1..100, 4:2:0 or 4:4:4) with RGB-SSIM >= floor."""
    best = math.inf
    for sub in (2, 0):
        lo, hi = 1, 100
        if rgb_ssim(img, jpeg(img, 100, sub)[1]) < floor:
            continue
        while lo < hi:
            mid = (lo + hi) // 2
            if rgb_ssim(img, jpeg(img, mid, sub)[1]) >= floor:
                hi = mid
            else:
                lo = mid + 1
        best = min(best, jpeg(img, hi, sub)[0])
    return int(best) if math.isfinite(best) else -1


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def main(argv: Sequence[str] | None = None) -> int:
    import qpyr
    from qpyr.io.pyramid import build_pyramid
    from qpyr.policies import DEFAULT_POLICY
    from qpyr.samples import SAMPLE_PHOTOS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=DEFAULT_POLICY, help=f"policy to measure (default {DEFAULT_POLICY})")
    ap.add_argument("--floor", type=float, default=0.95, help="SSIM floor for the equal-quality JPEG peer")
    ap.add_argument("--photos", default=",".join(SAMPLE_PHOTOS), help="comma-separated skimage.data photo names")
    ap.add_argument("--crops", type=int, default=0, metavar="N",
                    help="instead of the whole photos, a corpus of N random crops (64..512 px a side) of them, "
                         "so per-bucket metadata is shared as in a real corpus")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    imgs = load(args.photos.split(","))
    if args.crops:
        rng = np.random.default_rng(0)
        srcs = list(imgs.values())
        crops = {}
        for i in range(args.crops):
            src = srcs[i % len(srcs)]
            h, w = (int(rng.integers(64, min(512, s) + 1)) for s in src.shape[:2])
            y, x = int(rng.integers(0, src.shape[0] - h + 1)), int(rng.integers(0, src.shape[1] - w + 1))
            crops[f"crop{i:05d}"] = np.ascontiguousarray(src[y:y + h, x:x + w])
        imgs = crops

    pyrs: dict[str, list[np.ndarray]] = {}
    fp32 = 0
    mpix = 0.0
    for n, img in imgs.items():
        levels = build_pyramid(np.ascontiguousarray(img.transpose(2, 0, 1)))
        pyrs[n] = [np.clip(np.round(lv), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy() for lv in levels]
        fp32 += sum(lv.size * 4 for lv in pyrs[n])
        mpix += sum(lv.shape[0] * lv.shape[1] for lv in pyrs[n]) / 1e6

    # -- qpyr
    with tempfile.TemporaryDirectory() as tmp:
        url = os.path.join(tmp, "bench.qpyr")
        # warm-up (imports, first torch ops, codec tables): a corpus pays them once, not per image
        first = next(iter(imgs.values()))
        qpyr.pack({"warm.png": first[:64, :64].copy()}, os.path.join(tmp, "warm.qpyr"), policy=args.policy,
                  progress=False)
        t = time.perf_counter()
        store = qpyr.pack({f"{n}.png": img for n, img in imgs.items()}, url, policy=args.policy)
        t_qpyr = time.perf_counter() - t
        disk = dir_bytes(url)
        payload = 0
        ssims: list[tuple[str, int, float]] = []
        for n in imgs:
            for lv in store.item_info(f"{n}.png")["levels"]:
                payload += lv["stored_bytes"]
                ssims.append((n, lv["level"], lv["ssim"]))
    worst = min(ssims, key=lambda r: r[2])

    # -- JPEG q90 pyramid and JPEG at the floor
    t = time.perf_counter()
    q90 = [(n, li, *jpeg(lv, 90)) for n, p in pyrs.items() for li, lv in enumerate(p)]
    t_jpeg = time.perf_counter() - t
    q90_bytes = sum(r[2] for r in q90)
    q90_ssim = [rgb_ssim(pyrs[n][li], dec) for n, li, _, dec in q90]
    floor_bytes = [jpeg_at_floor(lv, args.floor) for p in pyrs.values() for lv in p]
    floor_total = sum(b for b in floor_bytes if b > 0)

    what = f"{len(imgs)} crops" if args.crops else f"{len(imgs)} photos ({', '.join(imgs)})"
    print(f"{what}, {sum(len(p) for p in pyrs.values())} levels, "
          f"fp32 pyramid {fp32 / 1e6:.2f} MB; RGB-SSIM Wang 2004")
    print(f"{'what':<44}{'bytes':>11}{'vs fp32':>9}   SSIM of levels")
    print(f"{'qpyr ' + args.policy + ' (store on disk)':<44}{disk:>11}{fp32 / disk:>8.1f}x   "
          f"min {worst[2]:.4f} ({worst[0]} level {worst[1]})")
    print(f"{'qpyr ' + args.policy + ' (payload only)':<44}{payload:>11}{fp32 / payload:>8.1f}x")
    print(f"{'JPEG q90 pyramid (Pillow 4:2:0, optimize)':<44}{q90_bytes:>11}{fp32 / q90_bytes:>8.1f}x   "
          f"{min(q90_ssim):.4f} .. {max(q90_ssim):.4f}")
    print(f"{'JPEG per level at SSIM >= ' + str(args.floor):<44}{floor_total:>11}{fp32 / floor_total:>8.1f}x   "
          f">= {args.floor}")
    print(f"\nqpyr payload / JPEG-at-floor bytes: {payload / floor_total:.3f}   "
          f"(store on disk / JPEG-at-floor: {disk / floor_total:.3f})")
    print(f"pack speed: qpyr {mpix / t_qpyr:.2f} MP/s vs Pillow JPEG q90 {mpix / t_jpeg:.2f} MP/s "
          f"= {t_jpeg / t_qpyr:.3f}x (one process; qpyr includes the quality search, metrics and the store)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
