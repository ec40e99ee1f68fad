"""SSIM speed benchmark, one core: qpyr's compiled CPU kernel vs its torch implementation.

For every colour photo in ``skimage.data`` (and ``--crops`` random crops of them from
``qpyr.samples.random_crops``, sides ``--lo``..``--hi``), each against its own JPEG
(Pillow, quality 50), prints the megapixels/s of

- ``compiled``: ``qpyr.metrics.ssim`` on CPU tensors (the numba kernel, the default there),
- ``torch``: the same call with ``backend="torch"`` (the shifted-slice torch implementation,
  still the path on accelerators and under autograd),

for the float32 path that packing uses (``fast=True``) and the float64 default, the ratio
compiled / torch (the target is >= 10x), and the largest |difference| from scikit-image's
``structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False)`` over all images, for both backends.

SSIM here is Wang et al. 2004 RGB-SSIM: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
population variances, data range 1.0 on [0, 1] floats, mean over channels. Both backends are
timed interleaved, best of ``--repeat``, with torch limited to one thread. The kernel's
first-use compile (cached on disk afterwards) is done before timing.

    python tools/bench_ssim.py [--crops 24] [--lo 64] [--hi 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from PIL import Image

from qpyr.metrics import ssim
from qpyr.samples import random_crops

#: skimage.data's colour photos (RGB, uint8).
COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "immunohistochemistry")


def colour_photos() -> dict[str, np.ndarray]:
    from qpyr.samples import sample_photo

    return {n: sample_photo(n) for n in COLOUR_PHOTOS}


def jpeg(im: np.ndarray, quality: int = 50) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def to_t(im: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).float() / 255


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=int, default=24, help="random crops of the photos (default 24)")
    ap.add_argument("--lo", type=int, default=64, help="smallest crop side (default 64)")
    ap.add_argument("--hi", type=int, default=512, help="largest crop side (default 512)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings (default 3)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from skimage.metrics import structural_similarity

    photos = colour_photos()
    images = list(photos.items()) + [
        (f"crop{i}", c) for i, c in enumerate(random_crops(list(photos.values()), args.crops, args.lo, args.hi))
    ]
    ssim(to_t(images[0][1][:32, :32]), to_t(images[0][1][:32, :32]))  # compile (or load the cache)
    ssim(to_t(images[0][1][:32, :32]), to_t(images[0][1][:32, :32]), fast=True)

    print("RGB-SSIM (Wang 2004, 11x11 Gaussian sigma 1.5, K1 0.01, K2 0.03, data range 1.0), one core")
    print(f"{len(photos)} skimage.data colour photos + {args.crops} random crops ({args.lo}..{args.hi} px), "
          "each vs its JPEG q50")
    print("  photos: " + ", ".join(f"{n} {im.shape[0]}x{im.shape[1]}" for n, im in photos.items()))
    print("  crops (random_crops seed 0, h x w): "
          + " ".join(f"{im.shape[0]}x{im.shape[1]}" for n, im in images if n.startswith("crop")))
    for fast in (True, False):
        mp = 0.0
        t_comp = t_torch = 0.0
        diff_comp = diff_torch = 0.0
        for _, im in images:
            a, b = to_t(im), to_t(jpeg(im))
            mp += im.shape[0] * im.shape[1] / 1e6
            t_comp += best_of(partial(ssim, a, b, fast=fast), args.repeat)
            t_torch += best_of(partial(ssim, a, b, fast=fast, backend="torch"), args.repeat)
            ref = structural_similarity(
                im.astype(np.float64) / 255, jpeg(im).astype(np.float64) / 255, channel_axis=-1,
                data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            )
            diff_comp = max(diff_comp, abs(float(ssim(a, b, fast=fast)) - ref))
            diff_torch = max(diff_torch, abs(float(ssim(a, b, fast=fast, backend="torch")) - ref))
        label = "float32 (fast=True, packing)" if fast else "float64 (default)"
        print(f"\n{label}: {len(images)} images, {mp:.2f} MP")
        print(f"  compiled {mp / t_comp:8.2f} MP/s   max |diff| vs skimage {diff_comp:.2e}")
        print(f"  torch    {mp / t_torch:8.2f} MP/s   max |diff| vs skimage {diff_torch:.2e}")
        print(f"  ratio compiled / torch ({'float32' if fast else 'float64'} path) "
              f"{t_torch / t_comp:.1f}x (target >= 10x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
