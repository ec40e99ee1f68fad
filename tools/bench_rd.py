"""Rate-distortion benchmark: qpyr (dct 4:2:0/4:4:4, int8, int4, lossless) vs libjpeg-turbo (Pillow), WebP, JPEG XL, AVIF.

For each photo and codec, sweep the codec's quality knob, measure stored bytes, RGB-SSIM and
PSNR, then interpolate log(bytes) against the metric to find the bytes needed for each target
(RGB-SSIM 0.95 / 0.97 / 0.99, PSNR 35 / 40 dB). Prints every codec's bytes as a ratio of
JPEG 4:2:0's (Pillow, optimize=True) at equal quality, per photo and geometric mean, plus
single-core encode/decode speed of qpyr vs Pillow JPEG.

Quality conventions: RGB-SSIM = skimage ``structural_similarity(a, b, channel_axis=-1,
data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``; PSNR over RGB,
peak 255. Bytes are the whole encoded object (headers included).

Adding a codec row: append ``Row(name, fn, qualities)`` to ``ROWS`` where
``fn(img_hwc_uint8, q) -> (nbytes, decoded_hwc_uint8)``.

qpyr rows: ``-ssim`` rows use qpyr's flat ``ssim`` table family (the default of ``quality:``
policies), the others JPEG's Annex K tables. ``qpyr-dct-420`` / ``-444`` use the default context-modelled rANS entropy coder
(``entropy="ctx"``: smallest, slower to decode); ``qpyr-dct-420-fast`` uses
``entropy="fast"`` (zstd over frequency-major coefficient planes: larger, faster to decode).
The speed section prints both; the small-chunk section compares 32/64/128-pixel crops, where
qpyr's default token models (no per-chunk model header) matter.

A second table places qpyr's quantizer encodings (lossless, int8, int4 per block, fp16: one
operating point each) against JPEG 4:2:0 at equal PSNR.

Usage: python tools/bench_rd.py [--plot rd.png] [--quick] [--no-speed] [--no-small]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

Codec = Callable[[np.ndarray, int], tuple[int, np.ndarray]]
TARGETS: list[tuple[str, float]] = [
    ("ssim", 0.95),
    ("ssim", 0.97),
    ("ssim", 0.99),
    ("psnr", 35.0),
    ("psnr", 40.0),
]
REFERENCE = "jpeg-420"


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    fn: Codec
    qualities: Sequence[int]


def photos() -> dict[str, np.ndarray]:
    from qpyr.samples import SAMPLE_PHOTOS, sample_photo

    return {n: sample_photo(n) for n in SAMPLE_PHOTOS}


def _pil_jpeg(subsampling: int) -> Codec:
    def fn(img: np.ndarray, q: int) -> tuple[int, np.ndarray]:
        from PIL import Image

        bio = io.BytesIO()
        Image.fromarray(img).save(bio, "JPEG", quality=q, optimize=True, subsampling=subsampling)
        b = bio.getvalue()
        return len(b), np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))

    return fn


def _qpyr_dct(**kw: object) -> Codec:
    def fn(img: np.ndarray, q: int) -> tuple[int, np.ndarray]:
        from qpyr.codecs.dct import DctCodec

        codec = DctCodec(quality=q, **kw)  # type: ignore[arg-type]
        chunk = np.ascontiguousarray(img.transpose(2, 0, 1))
        b = codec.encode(chunk)
        return len(b), codec.decode(b, chunk.shape).transpose(1, 2, 0)

    return fn


def _imagecodecs(name: str, **kw: object) -> Codec:
    def fn(img: np.ndarray, q: int) -> tuple[int, np.ndarray]:
        import imagecodecs

        b = getattr(imagecodecs, f"{name}_encode")(img, level=q, **kw)
        return len(b), np.asarray(getattr(imagecodecs, f"{name}_decode")(b))[..., :3]

    return fn


SWEEP = [20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 93, 95, 97, 99, 100]
ROWS: list[Row] = [
    Row("jpeg-420", _pil_jpeg(2), SWEEP),
    Row("jpeg-444", _pil_jpeg(0), SWEEP),
    Row("qpyr-dct-420", _qpyr_dct(chroma="420"), SWEEP),
    Row("qpyr-dct-444", _qpyr_dct(chroma="444"), SWEEP),
    Row("qpyr-dct-444-ssim", _qpyr_dct(chroma="444", family="ssim"), SWEEP),
    Row("qpyr-dct-420-ssim", _qpyr_dct(chroma="420", family="ssim"), SWEEP),
    Row("qpyr-dct-420-fast", _qpyr_dct(chroma="420", entropy="fast"), SWEEP),
    Row("qpyr-jfif-444-ssim", _qpyr_dct(chroma="444", family="ssim", entropy="jfif"), SWEEP),
    Row("qpyr-jfif-420-ssim", _qpyr_dct(chroma="420", family="ssim", entropy="jfif"), SWEEP),
    Row("webp", _imagecodecs("webp", method=4, lossless=False), [20, 40, 60, 75, 85, 90, 95, 99]),
    Row("jpegxl-e7", _imagecodecs("jpegxl", effort=7), [20, 40, 60, 75, 85, 90, 95, 99]),
    Row("avif-s6", _imagecodecs("avif", speed=6), [20, 40, 60, 75, 85, 90, 95]),
]


def rgb_ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            a,
            b,
            channel_axis=-1,
            data_range=255,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def bytes_at(points: list[tuple[int, float, float]], metric: str, target: float) -> float:
    """Interpolate log(bytes) vs metric at ``target``; NaN when the sweep never reaches it."""
    idx = 1 if metric == "ssim" else 2
    pts = sorted((p[idx], math.log(p[0])) for p in points if math.isfinite(p[idx]))
    # keep the monotone upper envelope: the cheapest point reaching each quality level
    ms = [m for m, _ in pts]
    lb = [b for _, b in pts]
    for i in range(len(lb) - 2, -1, -1):
        lb[i] = min(lb[i], lb[i + 1])
    if not ms or target < ms[0] or target > ms[-1]:
        return math.nan
    return math.exp(float(np.interp(target, ms, lb)))


def sweep(rows: Sequence[Row], imgs: dict[str, np.ndarray]) -> dict[str, dict[str, list]]:
    res: dict[str, dict[str, list]] = {}
    for row in rows:
        res[row.name] = {}
        for pname, img in imgs.items():
            pts = []
            for q in row.qualities:
                n, dec = row.fn(img, q)
                pts.append((n, rgb_ssim(img, dec), psnr(img, dec)))
            res[row.name][pname] = pts
    return res


def gmean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else math.nan


def report(res: dict[str, dict[str, list]], pnames: Sequence[str]) -> None:
    ref = res[REFERENCE]
    print("\nBytes at equal quality / JPEG 4:2:0 (libjpeg-turbo via Pillow, optimize=True).")
    print("RGB-SSIM: skimage gaussian sigma=1.5, population cov; PSNR over RGB, peak 255.")
    print("n/a = that codec's sweep (or JPEG-4:2:0's) never reaches the target.")
    for metric, target in TARGETS:
        label = f"RGB-SSIM {target}" if metric == "ssim" else f"PSNR {target:g} dB"
        print(f"\n== {label} ==")
        print(f"{'codec':<18}" + "".join(f"{p:>11}" for p in pnames) + f"{'geomean':>10}")
        refb = [bytes_at(ref[p], metric, target) for p in pnames]
        print(f"{'jpeg-420 B':<18}" + "".join(f"{b:>11.0f}" if math.isfinite(b) else f"{'n/a':>11}" for b in refb))
        for name, per in res.items():
            if name == REFERENCE:
                continue
            ratios = [bytes_at(per[p], metric, target) / rb for p, rb in zip(pnames, refb, strict=False)]
            cells = "".join(f"{r:>11.3f}" if math.isfinite(r) else f"{'n/a':>11}" for r in ratios)
            g = gmean(ratios)
            print(f"{name:<18}{cells}{g:>10.3f}" if math.isfinite(g) else f"{name:<18}{cells}{'n/a':>10}")


def plot(res: dict[str, dict[str, list]], imgs: dict[str, np.ndarray], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pnames = list(imgs)
    fig, axes = plt.subplots(2, len(pnames), figsize=(4 * len(pnames), 7))
    for j, p in enumerate(pnames):
        npx = imgs[p].shape[0] * imgs[p].shape[1]
        for name, per in res.items():
            pts = sorted(per[p])
            bpp = [8 * n / npx for n, _, _ in pts]
            axes[0, j].plot(bpp, [s for _, s, _ in pts], ".-", label=name)
            axes[1, j].plot(bpp, [d for _, _, d in pts], ".-", label=name)
        axes[0, j].set_title(p)
        axes[0, j].set_ylim(0.85, 1.0)
        axes[1, j].set_ylim(28, 50)
        for ax in axes[:, j]:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.grid(True, alpha=0.3)
        axes[1, j].set_xlabel("bits per pixel")
    axes[0, 0].set_ylabel("RGB-SSIM")
    axes[1, 0].set_ylabel("PSNR RGB (dB)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"\nplot written to {path}")


def speed(img: np.ndarray, quality: int = 75, repeat: int = 20) -> None:
    import torch

    torch.set_num_threads(1)
    mp = img.shape[0] * img.shape[1] / 1e6
    chunk = np.ascontiguousarray(img.transpose(2, 0, 1))

    def best(f: Callable[[], object], n: int = repeat) -> float:
        f()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return min(ts)

    print(
        f"\nSpeed, 1 core (torch.set_num_threads(1)), {img.shape[1]}x{img.shape[0]} RGB, "
        f"quality {quality}, best of {repeat} (decode = entropy + torch reconstruct to uint8):"
    )
    for sub, ch in ((2, "420"), (0, "444")):
        for entropy in ("ctx", "fast", "jfif"):
            _speed_one(img, chunk, quality, sub, ch, entropy, best, mp)
    print(
        "  ctx = default entropy mode (context-modelled rANS, smallest); fast = entropy='fast' "
        "(zstd, larger, faster to decode); the torch half is the same for both. jfif = "
        "entropy='jfif' (a baseline JPEG stream decoded by libjpeg-turbo; qpyr's output is a "
        "[C, H, W] view of it). tools/bench_decode.py breaks decode down further."
    )


def _speed_one(
    img: np.ndarray,
    chunk: np.ndarray,
    quality: int,
    sub: int,
    ch: str,
    entropy: str,
    best: Callable[..., float],
    mp: float,
) -> None:
    import torch
    from PIL import Image

    from qpyr.codecs.dct import DctCodec

    codec = DctCodec(quality=quality, chroma=ch, entropy=entropy)  # type: ignore[arg-type]
    data = codec.encode(chunk)
    bio = io.BytesIO()
    Image.fromarray(img).save(bio, "JPEG", quality=quality, optimize=True, subsampling=sub)
    jb = bio.getvalue()

    def pil_dec() -> object:
        im = Image.open(io.BytesIO(jb))
        im.load()
        return np.asarray(im)

    def pil_enc() -> object:
        Image.fromarray(img).save(io.BytesIO(), "JPEG", quality=quality, optimize=True, subsampling=sub)
        return None

    payload = codec.decode_coefficients(data, chunk.shape)
    t_ent = best(lambda: codec.decode_coefficients(data, chunk.shape))
    t_rec = best(lambda: codec.reconstruct(payload, "cpu", torch.uint8))
    t_dec = best(lambda: codec.decode(data, chunk.shape))
    t_enc = best(lambda: codec.encode(chunk), 5)
    p_dec, p_enc = best(pil_dec), best(pil_enc)
    print(
        f"  {ch} {entropy:<4}: qpyr decode {mp / t_dec:6.1f} MP/s ({t_dec * 1e3:.2f} ms: entropy "
        f"{t_ent * 1e3:.2f} + torch reconstruct {t_rec * 1e3:.2f}) | Pillow decode "
        f"{mp / p_dec:6.1f} MP/s ({p_dec * 1e3:.2f} ms) | ratio {p_dec / t_dec:.2f}x"
    )
    print(
        f"            qpyr encode {mp / t_enc:6.1f} MP/s | Pillow encode (optimize) "
        f"{mp / p_enc:6.1f} MP/s | ratio {p_enc / t_enc:.2f}x | bytes {len(data)} vs "
        f"{len(jb)} ({len(data) / len(jb):.3f}x)"
    )


SMALL_SIZES = (32, 64, 128)
SMALL_CROPS = 6  # crops per photo and size, on a fixed grid


def small_chunks(imgs: dict[str, np.ndarray]) -> None:
    """Bytes at equal RGB-SSIM for small chunks (coarse pyramid levels): per photo, the summed
    bytes of SMALL_CROPS crops vs their mean SSIM, interpolated like the main table."""
    rows = [r for r in ROWS if r.name in ("jpeg-420", "qpyr-dct-420", "qpyr-dct-420-fast")]
    targets = (0.95, 0.97)
    print("\nSmall chunks: bytes at equal RGB-SSIM / JPEG 4:2:0 (geomean over photos; crops on a grid).")
    print(f"{'size':<8}{'codec':<18}" + "".join(f"{'SSIM ' + str(t):>12}" for t in targets) + f"{'B/crop q75':>12}")
    for s in SMALL_SIZES:
        res: dict[str, dict[str, list]] = {r.name: {} for r in rows}
        at75: dict[str, list[float]] = {r.name: [] for r in rows}
        for pname, img in imgs.items():
            h, w = img.shape[:2]
            ys = np.linspace(0, h - s, 3).astype(int)
            xs = np.linspace(0, w - s, SMALL_CROPS // 3 + 1).astype(int)[1:]
            crops = [img[y : y + s, x : x + s] for y in ys for x in xs][:SMALL_CROPS]
            for r in rows:
                pts = []
                for q in r.qualities:
                    outs = [r.fn(np.ascontiguousarray(c), q) for c in crops]
                    n = sum(o[0] for o in outs)
                    ss = float(np.mean([rgb_ssim(c, o[1]) for c, o in zip(crops, outs, strict=True)]))
                    pts.append((n, ss, math.nan))
                    if q == 75:
                        at75[r.name].append(n / len(crops))
                res[r.name][pname] = pts
        for r in rows:
            if r.name == REFERENCE:
                cells = "".join(f"{'1':>12}" for _ in targets)
            else:
                cells = ""
                for t in targets:
                    ratios = [
                        bytes_at(res[r.name][p], "ssim", t) / bytes_at(res[REFERENCE][p], "ssim", t) for p in imgs
                    ]
                    g = gmean(ratios)
                    cells += f"{g:>12.3f}" if math.isfinite(g) else f"{'n/a':>12}"
            print(f"{s:<8}{r.name:<18}{cells}{np.mean(at75[r.name]):>12.0f}")


FIXED = [  # qpyr's non-transform encodings: one operating point each (policy spec strings)
    "lossless",
    "int8",
    "int8:granularity=channel",
    "int4:granularity=block,block=8",
    "int4:granularity=block,block=16",
    "fp16",
]


def fixed_points(imgs: dict[str, np.ndarray], res: dict[str, dict[str, list]]) -> None:
    """qpyr's quantizer encodings (no DCT): stored bytes of level 0 as qpyr's writer stores it
    (chunk bytes + index entries + quantization parameters), its RGB-SSIM and PSNR, and the ratio
    to the bytes JPEG 4:2:0 needs for the same PSNR (interpolated on its sweep; n/a above the
    sweep's best PSNR). Quality here is qpyr's own torch metrics (Wang 2004, same settings,
    validated against scikit-image to 1e-4 in tests/test_metrics.py)."""
    from qpyr.policies import parse_policy
    from qpyr.policies.encode import encode_level

    print("\nqpyr quantizer encodings (level 0 of each photo) vs JPEG 4:2:0 at equal PSNR:")
    print("(/jpeg: n/a where the JPEG sweep never reaches that PSNR; /lossless: bytes / qpyr lossless bytes)")
    print(f"{'encoding':<34}{'photo':<12}{'bytes':>10}{'bits/px':>9}{'SSIM':>8}{'PSNR':>8}{'/jpeg':>8}{'/lossless':>10}")
    lossless: dict[str, int] = {}
    for spec in FIXED:
        ratios = []
        for pname, img in imgs.items():
            chw = np.ascontiguousarray(img.transpose(2, 0, 1))
            enc = parse_policy(spec).plan([chw], np.dtype(np.uint8))[0]
            e = encode_level(chw, np.dtype(np.uint8), enc, li=0, slots_per_task=256)
            jb = bytes_at(res[REFERENCE][pname], "psnr", e.psnr) if math.isfinite(e.psnr) else math.nan
            r = e.nbytes / jb if math.isfinite(jb) else math.nan
            ratios.append(r)
            bpp = 8 * e.nbytes / (img.shape[0] * img.shape[1])
            psnr_s = "inf" if not math.isfinite(e.psnr) else f"{e.psnr:.2f}"
            rs = f"{r:>8.2f}" if math.isfinite(r) else f"{'n/a':>8}"
            lossless.setdefault(pname, e.nbytes)  # FIXED[0] is lossless
            print(f"{spec:<34}{pname:<12}{e.nbytes:>10}{bpp:>9.2f}{e.ssim:>8.4f}{psnr_s:>8}{rs}{e.nbytes / lossless[pname]:>10.2f}")
        g = gmean(ratios)
        print(f"{spec:<34}{'geomean':<12}{'':>10}{'':>9}{'':>8}{'':>8}" + (f"{g:>8.2f}" if math.isfinite(g) else f"{'n/a':>8}"))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plot", help="write a PNG of the RD curves here")
    ap.add_argument("--quick", action="store_true", help="JPEG and qpyr rows only")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-small", action="store_true", help="skip the small-chunk table")
    args = ap.parse_args(argv)
    imgs = photos()
    rows = [r for r in ROWS if not args.quick or r.name.startswith(("jpeg-", "qpyr"))]
    t = time.perf_counter()
    res = sweep(rows, imgs)
    report(res, list(imgs))
    print(f"\n(sweep took {time.perf_counter() - t:.0f} s)")
    fixed_points(imgs, res)
    if args.plot:
        plot(res, imgs, args.plot)
    if not args.no_small:
        small_chunks(imgs)
    if not args.no_speed:
        speed(imgs["astronaut"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
