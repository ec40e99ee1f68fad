"""Lossless benchmark: qpyr.lossless vs PNG (Pillow, optimize=True) vs plain zstd-19.

For each real photo (scikit-image: astronaut, chelsea, coffee, rocket, stereo_motorcycle()[0],
retina) prints stored bytes and bits per pixel of

- ``qpyr``      : ``LosslessCodec()`` (default: JPEG-LS/MED, colour transform "auto"), plus the
                  numpy+zstd predictor ``grad`` for comparison,
- ``png``       : Pillow PNG, ``optimize=True`` (HWC interleaved, as PNG stores it),
- ``zstd19``    : zstd level 19 of the raw ``[C, H, W]`` samples (what a plain Zarr chunk holds),

the ratio qpyr/PNG and qpyr/zstd, and single-core encode/decode speed in MB/s of *raw* samples
(best of ``--repeat`` runs). Bytes include every header. A 16-bit section codes 2x2-binned
sums of the photos (real 10-bit content in uint16) against 16-bit PNG (imagecodecs/libpng,
level 9) and zstd-19.

``--tile N`` codes every photo as independent ``N x N`` chunks (as a pyramid level stores
them) instead of whole images.

``--hostile`` times how fast the JPEG-LS stage rejects truncated streams (cut mid-scan, with and
without a trailing EOI marker) against decoding the intact stream: CharLS 2.4 can spend seconds
on a stream that runs out mid-scan, which is why the decoder demands EOI before calling it.

Usage: python tools/bench_lossless.py [--tile 256] [--repeat 3] [--quick] [--no16] [--hostile]
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qpyr.codecs.lossless import LosslessCodec  # noqa: E402

T = TypeVar("T")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "retina")


def load(name: str) -> np.ndarray:
    from qpyr.samples import sample_photo

    return np.ascontiguousarray(sample_photo(name).transpose(2, 0, 1))  # [C, H, W]


def tiles(a: np.ndarray, t: int | None) -> list[np.ndarray]:
    if not t:
        return [a]
    _, h, w = a.shape
    return [np.ascontiguousarray(a[:, y : y + t, x : x + t]) for y in range(0, h, t) for x in range(0, w, t)]


def timed(fn: Callable[[], T], repeat: int) -> tuple[T, float]:
    """fn()'s result and its best wall time over ``repeat`` runs."""
    out, best = fn(), math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def png_bytes(chw: np.ndarray) -> bytes:
    if chw.dtype == np.uint8:
        from PIL import Image

        bio = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0))).save(bio, "PNG", optimize=True)
        return bio.getvalue()
    import imagecodecs

    return bytes(imagecodecs.png_encode(np.ascontiguousarray(chw.transpose(1, 2, 0)), level=9))


def png_decode(b: bytes, dtype: np.dtype) -> np.ndarray:
    if dtype == np.uint8:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(b)))
    import imagecodecs

    return imagecodecs.png_decode(b)


def measure(parts: list[np.ndarray], encode: Callable[[np.ndarray], bytes] | None,
            decode: Callable[[bytes, np.ndarray], np.ndarray], repeat: int, mb: float,
            stored: list[bytes] | None = None) -> tuple[int, float, float]:
    """(bytes, encode MB/s, decode MB/s) over all parts; checks the round trip."""
    te = 0.0
    if encode is not None:
        stored, te = timed(lambda: [encode(p) for p in parts], repeat)
    assert stored is not None
    dec, td = timed(lambda: [decode(b, p) for b, p in zip(stored, parts, strict=True)], repeat)
    for d, p in zip(dec, parts, strict=True):
        np.testing.assert_array_equal(d, _layout(p, d))
    return sum(len(b) for b in stored), (mb / te if te else 0.0), mb / td


def _layout(p: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The reference array in the decoder's layout: [C, H, W] for qpyr, HWC / HW for PNG."""
    if d.shape == p.shape:
        return p
    return p.transpose(1, 2, 0).reshape(d.shape)


def bench(images: dict[str, np.ndarray], tile: int | None, repeat: int) -> None:
    import zstandard

    qpyr, grad = LosslessCodec(), LosslessCodec(predictor="grad")
    zc = zstandard.ZstdCompressor(level=19)
    hdr = (f"{'image':<11}{'shape':>19} {'raw B':>9} | {'qpyr B':>9} {'bpp':>6} {'enc':>5} {'dec':>5} | "
           f"{'grad B':>9} {'bpp':>6} {'dec':>5} | {'png B':>9} {'bpp':>6} {'dec':>5} | {'zstd19 B':>9} {'bpp':>6} | "
           f"{'q/png':>6} {'q/zstd':>6}")
    print(hdr)
    print("-" * len(hdr))
    ratios_png, ratios_zstd = [], []
    for name, a in images.items():
        parts = tiles(a, tile)
        npx = a.shape[1] * a.shape[2]
        mb = a.nbytes / 1e6
        q = measure(parts, qpyr.encode, lambda b, p: qpyr.decode(b, p.shape, p.dtype), repeat, mb)
        g = measure(parts, grad.encode, lambda b, p: grad.decode(b, p.shape, p.dtype), 1, mb)
        png = measure(parts, None, lambda b, p: png_decode(b, p.dtype), repeat, mb, [png_bytes(p) for p in parts])
        z = sum(len(zc.compress(p.tobytes())) for p in parts)
        ratios_png.append(q[0] / png[0])
        ratios_zstd.append(q[0] / z)
        print(f"{name:<11}{str(a.dtype) + str(tuple(a.shape)):>19} {a.nbytes:>9} | "
              f"{q[0]:>9} {8 * q[0] / npx:6.2f} {q[1]:>5.0f} {q[2]:>5.0f} | "
              f"{g[0]:>9} {8 * g[0] / npx:6.2f} {g[2]:>5.0f} | {png[0]:>9} {8 * png[0] / npx:6.2f} {png[2]:>5.0f} | "
              f"{z:>9} {8 * z / npx:6.2f} | {q[0] / png[0]:>6.3f} {q[0] / z:>6.3f}", flush=True)
    print(f"geometric mean ratio  qpyr/png = {_gmean(ratios_png):.3f}   qpyr/zstd19 = {_gmean(ratios_zstd):.3f}")


def hostile(img: np.ndarray, repeat: int) -> None:
    """Rejection time of truncated JPEG-LS payloads vs the intact decode (one core, best of N)."""
    from qpyr.codecs.lossless import HEADER_SIZE, _jpegls_decode
    from qpyr.errors import CodecError

    crop = np.ascontiguousarray(img[:, :64, :64])
    c, h, w = crop.shape
    payload = LosslessCodec(color="none").encode(crop)[HEADER_SIZE:]

    def best(data: bytes) -> tuple[float, str]:
        t, outcome = math.inf, "decoded"
        for _ in range(repeat):
            t0 = time.perf_counter()
            try:
                _jpegls_decode(memoryview(data), c, h, w, 8)
            except CodecError:
                outcome = "rejected"
            t = min(t, time.perf_counter() - t0)
        return t, outcome

    ref, _ = best(payload)
    print(f"\nhostile JPEG-LS streams ({c}x{h}x{w} crop, {len(payload)} B payload): time / intact decode ({ref * 1e3:.3f} ms)")
    for label, data in (("cut at 1/3, no EOI", payload[: len(payload) // 3]),
                        ("cut at 1/3 + EOI", payload[: len(payload) // 3] + b"\xff\xd9"),
                        ("cut at 2/3, no EOI", payload[: 2 * len(payload) // 3])):
        t, outcome = best(data)
        print(f"  {label:<22} {outcome:<9} {t * 1e3:9.3f} ms   {t / ref:7.2f}x")


def _gmean(r: list[float]) -> float:
    return math.exp(sum(map(math.log, r)) / len(r))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tile", type=int, default=None, help="code N x N chunks instead of whole images")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats (best of)")
    ap.add_argument("--quick", action="store_true", help="skip retina (1411x1411)")
    ap.add_argument("--no16", action="store_true", help="skip the 16-bit section")
    ap.add_argument("--hostile", action="store_true", help="only time the rejection of truncated JPEG-LS streams")
    args = ap.parse_args(argv)
    if args.hostile:
        hostile(load("astronaut"), args.repeat)
        return
    names = [n for n in PHOTOS if not (args.quick and n == "retina")]
    imgs = {n: load(n) for n in names}
    print("bpp = bits per pixel (all channels); enc/dec = MB/s of raw samples, one core; B = bytes incl. headers")
    print("qpyr = LosslessCodec() (JPEG-LS/MED + colour 'auto'); grad = predictor='grad' (numpy + zstd-19)")
    print(f"chunks: {'whole image' if not args.tile else f'{args.tile}x{args.tile} tiles'}\n")
    print("8-bit RGB photos")
    bench(imgs, args.tile, args.repeat)
    if not args.no16:
        print("\n16-bit: 2x2-binned sums (uint16, 10-bit range); png = imagecodecs libpng level 9")
        binned = {}
        for n, a in imgs.items():
            c, h, w = a.shape
            b = a[:, : h // 2 * 2, : w // 2 * 2].astype(np.uint16)
            binned[n] = np.ascontiguousarray(b[:, 0::2, 0::2] + b[:, 1::2, 0::2] + b[:, 0::2, 1::2] + b[:, 1::2, 1::2])
        bench(binned, args.tile, args.repeat)


if __name__ == "__main__":
    main()
