"""``qpyr info``: a store's per-level summary (:mod:`qpyr.ops.info`), as a table or ``--json``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from qpyr.cli._common import add_common, add_verb, open_store

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register ``info`` on the CLI's subparsers."""
    sp = add_verb(sub, "info", help="per-level summary of a store")
    sp.add_argument("store", metavar="STORE")
    sp.add_argument("--json", action="store_true", help="machine-readable output (spec/cli-info.md)")
    sp.add_argument("--items", action="store_true", help="list every item (default for stores of <= 20 items)")
    add_common(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the info report of ``args.store``."""
    from qpyr.ops.info import info_dict, render_info

    d = info_dict(open_store(args), items=True if args.items else None)
    print(json.dumps(d, indent=2) if args.json else render_info(d))
    return 0
