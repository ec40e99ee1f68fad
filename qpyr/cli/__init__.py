"""The ``qpyr`` command line: a thin layer over the library.

``main(argv) -> int`` parses, calls the library, prints, and maps :class:`QpyrError` to a
one-line ``qpyr <cmd>: error: ...`` on stderr with exit code 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from qpyr.errors import QpyrError
from qpyr.io.storage import parse_storage_options

__all__ = ["main", "console_main"]





def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _cmd_pack(args: argparse.Namespace) -> int:
    from qpyr import pack

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
            min_side=args.min_side, storage_options=parse_storage_options(args.storage_option),
            overwrite=args.overwrite, append=args.append, pixel_limit=args.max_pixels,
            nonfinite=args.nonfinite, progress=_progress(args), client=client,
            min_ssim=args.min_ssim, min_psnr=args.min_psnr,
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


def _open(args: argparse.Namespace) -> Any:
    from qpyr import open as qopen

    return qopen(args.store, storage_options=parse_storage_options(args.storage_option))


def _cmd_info(args: argparse.Namespace) -> int:
    from qpyr.ops.info import info_dict, render_info

    d = info_dict(_open(args), items=True if args.items else None)
    print(json.dumps(d, indent=2) if args.json else render_info(d))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from qpyr.ops.verify import verify

    store = _open(args)
    rep = verify(store, decode=args.decode)
    for p in rep.problems:
        print(f"CORRUPT: {p}")
    status = "OK" if rep.ok else f"FAILED ({len(rep.problems)} problem(s))"
    if not args.quiet or not rep.ok:
        print(f"{status}: {rep.items} items, {rep.shards} shards, {rep.chunks} chunks checked in {store.url}")
    return 0 if rep.ok else 1


def _cmd_unpack(args: argparse.Namespace) -> int:
    from qpyr.ops.unpack import unpack

    store = _open(args)
    bar = None
    if _progress(args):
        from tqdm import tqdm

        bar = tqdm(total=len(args.item) if args.item else len(store), unit="img", desc="unpacking")
    try:
        written = unpack(store, args.output, levels=args.level, items=args.item, fmt=args.format,
                         on_item=(lambda _n: bar.update(1)) if bar else None)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        print(f"wrote {len(written)} file(s) under {os.path.abspath(args.output)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Pack scikit-image's sample photos (real photos shipped in the package) and print info."""
    from qpyr import pack
    from qpyr.ops.info import info_dict, render_info
    from qpyr.samples import SAMPLE_PHOTOS, sample_photo

    photos = {f"{name}.png": sample_photo(name) for name in SAMPLE_PHOTOS}
    store = pack(photos, args.output, policy=args.policy, overwrite=True, progress=_progress(args),
                 storage_options=parse_storage_options(args.storage_option))
    print(render_info(info_dict(store)))
    return 0


def _parser() -> argparse.ArgumentParser:
    from qpyr.io.inputs import DEFAULT_PIXEL_LIMIT
    from qpyr.policies import DEFAULT_POLICY, POLICIES

    p = argparse.ArgumentParser(prog="qpyr", description="Quantized image pyramids on Zarr v3.")
    from qpyr._version import __version__

    p.add_argument("--version", action="version", version=f"qpyr {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                        help="fsspec storage option (repeatable; dotted keys nest, e.g. client_kwargs.endpoint_url=...)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summaries")

    policies = "; ".join(f"{k}: {v[1]}" for k, v in POLICIES.items())
    sp = sub.add_parser("pack", help="pack images into a store", description="Pack images into a qpyr store.")
    sp.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, .npy arrays, directories, globs or URLs")
    sp.add_argument("-o", "--output", required=True, metavar="STORE", help="store path or URL")
    sp.add_argument("--policy", default=DEFAULT_POLICY, metavar="SPEC",
                    help=f"NAME[:key=value,...] (default {DEFAULT_POLICY}). {policies}")
    sp.add_argument("--levels", type=int, metavar="N", help="levels per image incl. level 0 (default: halve while the short side >= --min-side)")
    sp.add_argument("--min-side", type=int, default=32, metavar="PX", help="floor for the automatic level count (default 32)")
    sp.add_argument("--filter", default="area", choices=["area", "gaussian", "nearest"], help="downsampling filter")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing store")
    sp.add_argument("--append", action="store_true", help="add the inputs to an existing store")
    sp.add_argument("--from-list", metavar="FILE", help="read more inputs from FILE, one path or URL per line")
    sp.add_argument("--max-pixels", type=int, default=DEFAULT_PIXEL_LIMIT, metavar="N",
                    help=f"refuse images with more pixels (default {DEFAULT_PIXEL_LIMIT})")
    sp.add_argument("--nonfinite", choices=["error", "replace"], default="error",
                    help="NaN/Inf in float inputs: error (default) or replace (NaN→0, ±Inf→finite max/min)")
    sp.add_argument("--min-ssim", action="append", metavar="X|L:X",
                    help="RGB-SSIM floor for every level (X) or level L (L:X); repeatable")
    sp.add_argument("--min-psnr", action="append", metavar="Y|L:Y", help="PSNR floor in dB, like --min-ssim")
    sp.add_argument("--workers", type=int, metavar="N", help="pack on a local Dask cluster of N worker processes")
    sp.add_argument("--scheduler", metavar="ADDRESS", help="pack on an existing Dask cluster")
    common(sp)
    sp.set_defaults(func=_cmd_pack)

    sp = sub.add_parser("unpack", help="decode a store to image files")
    sp.add_argument("store", metavar="STORE")
    sp.add_argument("-o", "--output", required=True, metavar="DIR")
    sp.add_argument("--level", type=int, action="append", metavar="L", help="level to write (repeatable; default all)")
    sp.add_argument("--item", action="append", metavar="NAME", help="item to write (repeatable; default all)")
    sp.add_argument("--format", choices=["png", "tiff", "npy"], default="png")
    common(sp)
    sp.set_defaults(func=_cmd_unpack)

    sp = sub.add_parser("info", help="per-level summary of a store")
    sp.add_argument("store", metavar="STORE")
    sp.add_argument("--json", action="store_true", help="machine-readable output (spec/cli-info.md)")
    sp.add_argument("--items", action="store_true", help="list every item (default for stores of <= 20 items)")
    common(sp)
    sp.set_defaults(func=_cmd_info)

    sp = sub.add_parser("verify", help="check checksums, manifest and item counts")
    sp.add_argument("store", metavar="STORE")
    sp.add_argument("--decode", action="store_true", help="also decode every item")
    common(sp)
    sp.set_defaults(func=_cmd_verify)

    sp = sub.add_parser("demo", help="pack scikit-image's sample photos and print the report")
    sp.add_argument("-o", "--output", default="qpyr-demo.qpyr", metavar="STORE")
    sp.add_argument("--policy", default=DEFAULT_POLICY, metavar="SPEC")
    common(sp)
    sp.set_defaults(func=_cmd_demo)

    from qpyr.cli import estimate as est_cli

    est_cli.add_parser(sub)
    from qpyr.cli import plan as plan_cli

    plan_cli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error or failed verify, 2 usage)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        rc: int = args.func(args)
        return rc
    except QpyrError as e:
        print(f"qpyr {args.cmd}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"qpyr {args.cmd}: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    sys.exit(main())
