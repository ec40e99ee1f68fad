"""``qpyr verify``: check a store (:func:`qpyr.ops.verify.verify`); exit 1 when a check fails."""

from __future__ import annotations

import argparse
from typing import Any

from qpyr.cli._common import add_common, add_verb, open_store

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register ``verify`` on the CLI's subparsers."""
    sp = add_verb(sub, "verify", help="check checksums, manifest and item counts")
    sp.add_argument("store", metavar="STORE")
    sp.add_argument("--decode", action="store_true", help="also decode every item")
    add_common(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print every problem (``CORRUPT: ...``) and a status line; 0 when the store is intact, else 1."""
    from qpyr.ops.verify import verify

    store = open_store(args)
    rep = verify(store, decode=args.decode)
    for p in rep.problems:
        print(f"CORRUPT: {p}")
    status = "OK" if rep.ok else f"FAILED ({len(rep.problems)} problem(s))"
    if not args.quiet or not rep.ok:
        print(f"{status}: {rep.items} items, {rep.shards} shards, {rep.chunks} chunks checked in {store.url}")
    return 0 if rep.ok else 1
