"""Estimator benchmark: speed at corpus scale, and accuracy against actually packing a corpus.

1. **Speed.** Times ``qpyr.estimate`` of a 1,000,000-image corpus from a 200-image sample: a file
   list of 1,000,000 entries cycling over a directory of crops of real photos (scikit-image's
   photos, random crops and scales, saved as PNG and JPEG), so that listing, counting, the
   reservoir and the header probe run at full scale (``--speed-listing count``: the directory
   with ``count=1_000_000`` instead). Target: under a minute.
2. **Accuracy.** On a smaller corpus (default 1,000 images) estimates from a 5 % sample and
   compares with packing the *whole* corpus with the same policy (total store bytes incl.
   metadata) and with JPEG-q90-encoding every level of every image. Prints, per policy, the
   error for seed 0 and, over ``--seeds`` seeds, the largest error, the share within +-5 % and
   the share of 90 % intervals that contain the truth. Target: within +-5 %.

The speed run compares the default policies (``mixed`` and ``qpyr.policies.DEFAULT_POLICY``, plus
the baselines); ``--speed-policy`` replaces them. The accuracy runs use fp32, fp16, lossless and
mixed, plus every ``--policy``.

Usage: python tools/bench_estimate.py [--corpus 1000] [--count 1000000] [--sample 200]
       [--fraction 0.05] [--seeds 10] [--format mixed|png|jpeg] [--workdir DIR] [--quick]
       [--policy SPEC]... [--speed-policy SPEC]... [--no-speed] [--no-accuracy]
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "retina", "camera", "immunohistochemistry",
          "hubble_deep_field", "coins", "moon", "page")


def make_corpus(root: Path, n: int, lo: int, hi: int, fmt: str, seed: int) -> Path:
    """``n`` random crops/rescales of real photos, sides ``lo``..``hi`` px, gray and RGB."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    if len(list(root.iterdir())) == n:
        return root
    from qpyr.samples import random_crops, sample_photo

    for i, a in enumerate(random_crops([sample_photo(p) for p in PHOTOS], n, lo, hi, min_scale=0.25, seed=seed)):
        im = Image.fromarray(a)
        jpeg = fmt == "jpeg" or (fmt == "mixed" and i % 2)
        if jpeg:
            im.save(root / f"img{i:06d}.jpg", quality=92)
        else:
            im.save(root / f"img{i:06d}.png")
    return root


def true_bytes(corpus: Path, policies: list[str]) -> dict[str, int]:
    """Total store bytes of packing the whole corpus per policy, and JPEG-q90 bytes per level."""
    import torch
    from PIL import Image

    from qpyr.io.inputs import discover, load
    from qpyr.io.pyramid import build_pyramid
    from qpyr.read.store import open_store
    from qpyr.write import PackOptions, run_pack

    torch.set_num_threads(1)
    out: dict[str, int] = {}
    for p in policies:
        url = f"memory://bench-estimate-truth-{p.replace(':', '_')}"
        t = time.perf_counter()
        run_pack([str(corpus)], url, PackOptions(policy=p, measure_quality=False), overwrite=True)
        out[p] = open_store(url).total_bytes
        print(f"  full pack {p:10s} {out[p]:>13,} B  ({time.perf_counter() - t:.1f} s)", flush=True)
    jpeg = 0
    for ref in discover([str(corpus)]):
        a = load(ref)
        for lv in build_pyramid(a):
            u8 = np.clip(np.rint(lv[: 1 if a.shape[0] < 3 else 3]), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(u8[0] if u8.shape[0] == 1 else np.moveaxis(u8, 0, -1)).save(
                buf, format="JPEG", quality=90, optimize=True)
            jpeg += buf.getbuffer().nbytes
    out["jpeg-q90"] = jpeg
    return out


def speed(corpus: Path, count: int, sample: int, policies: list[str] | None, listing: str) -> float:
    """``listing="list"``: the corpus is a file list of ``count`` lines (the corpus's files over
    and over), so the full listing, counting and reservoir run at scale; ``"count"``: the corpus
    directory with ``--count``."""
    from qpyr.estimate import estimate
    from qpyr.estimate.render import format_bytes
    from qpyr.policies import DEFAULT_POLICY

    if listing == "list":
        lst = corpus.parent / f"{corpus.name}-list-{count}.txt"
        if not lst.exists():
            files = sorted(str(p) for p in corpus.iterdir())
            with open(lst, "w", encoding="utf-8") as f:
                f.writelines(files[i % len(files)] + "\n" for i in range(count))
        sources, kw = [f"@{lst}"], {}
    else:
        sources, kw = [str(corpus)], {"count": count}
    t = time.perf_counter()
    r = estimate(sources, sample=sample, seed=0, policies=policies, **kw)
    dt = time.perf_counter() - t
    asked = ", ".join(policies) if policies is not None else f"defaults: mixed and DEFAULT_POLICY={DEFAULT_POLICY}"
    how = f"a file list of {r.listed:,} entries" if listing == "list" else f"--count, {r.listed:,} listed"
    print(f"\n1. estimate of a {r.items:,}-image corpus ({how}) from a {r.sample.packed if r.sample else 0}-image "
          f"sample, {r.sample.probed if r.sample else 0:,} headers probed; policies {asked}, plus the baselines: "
          f"{dt:.1f} s  (target < 60 s)")
    for p in r.policies:
        pb = p.projected_bytes
        aws = next((c for c in p.costs if c.storage_class == "aws-s3:standard"), None)
        cost = f"  aws-s3:standard ${aws.storage_per_month.mean:,.0f}/month" if aws else ""
        print(f"   {p.policy:10s} {format_bytes(pb.mean):>9} ({format_bytes(pb.low)} - {format_bytes(pb.high)}), "
              f"{p.objects:,} objects{cost}")

    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=int, default=1000, help="images in the accuracy corpus (default 1000)")
    ap.add_argument("--count", type=int, default=1_000_000, help="corpus size of the speed run")
    ap.add_argument("--sample", type=int, default=200, help="sample of the speed run")
    ap.add_argument("--fraction", type=float, default=0.05, help="sample fraction of the accuracy runs")
    ap.add_argument("--seeds", type=int, default=10, help="seeds of the accuracy runs")
    ap.add_argument("--format", choices=["png", "jpeg", "mixed"], default="mixed", help="corpus file format")
    ap.add_argument("--min-side", type=int, default=64)
    ap.add_argument("--max-side", type=int, default=448)
    ap.add_argument("--workdir", type=Path, help="keep the corpus here (default: a temporary directory)")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed run")
    ap.add_argument("--speed-listing", choices=["list", "count"], default="list",
                    help="speed run over a file list of --count entries (default) or the corpus with --count")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the accuracy runs")
    ap.add_argument("--policy", action="append", default=[], metavar="SPEC",
                    help="another policy for the accuracy runs (repeatable)")
    ap.add_argument("--speed-policy", action="append", metavar="SPEC",
                    help="policies of the speed run (repeatable; default: the estimator's defaults)")
    ap.add_argument("--quick", action="store_true", help="--corpus 300 --seeds 3")
    args = ap.parse_args()
    if args.quick:
        args.corpus, args.seeds = 300, 3

    from qpyr.estimate import estimate

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="qpyr-bench-estimate-")
        args.workdir = Path(tmp.name)
    corpus = make_corpus(args.workdir / f"corpus-{args.format}-{args.corpus}-{args.min_side}-{args.max_side}",
                         args.corpus, args.min_side, args.max_side, args.format, seed=1)
    print(f"corpus: {args.corpus} crops of real photos, {args.min_side}..{args.max_side} px, {args.format} files, "
          f"in {corpus}")

    # -- 1. speed ---------------------------------------------------------------------------
    dt = math.nan
    if not args.no_speed:
        dt = speed(corpus, args.count, args.sample, args.speed_policy, args.speed_listing)
    if args.no_accuracy:
        print(f"\nspeed {dt:.1f} s for {args.count:,} images (target < 60 s)")
        if tmp is not None:
            tmp.cleanup()
        return 0

    # -- 2. accuracy ------------------------------------------------------------------------
    policies = ["fp32", "fp16", "lossless", "mixed"] + [p for p in args.policy if p not in ("fp32", "fp16", "lossless", "mixed")]
    n = max(3, round(args.fraction * args.corpus))
    print(f"\n2. accuracy: {n}-image sample ({args.fraction:.0%}) of the {args.corpus}-image corpus vs packing all of it")
    truth = true_bytes(corpus, policies)
    errs: dict[str, list[float]] = {p: [] for p in truth}
    inside: dict[str, list[bool]] = {p: [] for p in truth}
    t_est = []
    for seed in range(args.seeds):
        t = time.perf_counter()
        r = estimate([str(corpus)], sample=n, seed=seed, policies=policies)
        t_est.append(time.perf_counter() - t)
        for p in truth:
            pb = r.policy(p).projected_bytes
            errs[p].append(pb.mean / truth[p] - 1)
            inside[p].append(pb.low <= truth[p] <= pb.high)
    print(f"   ({args.seeds} seeds, {np.mean(t_est):.1f} s per estimate)")
    print(f"   {'policy':10s} {'true bytes':>14} {'err seed 0':>10} {'max |err|':>10} {'within 5%':>10} "
          f"{'90% int. hits':>14}")
    worst = 0.0
    for p in truth:
        e = np.array(errs[p])
        if p != "jpeg-q90":  # the JPEG baseline is priced for comparison; the target is on qpyr policies
            worst = max(worst, float(np.abs(e).max()))
        print(f"   {p:10s} {truth[p]:>14,} {e[0]:>+10.2%} {np.abs(e).max():>10.2%} {np.mean(np.abs(e) <= 0.05):>10.0%} "
              f"{np.mean(inside[p]):>14.0%}")
    jpeg = np.array(errs["jpeg-q90"])
    print(f"\nspeed {dt:.1f} s for {args.count:,} images (target < 60 s); worst error over seeds and qpyr policies "
          f"{worst:.2%} (target +-5 %); JPEG q90 baseline: sd {jpeg.std():.2%}, worst {np.abs(jpeg).max():.2%}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
