"""``qpyr unpack``: decode a store's items to image files (:func:`qpyr.ops.unpack.unpack`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from qpyr.cli._common import add_common, add_verb, open_store, progress

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register ``unpack`` on the CLI's subparsers."""
    sp = add_verb(sub, "unpack", help="decode a store to image files")
    sp.add_argument("store", metavar="STORE")
    sp.add_argument("-o", "--output", required=True, metavar="DIR")
    sp.add_argument("--level", type=int, action="append", metavar="L", help="level to write (repeatable; default all). Items without it are skipped and listed; "
                    "exit code 0 when some file was written, 1 when no item has it")
    sp.add_argument("--item", action="append", metavar="NAME", help="item to write (repeatable; default all)")
    sp.add_argument("--format", choices=["png", "tiff", "npy"], default="png")
    add_common(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the asked items' levels under ``args.output``; print how many files."""
    from qpyr.ops.unpack import unpack

    store = open_store(args)
    bar = None
    if progress(args):
        from tqdm import tqdm

        bar = tqdm(total=len(args.item) if args.item else len(store), unit="img", desc="unpacking")
    skipped: list[str] = []
    try:
        written = unpack(store, args.output, levels=args.level, items=args.item, fmt=args.format,
                         on_item=(lambda _n: bar.update(1)) if bar else None, skipped=skipped)
    finally:
        if bar is not None:
            bar.close()
    if skipped:
        lv = ", ".join(str(li) for li in args.level or [])
        print(f"{len(skipped)} items have no level {lv}: {', '.join(skipped)} (skipped)", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {len(written)} file(s) under {os.path.abspath(args.output)}")
    return 0
