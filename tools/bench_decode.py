"""Decode-speed benchmark, one core: qpyr codecs vs the Pillow decoder of the same image.

For each photo (scikit-image; default astronaut) and chunk size (default 512), prints decode
milliseconds and images/s of

- ``qpyr.dct`` ``ctx`` / ``fast`` / ``jfif`` x ``420`` / ``444`` (``DctCodec.decode``: entropy
  decode + reconstruct, with the two halves timed on their own too; for ``jfif`` the first half
  is the stream check and the second libjpeg-turbo's decode; for ``ctx`` / ``fast`` the torch
  reconstruction, which runs on other devices, is timed beside the compiled CPU kernel),
  against Pillow JPEG decode of the same image at the same quality and subsampling
  (``optimize=True``);
- at equal RGB-SSIM (``--ssim``, default 0.95, the default policy's floor): each encoding at the
  smallest quality meeting it -- qpyr.dct with ``ssim`` tables (4:4:4 and 4:2:0, ``ctx`` and
  ``jfif``) against Pillow JPEG 4:2:0 (Annex K tables), with bytes: the comparison a
  ``quality:ssim=...`` store meets in practice;
- ``qpyr.lossless`` (default codec: JPEG-LS via CharLS after a colour transform; the CharLS
  call and the colour inverse timed on their own too), against Pillow PNG decode
  (``optimize=True``) of the same image,

and the ratio qpyr images/s / peer images/s (>= 1.0 is the design target). Each DCT line gives
that ratio for three outputs of the same pixels:

- each decoder's own: Pillow's interleaved ``uint8 [H, W, C]`` array; qpyr's ``uint8 [C, H, W]``
  (``jfif`` on CPU: a view of the decoder's interleaved memory, as
  ``torchvision.io.decode_jpeg`` returns it; ``ctx``/``fast``: planar);
- C-contiguous ``uint8 [C, H, W]`` (Pillow plus a transpose; qpyr plus ``ascontiguousarray``);
- C-contiguous ``float32 [C, H, W]`` in [0, 1], the model input, made from either decoder's
  ``[C, H, W]`` view by the same single fused multiply (what ``Store.read``'s dequantisation
  does).

Peer and qpyr are timed interleaved in the same run, best of ``--repeat``, with
``torch.set_num_threads(1)``, because timings on a shared machine are noisy.

``--baseline DIR`` also times reference copies of ``dct.py`` / ``lossless.py`` found in DIR
(e.g. the files before an optimisation: ``git show HEAD:qpyr/codecs/dct.py > DIR/dct.py``) on
the same streams, interleaved, and checks that they decode to the same pixels.

Usage: python tools/bench_decode.py [--photos astronaut,coffee] [--sizes 512,128]
       [--quality 75] [--repeat 50] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from qpyr.codecs import dct, lossless  # noqa: E402
from qpyr.codecs.dct._transform import _reconstruct_torch  # noqa: E402
from qpyr.samples import sample_photo  # noqa: E402


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _best(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` seconds per function, calls interleaved round-robin."""
    for f in fns.values():
        f()
    ts: dict[str, float] = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            ts[k] = min(ts[k], time.perf_counter() - t)
    return ts


def _pil_decoder(blob: bytes) -> Callable[[], np.ndarray]:
    from PIL import Image

    def dec() -> np.ndarray:
        im = Image.open(io.BytesIO(blob))
        im.load()
        return np.asarray(im)

    return dec


def _to_float(chw: np.ndarray) -> torch.Tensor:
    """``uint8 [C, H, W]`` (any strides) -> C-contiguous ``float32 [C, H, W]`` in [0, 1]: model
    input, the same single fused pass for both decoders (torchvision's ``to_tensor`` takes two)."""
    out = torch.empty(chw.shape, dtype=torch.float32)
    with warnings.catch_warnings():  # Pillow's arrays are read-only; this only reads them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.mul(torch.from_numpy(chw), 1.0 / 255.0, out=out)


def _outputs(peer: Callable[[], np.ndarray], qpyr: Callable[[], np.ndarray]) -> dict[str, Callable[[], Any]]:
    """Both decoders timed to three outputs: their own (``peer``: Pillow's interleaved
    ``[H, W, C]``; ``qpyr``: ``[C, H, W]``, for JPEG streams a view of the decoder's interleaved
    memory), C-contiguous ``uint8 [C, H, W]``, and C-contiguous ``float32 [C, H, W]`` in [0, 1]."""
    return {
        "peer": peer, "decode": qpyr,
        "peer_u8": lambda: np.ascontiguousarray(peer().transpose(2, 0, 1)),
        "u8": lambda: np.ascontiguousarray(qpyr()),
        "peer_f32": lambda: _to_float(peer().transpose(2, 0, 1)),
        "f32": lambda: _to_float(qpyr()),
    }


def _layouts(t: dict[str, float]) -> str:
    return (f" | uint8 [C,H,W] {t['u8'] * 1e3:.2f} vs {t['peer_u8'] * 1e3:.2f} ms: {t['peer_u8'] / t['u8']:.2f}x"
            f" | float32 [C,H,W] {t['f32'] * 1e3:.2f} vs {t['peer_f32'] * 1e3:.2f} ms: {t['peer_f32'] / t['f32']:.2f}x")


def _line(label: str, t: float, peer: str, tp: float, extra: str = "") -> str:
    return (
        f"  {label:<22}{t * 1e3:7.2f} ms {1 / t:7.0f} img/s | {peer} {tp * 1e3:6.2f} ms {1 / tp:7.0f} img/s"
        f" | ratio {tp / t:5.2f}x{extra}"
    )


def bench_dct(img: np.ndarray, quality: int, repeat: int, base: ModuleType | None) -> None:
    from PIL import Image

    chunk = np.ascontiguousarray(img.transpose(2, 0, 1))
    for ch, sub in (("420", 2), ("444", 0)):
        bio = io.BytesIO()
        Image.fromarray(img).save(bio, "JPEG", quality=quality, optimize=True, subsampling=sub)
        pil = _pil_decoder(bio.getvalue())
        for entropy in ("ctx", "fast", "jfif"):
            codec = dct.DctCodec(quality=quality, chroma=ch, entropy=entropy)  # type: ignore[arg-type]
            _bench_dct_one(codec, chunk, pil, f"dct {entropy} {ch} q{quality}", repeat, base)


def _bench_dct_one(
    codec: dct.DctCodec, chunk: np.ndarray, pil: Callable[[], Any], label: str, repeat: int, base: ModuleType | None
) -> None:
    data = codec.encode(chunk)
    payload = codec.decode_coefficients(data, chunk.shape)
    fns: dict[str, Callable[[], Any]] = {
        **_outputs(pil, lambda: codec.decode(data, chunk.shape)),
        "entropy": lambda: codec.decode_coefficients(data, chunk.shape),
        "recon": lambda: dct.reconstruct(payload, "cpu", torch.uint8),
    }
    if isinstance(payload, dct.DctCoefficients):  # the torch path on CPU, beside the kernel
        fns["torch"] = lambda: _reconstruct_torch(payload, torch.device("cpu"), torch.uint8)
    same = ""
    if base is not None:
        bcodec = base.DctCodec()
        fns["base"] = lambda: bcodec.decode(data, chunk.shape)
        ok = np.array_equal(bcodec.decode(data, chunk.shape), codec.decode(data, chunk.shape))
        same = " same pixels" if ok else " PIXELS DIFFER"
    t = _best(fns, repeat)
    extra = f" (entropy {t['entropy'] * 1e3:.2f} + reconstruct {t['recon'] * 1e3:.2f}"
    if "torch" in t:
        extra += f"; torch path {t['torch'] * 1e3:.2f}: {t['torch'] / t['recon']:.1f}x"
    extra += ")" + _layouts(t)
    if base is not None:
        extra += f" | baseline {t['base'] * 1e3:.2f} ms ({t['base'] / t['decode']:.2f}x slower,{same})"
    print(_line(label, t["decode"], "Pillow JPEG", t["peer"], extra))


def _min_quality(encode: Callable[[int], tuple[bytes, np.ndarray]], img: np.ndarray, target: float) -> tuple[int, bytes]:
    """Smallest quality 1..100 whose decoded RGB-SSIM meets ``target`` (binary search)."""
    from qpyr.metrics import ssim

    def ok(q: int) -> bool:
        _, dec = encode(q)
        a = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()
        b = torch.from_numpy(np.ascontiguousarray(dec))[None].float()
        return float(ssim(a, b, data_range=255.0)) >= target

    lo, hi = 1, 100
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo, encode(lo)[0]


def bench_equal_ssim(img: np.ndarray, target: float, repeat: int) -> None:
    from PIL import Image

    chunk = np.ascontiguousarray(img.transpose(2, 0, 1))

    def pil_enc(q: int) -> tuple[bytes, np.ndarray]:
        bio = io.BytesIO()
        Image.fromarray(img).save(bio, "JPEG", quality=q, optimize=True, subsampling=2)
        b = bio.getvalue()
        return b, np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).transpose(2, 0, 1)

    qp, blob = _min_quality(pil_enc, img, target)
    pil = _pil_decoder(blob)
    print(f"  at equal RGB-SSIM >= {target}: Pillow JPEG 4:2:0 q{qp} {len(blob):,} B")
    for ch in ("444", "420"):
        for entropy in ("ctx", "jfif"):
            def enc(q: int, ch: str = ch, entropy: str = entropy) -> tuple[bytes, np.ndarray]:
                c = dct.DctCodec(quality=q, chroma=ch, entropy=entropy, family="ssim")  # type: ignore[arg-type]
                b = c.encode(chunk)
                return b, c.decode(b, chunk.shape)

            q, data = _min_quality(enc, img, target)
            codec = dct.DctCodec(quality=q, chroma=ch, entropy=entropy, family="ssim")  # type: ignore[arg-type]
            def dec(codec: dct.DctCodec = codec, data: bytes = data) -> np.ndarray:
                return codec.decode(data, chunk.shape)

            t = _best(_outputs(pil, dec), repeat)
            print(_line(f"dct {entropy} {ch} ssim q{q}", t["decode"], "Pillow JPEG", t["peer"],
                        _layouts(t) + f" | bytes {len(data):,} = {len(data) / len(blob):.3f}x JPEG"))


def bench_lossless(img: np.ndarray, repeat: int, base: ModuleType | None) -> None:
    from PIL import Image

    chunk = np.ascontiguousarray(img.transpose(2, 0, 1))
    bio = io.BytesIO()
    Image.fromarray(img).save(bio, "PNG", optimize=True)
    pil = _pil_decoder(bio.getvalue())
    codec = lossless.LosslessCodec()
    data = codec.encode(chunk)
    hd = lossless.read_header(data)
    c, h, w = hd["shape"]
    body = memoryview(data)[lossless.HEADER_SIZE :]
    planes = lossless._jpegls_decode(body, c, h, w, hd["bits"])
    fns: dict[str, Callable[[], Any]] = {
        "peer": pil,
        "decode": lambda: codec.decode(data, chunk.shape, np.uint8),
        "charls": lambda: lossless._jpegls_decode(body, c, h, w, hd["bits"]),
        "color": lambda: lossless._inverse_color(planes.copy(), hd["color"], hd["bits"]),
        "copy": lambda: planes.copy(),
    }
    same = ""
    if base is not None:
        fns["base"] = lambda: base.decode(data, chunk.shape, np.uint8)
        ok = np.array_equal(base.decode(data, chunk.shape, np.uint8), codec.decode(data, chunk.shape, np.uint8))
        same = " same pixels" if ok else " PIXELS DIFFER"
    t = _best(fns, repeat)
    mb = chunk.nbytes / 1e6
    extra = (
        f" (CharLS {t['charls'] * 1e3:.2f} = {mb / t['charls']:.0f} MB/s + colour inverse "
        f"{max(t['color'] - t['copy'], 0) * 1e3:.2f}; color id {hd['color']})"
    )
    if base is not None:
        extra += f" | baseline {t['base'] * 1e3:.2f} ms ({t['base'] / t['decode']:.2f}x slower,{same})"
    print(_line("lossless med", t["decode"], "Pillow PNG ", t["peer"], extra))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default="astronaut")
    ap.add_argument("--sizes", default="512", help="square crop sizes (top-left), comma separated")
    ap.add_argument("--quality", type=int, default=75)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--ssim", type=float, default=0.95, help="RGB-SSIM of the equal-quality comparison")
    ap.add_argument("--baseline", type=Path, default=None, help="directory with reference dct.py/lossless.py")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bdct = blos = None
    if args.baseline is not None:
        if (args.baseline / "dct.py").exists():
            bdct = _load(args.baseline / "dct.py", "qpyr.codecs._baseline_dct")
        if (args.baseline / "lossless.py").exists():
            blos = _load(args.baseline / "lossless.py", "qpyr.codecs._baseline_lossless")
    print(
        f"Decode speed, 1 core (torch.set_num_threads(1)), best of {args.repeat} interleaved; "
        f"torch {torch.__version__}. ratio = qpyr img/s / peer img/s (target >= 1.0)."
    )
    for name in args.photos.split(","):
        full = sample_photo(name)
        for s in (int(v) for v in args.sizes.split(",")):
            img = np.ascontiguousarray(full[:s, :s, :3])
            print(f"{name} {img.shape[1]}x{img.shape[0]} RGB:")
            bench_dct(img, args.quality, args.repeat, bdct)
            bench_equal_ssim(img, args.ssim, args.repeat)
            bench_lossless(img, args.repeat, blos)


if __name__ == "__main__":
    main()
