"""Render an :class:`~qpyr.estimate.results.EstimateResult`: a text table and a PNG bar chart.

Units: bytes are decimal (KB = 1,000 B, ..., TB = 10**12 B) as providers bill them; money is USD.
"""

from __future__ import annotations

import os

from qpyr.estimate.results import EstimateResult, PolicyEstimate

__all__ = ["format_bytes", "format_money", "render_table", "plot"]

_COLS_PER_BLOCK = 4


def format_bytes(n: float) -> str:
    """``1234567`` -> ``"1.23 MB"`` (decimal units)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}" if abs(n) < 100 else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def format_money(x: float) -> str:
    """USD with sensible precision: ``<$0.01``, ``$12.30``, ``$4,512``."""
    if x == 0:
        return "$0"
    if abs(x) < 0.01:
        return "<$0.01"
    if abs(x) < 100:
        return f"${x:,.2f}"
    return f"${x:,.0f}"


def _ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x is not None else "-"


def _quality(p: PolicyEstimate, level: int) -> str:
    lv = next((v for v in p.levels if v.level == level), None)
    if lv is None:
        return ""
    if lv.exact:
        return "exact"
    if lv.ssim is None and lv.psnr is None:
        return "-"
    s = f"{lv.ssim:.3f}" if lv.ssim is not None else "-"
    q = f"{lv.psnr:.1f}" if lv.psnr is not None else "inf"
    return f"{s} / {q}"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    lines = [fmt(header), "-" * len(fmt(header))]
    lines += [fmt(r) for r in rows]
    return lines


def render_table(r: EstimateResult) -> str:
    """Human-readable report: bytes per policy, dollars per provider/class, quality per level."""
    lines: list[str] = []
    src = ", ".join(r.sources[:3]) + (f" (+{len(r.sources) - 3} more)" if len(r.sources) > 3 else "")
    if r.mode == "store":
        lines.append(f"qpyr estimate: existing store {src}: {r.items:,} images (actual bytes)")
    else:
        s = r.sample
        assert s is not None
        counted = f"{r.items:,} images ({'given by --count' if r.items_from == 'count' else 'listed'})"
        if r.items_from == "count" and r.listed is not None:
            counted += f", {r.listed:,} listed"
        lines.append(f"qpyr estimate: {counted} from {src}")
        strat = {"file_bytes": "stratified by file size", "pixels": "stratified by pixel count",
                 "none": "every probed image"}[s.stratified_by]
        skipped = f", {s.probe_failed + s.load_failed} unreadable skipped" if s.probe_failed + s.load_failed else ""
        exact = all(p.projected_bytes.low == p.projected_bytes.high for p in r.policies)
        interval = ("every image packed: figures are exact" if exact else
                    f"intervals are {r.confidence:.0%}" + (f" (bootstrap x{s.bootstrap})" if s.bootstrap else ""))
        lines.append(f"sample: {s.packed:,} packed ({strat}, seed {s.seed}), {s.probed:,} headers probed{skipped}; "
                     f"{interval}")
    lines.append("")

    rows = []
    for p in r.policies:
        pb = p.projected_bytes
        interval = f"{format_bytes(pb.mean)} ({format_bytes(pb.low)} - {format_bytes(pb.high)})" \
            if pb.low < pb.high else format_bytes(pb.mean)
        rows.append([p.label if p.label != p.policy else p.policy, format_bytes(p.bytes_per_image.mean), interval,
                     _ratio(p.ratio_vs_fp32), _ratio(p.ratio_vs_jpeg), f"{p.objects:,}"])
    corpus = "corpus bytes (90 % interval)" if r.mode == "sample" else "store bytes"
    lines += _table(["policy", "bytes/image", corpus, "vs fp32", "vs JPEG", "objects"], rows, {1, 3, 4, 5})
    lines.append("")

    keys = [c.storage_class for c in r.policies[0].costs] if r.policies else []
    months = f"{r.months:g} month" + ("" if r.months == 1 else "s")
    use = f"{r.reads_per_month:g} read(s)/month" + (
        f" of level(s) {','.join(map(str, r.read_levels))}" if r.read_levels is not None else " of every level")
    use += f", {r.egress_fraction:.0%} egress" if r.egress_fraction else ", no egress"
    both = r.reads_per_month > 0
    what = "streaming | random reads" if both else "storage + writes"
    lines.append(f"Dollars (USD, prices as of {r.prices_as_of}): storage per month [total over {months}, {what}; "
                 f"{use}]" + ("; totals = storage + writes (one PUT per object) + reads + egress" if both else ""))
    for i in range(0, len(keys), _COLS_PER_BLOCK):
        block = keys[i:i + _COLS_PER_BLOCK]
        rows = []
        for p in r.policies:
            cells = []
            for key in block:
                c = next(c for c in p.costs if c.storage_class == key)
                if both and c.access:
                    tot = " | ".join(format_money(a.total_over_months.mean) for a in c.access.values())
                else:
                    tot = format_money(c.total_over_months.mean)
                cells.append(f"{format_money(c.storage_per_month.mean)}/mo [{tot}]")
            rows.append([p.policy] + cells)
        lines += _table(["policy"] + block, rows, set(range(1, len(block) + 1)))
        lines.append("")

    if any(p.reads for p in r.policies):
        names = list(next(p.reads for p in r.policies if p.reads))
        lines.append("Requests: PUTs to write the store once (one per object); GETs and bytes of one full read "
                     f"of the levels read, opening included ({' / '.join(names)})")
        rows = []
        for p in r.policies:
            cells = [f"{p.objects:,}"]
            for nm in names:
                rq, rb = p.reads.get(nm, (0.0, 0.0))
                cells.append(f"{rq:,.0f} GETs, {format_bytes(rb)}")
            rows.append([p.policy] + cells)
        lines += _table(["policy", "PUTs"] + names, rows, set(range(1, len(names) + 2)))
        lines.append("")

    nlev = max((lv.level + 1 for p in r.policies for lv in p.levels), default=0)
    rows = [[p.policy] + [_quality(p, li) for li in range(nlev)] for p in r.policies]
    lines.append(f"Quality per level, {r.mode} means: SSIM (Wang 2004, 11x11 Gaussian sigma 1.5, mean over channels) "
                 "/ PSNR dB (all channels, peak 255 for 8-bit); exact = lossless")
    lines += _table(["policy"] + [f"L{li}" for li in range(nlev)], rows, set())
    lines.append("")
    fmt = f"format {r.store_format}" + (f", {r.shard_bytes / 2**20:g} MiB shards" if r.shard_bytes else "")
    lines.append(f"Bytes are stored bytes of a qpyr store ({fmt}) incl. shard framing, documents, catalog and "
                 "manifest; KB/MB/GB/TB = 10^3/10^6/10^9/10^12 B; vs X = X's bytes / these bytes. Reads: streaming = "
                 "epoch order, one GET per whole shard per level read (one reader process); random = one ranged GET "
                 "per image and level; JPEG = one GET per file.")
    for note in r.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def plot(r: EstimateResult, path: str | os.PathLike[str]) -> None:
    """Write a PNG bar chart: projected bytes per policy (with the interval) and storage dollars
    per month per provider/class. Needs matplotlib (``pip install 'qpyr[plot]'``)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        from qpyr.errors import QpyrError

        raise QpyrError("--plot needs matplotlib: pip install 'qpyr[plot]'.") from None
    import numpy as np

    pols = list(r.policies)
    names = [p.policy for p in pols]
    fig = Figure(figsize=(max(8.0, 1.3 * len(pols) + 4), 8.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1)
    scale, unit = _unit(max((p.projected_bytes.high for p in pols), default=1.0))
    means = np.array([p.projected_bytes.mean for p in pols]) / scale
    lo = means - np.array([p.projected_bytes.low for p in pols]) / scale
    hi = np.array([p.projected_bytes.high for p in pols]) / scale - means
    colors = ["#9e9e9e" if p.baseline and not p.requested else "#1f77b4" for p in pols]
    x = np.arange(len(pols))
    ax1.bar(x, means, yerr=np.vstack([lo, hi]) if r.mode == "sample" else None, color=colors, capsize=4)
    ax1.set_xticks(x, names, rotation=20, ha="right")
    ax1.set_ylabel(f"stored {unit}")
    what = f"{r.items:,} images" + (" (90 % interval)" if r.mode == "sample" else "")
    ax1.set_title(f"Projected corpus size, {what}")
    keys: list[str] = [c.storage_class for c in pols[0].costs] if pols else []
    width = 0.8 / max(len(keys), 1)
    for i, key in enumerate(keys):
        vals = [next(c for c in p.costs if c.storage_class == key).storage_per_month.mean for p in pols]
        ax2.bar(x - 0.4 + width * (i + 0.5), vals, width, label=key)
    ax2.set_xticks(x, names, rotation=20, ha="right")
    ax2.set_ylabel("USD / month (storage)")
    ax2.set_title(f"Storage dollars per month (prices as of {r.prices_as_of})")
    if keys:
        ax2.legend(fontsize="small")
    fig.savefig(os.fspath(path), format="png", dpi=100)


def _unit(n: float) -> tuple[float, str]:
    for i, unit in enumerate(("B", "KB", "MB", "GB", "TB", "PB")):
        if n < 1000 ** (i + 1) or unit == "PB":
            return float(1000 ** i), unit
    return 1.0, "B"  # pragma: no cover

