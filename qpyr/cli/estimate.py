"""``qpyr estimate``: the command-line face of :func:`qpyr.estimate.estimate` and
:func:`qpyr.estimate.estimate_store`.

``add_parser(subparsers)`` registers the subcommand; ``run(args)`` runs it and returns 0. Errors
follow the exit-code contract of every verb (:mod:`qpyr.cli`): a qpyr error exits 1 with one line
``qpyr estimate: error: ...`` on stderr; options that are not numbers, or out of range, are
rejected by argparse (exit 2, with usage).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from qpyr.cli._common import add_common, add_verb, progress, storage_options

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Project what a corpus costs as a qpyr store under each precision policy: stored bytes (mean and
90 % interval), objects, and dollars per provider/storage class (storage per month, writes,
reads, egress, retrieval, minimum object sizes). The store projected is format 2.0 (what
qpyr pack writes; --format 1 for the 1.x layout). Reads are priced for two access patterns:
streaming (epoch order, one GET per shard per level read) and random (one ranged GET per
image and level). Compares the fp32 pyramid, fp16 pyramid, lossless and JPEG q90 files per
level with every --policy (default: mixed and the default policy). Given one existing qpyr
store instead, reports its actual bytes and dollars.

SOURCE is a directory, glob, image file, URL / bucket prefix, or a file list (@list.txt, or an
existing .txt/.lst file: one path or URL per line, '#' comments)."""


def _number(kind: type, lo: float, *, strict: bool = False, hi: float | None = None) -> Any:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if kind is float and v != v or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (v <= lo if strict else v < lo) or (hi is not None and v > hi):
            want = f"{'>' if strict else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
            raise argparse.ArgumentTypeError(f"expected a value {want}, got {text!r}")
        return v

    return parse


def add_parser(subparsers: Any) -> None:
    """Register ``estimate`` on an argparse subparsers object (from ``add_subparsers``)."""
    from qpyr.estimate.options import DEFAULT_PROVIDERS, DEFAULT_SAMPLE

    sp = add_verb(
        subparsers, "estimate", help="project bytes and dollars of a corpus under each policy",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument("sources", nargs="+", metavar="SOURCE", help="images to estimate, or one existing qpyr store")
    sp.add_argument("--policy", action="append", metavar="SPEC",
                    help="policy to compare (repeatable; default: mixed and the default policy)")
    sp.add_argument("--sample", type=_number(int, 1), default=DEFAULT_SAMPLE, metavar="N",
                    help=f"images to pack (default {DEFAULT_SAMPLE})")
    sp.add_argument("--seed", type=_number(int, 0), default=0, metavar="S", help="random seed (default 0)")
    sp.add_argument("--count", type=_number(int, 1), metavar="N",
                    help="corpus size to project to instead of the listed count (listing stops after N)")
    sp.add_argument("--header-sample", type=_number(int, 1), metavar="N",
                    help="images whose header and file size are read (default max(2000, 20 x --sample))")
    sp.add_argument("--provider", action="append", metavar="NAME[:CLASS]",
                    help="storage class to price, e.g. aws-s3:standard-ia; NAME alone = all its classes; 'all' "
                         f"(repeatable; default {', '.join(DEFAULT_PROVIDERS)})")
    sp.add_argument("--months", type=_number(float, 0, strict=True), default=12.0, metavar="M",
                    help="months the corpus is kept (default 12)")
    sp.add_argument("--reads-per-month", type=_number(float, 0), default=0.0, metavar="R",
                    help="full reads of the corpus per month, e.g. training epochs (default 0)")
    sp.add_argument("--read-level", type=_number(int, 0), action="append", metavar="L",
                    help="levels each read touches (repeatable; default every level)")
    sp.add_argument("--egress-fraction", type=_number(float, 0, hi=1), default=0.0, metavar="F",
                    help="share 0..1 of the bytes read that leave the provider (default 0)")
    sp.add_argument("--format", choices=("2.0", "1"), default="2.0", dest="store_format",
                    help="store format projected, as qpyr pack --format: 2.0 (default) or 1 (the 1.x layout)")
    sp.add_argument("--shard-mib", type=_number(float, 0, strict=True), metavar="MIB",
                    help="format 2.0 shard size in MiB, as qpyr pack --shard-mib (default 32)")
    sp.add_argument("--prices", metavar="FILE", help="price table (default: the shipped one; spec/prices.md)")
    sp.add_argument("--json", action="store_true", help="machine-readable output (spec/estimate.md)")
    sp.add_argument("--plot", metavar="FILE.png", help="also write a PNG bar chart (needs matplotlib)")
    add_common(sp, storage_help="fsspec storage option for URL sources (repeatable)", quiet_help="no progress bar")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``qpyr estimate`` for parsed ``args``; print the table (or JSON); return 0."""
    from qpyr.errors import QpyrError
    from qpyr.estimate import render
    from qpyr.estimate.estimator import estimate
    from qpyr.estimate.existing import estimate_store
    from qpyr.estimate.sources import is_store

    so = storage_options(args)
    common: dict[str, Any] = dict(
        providers=args.provider, months=args.months, reads_per_month=args.reads_per_month,
        read_levels=args.read_level, egress_fraction=args.egress_fraction, prices=args.prices,
        storage_options=so,
    )
    if len(args.sources) == 1 and is_store(args.sources[0], so):
        given = [f for f, v in (("--policy", args.policy), ("--count", args.count),
                                ("--header-sample", args.header_sample), ("--shard-mib", args.shard_mib),
                                ("--format", args.store_format != "2.0")) if v]
        if given:
            raise QpyrError(f"{' and '.join(given)} apply to image sources, not to an existing store "
                            f"({args.sources[0]}).")
        result = estimate_store(args.sources[0], **common)
    else:
        result = estimate(
            args.sources, policies=args.policy, sample=args.sample, seed=args.seed, count=args.count,
            header_sample=args.header_sample, progress=progress(args), format=args.store_format,
            shard_bytes=int(args.shard_mib * 2**20) if args.shard_mib is not None else None, **common,
        )
    if args.plot:
        render.plot(result, args.plot)
    print(json.dumps(result.to_dict(), indent=2, allow_nan=False) if args.json else render.render_table(result))
    return 0
