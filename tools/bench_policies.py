"""Benchmark the content-adaptive, saliency and budget policies on real photos (scikit-image's, no downloads).

1. ``budget`` vs ``mixed`` vs uniform encodings at equal bytes, per photo: for a sweep of
   budgets (fractions of the bytes ``mixed`` stores), the mean SSIM across levels and the SSIM
   per level of (a) ``budget:bytes=B`` and (b) the best *uniform* encoding (one candidate on every
   level: lossless, fp16, uint8, uint4 variants, DCT at each quality) with bytes <= B; and at
   B = the bytes of ``mixed``, ``mixed`` itself. Target: budget > mixed at mixed's bytes, on
   every photo.
2. ``saliency`` on stills: tile class shares per photo (target: prune <= 5 % by default) and
   bytes vs uniform int8 and the fp32 pyramid.
3. ``saliency:frames=true`` on a frame sequence (shifted crops of a real photo) vs uniform int8
   and vs the best uniform encoding at equal bytes: bytes, memory ratios, SSIM per level.

Bytes are stored bytes per image (chunks + 16 B shard-index entry per chunk + parameters: what
the writer stores per item, without store metadata). SSIM: Wang 2004, 11x11 Gaussian sigma 1.5,
mean over RGB channels. Run: ``python tools/bench_policies.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from qpyr.io.pyramid import build_pyramid
from qpyr.policies import parse_policy, plan_levels
from qpyr.samples import SAMPLE_PHOTOS, sample_photo

U8 = np.dtype(np.uint8)
FRACTIONS = (0.05, 0.1, 0.2, 0.35, 0.6, 1.0)


def photo(name: str) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(sample_photo(name), -1, 0))


def fmt_ssim(xs: list[float]) -> str:
    return " ".join(f"{x:.4f}" for x in xs)


def uniform_points(evals: list[list]) -> list[tuple[int, float, str, list[float]]]:
    """(bytes, mean SSIM, label, per-level SSIM) of every candidate used on every level."""
    by_label: list[dict[str, object]] = [{e.encoding.label: e for e in es} for es in evals]
    common = set(by_label[0]).intersection(*by_label[1:])
    out = []
    for lab in common:
        es = [d[lab] for d in by_label]
        out.append((sum(e.nbytes for e in es), float(np.mean([e.ssim for e in es])), lab, [e.ssim for e in es]))  # type: ignore[attr-defined]
    return sorted(out)


def bench_budget(names: tuple[str, ...]) -> bool:
    print("== budget vs mixed vs best uniform at equal bytes (bytes per image; mean SSIM across levels) ==")
    ok = True
    for name in names:
        x = photo(name)
        lv = build_pyramid(x, None)
        mixed = plan_levels("mixed", lv, U8)
        mb = sum(e.nbytes for e in mixed)
        pol = parse_policy(f"budget:bytes={mb}")
        t = time.perf_counter()
        evals = pol.evaluate(lv, U8)
        t_eval = time.perf_counter() - t
        front = pol.frontier(lv, U8, evals=evals)
        uni = uniform_points(evals)
        print(f"\n{name} {x.shape[1]}x{x.shape[2]}, {len(lv)} levels; mixed = {mb} B; candidates evaluated in "
              f"{t_eval:.1f} s; RD frontier {len(front)} points (min {front[0]['bytes']} B)")
        print(f"  {'budget B':>9} {'budget':>8} {'bytes':>8} {'uniform':>8} {'bytes':>8}  {'uniform label':<16} "
              f"budget SSIM per level / uniform SSIM per level")
        for f in FRACTIONS:
            b = max(int(mb * f), front[0]["bytes"])
            chosen = parse_policy(f"budget:bytes={b}").choose(evals)
            cb, cs = sum(e.nbytes for e in chosen), [e.ssim for e in chosen]
            assert cb <= b, "budget exceeded"
            fits = [u for u in uni if u[0] <= b]
            best = max(fits, key=lambda u: u[1]) if fits else None
            ustr = f"{best[1]:>8.4f} {best[0]:>8}  {best[2]:<16}" if best else f"{'-':>8} {'-':>8}  {'(none fits)':<16}"
            print(f"  {b:>9} {np.mean(cs):>8.4f} {cb:>8} {ustr} {fmt_ssim(cs)} / {fmt_ssim(best[3]) if best else '-'}")
        chosen = parse_policy(f"budget:bytes={mb}").choose(evals)
        bm, mm = float(np.mean([e.ssim for e in chosen])), float(np.mean([e.ssim for e in mixed]))
        good = bm > mm
        ok &= good
        print(f"  at mixed's bytes: budget mean SSIM {bm:.5f} ({sum(e.nbytes for e in chosen)} B: "
              f"{' / '.join(e.encoding.label for e in chosen)}) vs mixed {mm:.5f} ({mb} B: "
              f"{' / '.join(e.encoding.label for e in mixed)})  -> {'budget higher' if good else 'TARGET MISSED'}")
        print(f"  mixed SSIM per level {fmt_ssim([e.ssim for e in mixed])}; budget {fmt_ssim([e.ssim for e in chosen])}")
    return ok


def _fp32_bytes(lv: list[np.ndarray]) -> int:
    return sum(4 * int(np.prod(v.shape)) for v in lv)


def bench_saliency_stills(names: tuple[str, ...]) -> bool:
    print("\n== saliency (default thresholds, stills: motion 0) ==")
    print(f"  {'photo':<11} {'prune%':>7} {'int4%':>7} {'int8%':>7} {'fp16%':>7} {'fp32%':>7} {'bytes':>9} "
          f"{'int8 B':>9} {'vs int8':>8} {'vs fp32':>8}  SSIM per level")
    ok = True
    for name in names + ("retina",):
        x = photo(name)
        lv = build_pyramid(x, None)
        es = plan_levels("saliency", lv, U8)
        tc = np.sum([e.tile_counts for e in es], axis=0)
        share = 100 * tc / tc.sum()
        b = sum(e.nbytes for e in es)
        i8 = sum(e.int8_bytes for e in es)
        if name != "retina":
            ok &= share[0] <= 5.0
        print(f"  {name:<11} " + " ".join(f"{s:>6.1f}%" for s in share) +
              f" {b:>9} {i8:>9} {i8 / b:>7.2f}x {_fp32_bytes(lv) / b:>7.2f}x  {fmt_ssim([e.ssim for e in es])}")
    print("  (retina: a fundus photo with a black surround, shown for contrast; its black tiles are pruned and\n"
          "   filled from the coarser level, exactly black; not counted in the <= 5 % target)")
    return ok


def bench_saliency_frames(n_frames: int, side: int) -> None:
    print(f"\n== saliency:frames=true on {n_frames} frames: {side}x{side} crops of astronaut shifted 3 px right and "
          "2 px down per frame ==")
    a = photo("astronaut")
    frames = [np.ascontiguousarray(a[:, 40 + 2 * k:40 + 2 * k + side, 60 + 3 * k:60 + 3 * k + side]) for k in range(n_frames)]
    pyr = [build_pyramid(f, None) for f in frames]
    tot = {"sal": 0, "int8": 0, "fp32": 0}
    ssim_sal: list[list[float]] = []
    ssim_i8: list[list[float]] = []
    tc = np.zeros(5, np.int64)
    uni_evals: list[list[list]] = []
    budget = parse_policy("budget:bytes=1")
    for k, lv in enumerate(pyr):
        es = plan_levels("saliency:frames=true", lv, U8, previous=pyr[k - 1] if k else None)
        i8 = plan_levels("int8", lv, U8)
        tot["sal"] += sum(e.nbytes for e in es)
        tot["int8"] += sum(e.nbytes for e in i8)
        tot["fp32"] += _fp32_bytes(lv)
        tc += np.sum([e.tile_counts for e in es], axis=0)
        ssim_sal.append([e.ssim for e in es])
        ssim_i8.append([e.ssim for e in i8])
        uni_evals.append(budget.evaluate(lv, U8))
    # best uniform encoding (same on every level of every frame) within saliency's bytes
    labels = {e.encoding.label for e in uni_evals[0][0]}
    best = None
    for lab in labels:
        es = [[next(e for e in lv_es if e.encoding.label == lab) for lv_es in fe] for fe in uni_evals]
        b = sum(e.nbytes for f in es for e in f)
        m = float(np.mean([[e.ssim for e in f] for f in es]))
        if b <= tot["sal"] and (best is None or m > best[1]):
            best = (b, m, lab, np.mean([[e.ssim for e in f] for f in es], axis=0))
    # saliency at the bytes of uniform int8: raise the int4/int8/fp16 thresholds by a factor f
    # (bisection) until the sequence fits in int8's bytes, then compare SSIM at equal bytes
    def run(f: float) -> tuple[int, list[list[float]], np.ndarray]:
        th = (0.05, min(1.0, 0.15 * f), min(1.0, 0.35 * f), min(1.0, 0.60 * f))
        spec = f"saliency:frames=true,int4={th[1]:.4f},int8={th[2]:.4f},fp16={th[3]:.4f}"
        b, ss, cnt = 0, [], np.zeros(5, np.int64)
        for k, lv in enumerate(pyr):
            es = plan_levels(spec, lv, U8, previous=pyr[k - 1] if k else None)
            b += sum(e.nbytes for e in es)
            ss.append([e.ssim for e in es])
            cnt += np.sum([e.tile_counts for e in es], axis=0)
        return b, ss, cnt

    lo, hi = 1.0, 4.0
    eq = run(hi)
    if eq[0] <= tot["int8"]:
        for _ in range(6):
            mid = (lo + hi) / 2
            r = run(mid)
            if r[0] <= tot["int8"]:
                hi, eq = mid, r
            else:
                lo = mid
    share = 100 * tc / tc.sum()
    print("  tile classes (all frames, all levels): " + ", ".join(
        f"{c} {n} ({s:.1f}%)" for c, n, s in zip(("prune", "int4", "int8", "fp16", "fp32"), tc, share, strict=True)))
    print(f"  saliency  {tot['sal']:>9} B  mean SSIM {np.mean(ssim_sal):.5f}  per level {fmt_ssim(list(np.mean(ssim_sal, axis=0)))}")
    print(f"  int8      {tot['int8']:>9} B  mean SSIM {np.mean(ssim_i8):.5f}  per level {fmt_ssim(list(np.mean(ssim_i8, axis=0)))}")
    if best is not None:
        print(f"  uniform {best[2]} at <= saliency's bytes: {best[0]} B  mean SSIM {best[1]:.5f}  per level "
              f"{fmt_ssim(list(best[3]))}")
    if eq[0] <= tot["int8"]:
        sh = 100 * eq[2] / eq[2].sum()
        print(f"  saliency at int8's bytes (thresholds x{hi:.3f}): {eq[0]:>9} B  mean SSIM {np.mean(eq[1]):.5f}  per level "
              f"{fmt_ssim(list(np.mean(eq[1], axis=0)))}  classes % " + " ".join(f"{x:.1f}" for x in sh)
              + f"  -> {'saliency higher' if np.mean(eq[1]) > np.mean(ssim_i8) else 'int8 higher'} at equal bytes")
    else:
        print(f"  saliency cannot reach int8's bytes with thresholds x4 ({eq[0]} B)")
    r8 = tot["int8"] / tot["sal"]
    print(f"  memory ratio: fp32 pyramid / saliency = {tot['fp32'] / tot['sal']:.2f}x; uniform int8 / saliency = "
          f"{r8:.2f}x ({'saliency smaller' if r8 > 1 else 'saliency larger'})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two photos, fewer frames")
    args = ap.parse_args(argv)
    names = SAMPLE_PHOTOS[:2] if args.quick else SAMPLE_PHOTOS
    ok = bench_budget(names)
    ok_s = bench_saliency_stills(names)
    bench_saliency_frames(3 if args.quick else 6, 256 if args.quick else 384)
    print(f"\ntargets: budget beats mixed at mixed's bytes on every photo: {'yes' if ok else 'NO'}; "
          f"saliency prunes <= 5 % of tiles on every natural photo: {'yes' if ok_s else 'NO'}")
    return 0 if ok and ok_s else 1


if __name__ == "__main__":
    sys.exit(main())
