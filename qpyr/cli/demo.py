"""``qpyr demo``: pack scikit-image's sample photos (real photos shipped in the package) and print info."""

from __future__ import annotations

import argparse
from typing import Any

from qpyr.cli._common import add_common, add_verb, progress, storage_options

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register ``demo`` on the CLI's subparsers."""
    sp = add_verb(sub, "demo", help="pack scikit-image's sample photos and print the report")
    sp.add_argument("-o", "--output", default="qpyr-demo.qpyr", metavar="STORE")
    sp.add_argument("--policy", metavar="SPEC")
    add_common(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Pack the sample photos into ``args.output`` (replacing it) and print its info."""
    from qpyr.api import pack
    from qpyr.ops.info import info_dict, render_info
    from qpyr.samples import SAMPLE_PHOTOS, sample_photo

    photos = {f"{name}.png": sample_photo(name) for name in SAMPLE_PHOTOS}
    store = pack(photos, args.output, policy=args.policy, overwrite=True, progress=progress(args),
                 storage_options=storage_options(args))
    print(render_info(info_dict(store)))
    return 0
