"""``qpyr pack``: pack images into a store, on this machine or a Dask cluster, and print its info."""

from __future__ import annotations

import argparse
from typing import Any

from qpyr.cli._common import (
    HELP_DEFAULT_POLICY,
    HELP_PIXEL_LIMIT,
    HELP_POLICIES,
    add_common,
    add_verb,
    progress,
    storage_options,
)

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register ``pack`` on the CLI's subparsers."""
    policies = "; ".join(f"{k}: {v}" for k, v in HELP_POLICIES.items())
    sp = add_verb(sub, "pack", help="pack images into a store", description="Pack images into a qpyr store.")
    sp.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, .npy arrays, directories, globs or URLs")
    sp.add_argument("-o", "--output", required=True, metavar="STORE", help="store path or URL")
    sp.add_argument("--policy", metavar="SPEC",
                    help=f"NAME[:key=value,...] (default {HELP_DEFAULT_POLICY}). {policies}")
    sp.add_argument("--levels", type=int, metavar="N", help="levels per image incl. level 0 (default: halve while the short side >= --min-side)")
    sp.add_argument("--min-side", type=int, default=32, metavar="PX", help="floor for the automatic level count (default 32)")
    sp.add_argument("--filter", default="area", choices=["area", "gaussian", "nearest"], help="downsampling filter")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing store")
    sp.add_argument("--append", action="store_true", help="add the inputs to an existing store")
    sp.add_argument("--from-list", metavar="FILE", help="read more inputs from FILE, one path or URL per line")
    sp.add_argument("--max-pixels", type=int, metavar="N", help=f"refuse images with more pixels (default {HELP_PIXEL_LIMIT})")
    sp.add_argument("--nonfinite", choices=["error", "replace"], default="error",
                    help="NaN/Inf in float inputs: error (default) or replace (NaN→0, ±Inf→finite max/min)")
    sp.add_argument("--min-ssim", action="append", metavar="X|L:X",
                    help="RGB-SSIM floor for every level (X) or level L (L:X); repeatable")
    sp.add_argument("--min-psnr", action="append", metavar="Y|L:Y", help="PSNR floor in dB, like --min-ssim")
    sp.add_argument("--format", default="2.0", choices=["2.0", "1"],
                    help="store format: 2.0 (default: records in shards filled to --shard-mib) or 1 (the 1.x layout)")
    sp.add_argument("--shard-mib", type=float, default=32, metavar="MIB",
                    help="format 2.0: shard size in MiB (default 32; 16-64 suits object stores)")
    sp.add_argument("--workers", type=int, metavar="N", help="pack on a local Dask cluster of N worker processes")
    sp.add_argument("--scheduler", metavar="ADDRESS", help="pack on an existing Dask cluster")
    add_common(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Pack ``args.inputs`` (and ``--from-list``) into ``args.output``; print the store's info."""
    from qpyr.api import pack
    from qpyr.errors import QpyrError

    inputs: list[Any] = list(args.inputs)
    if args.from_list:  # streamed while packing, entries named by their paths (spec/scale.md §1)
        from qpyr.io.inputs import FileList

        inputs.append(FileList(args.from_list))
    if not inputs:
        raise QpyrError("No inputs: give image files, directories, globs, URLs or --from-list FILE.")
    client = None
    cluster = None
    if args.scheduler or args.workers:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise QpyrError("--scheduler/--workers need Dask: pip install 'qpyr[dask]'.") from None
        if args.scheduler:
            client = Client(args.scheduler)
        else:
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
    try:
        store = pack(
            inputs, args.output, policy=args.policy, levels=args.levels, filter=args.filter,
            min_side=args.min_side, storage_options=storage_options(args),
            overwrite=args.overwrite, append=args.append, pixel_limit=args.max_pixels,
            nonfinite=args.nonfinite, progress=progress(args), client=client,
            min_ssim=args.min_ssim, min_psnr=args.min_psnr,
            format=args.format, shard_bytes=int(args.shard_mib * 2**20),
        )
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if not args.quiet:
        from qpyr.ops.info import info_dict, render_info

        print(render_info(info_dict(store)))
    return 0
