"""The ``qpyr`` command line: a thin layer over the library.

One module per verb (:mod:`~qpyr.cli.pack`, :mod:`~qpyr.cli.unpack`, :mod:`~qpyr.cli.info`,
:mod:`~qpyr.cli.verify`, :mod:`~qpyr.cli.demo`, :mod:`~qpyr.cli.estimate`,
:mod:`~qpyr.cli.plan`), each with ``add_parser(subparsers)`` and ``run(args) -> int``: it parses
and prints, the work is done by the library it imports inside ``run``. Building the parser
imports no heavy module, so ``qpyr --version`` and ``qpyr VERB --help`` start at once.

Exit codes, the same for every verb (:func:`main` maps errors to them in one place):

- ``0`` success;
- ``1`` an error: a :class:`~qpyr.errors.QpyrError` (bad input, unreadable or corrupt store,
  bad policy ...) or an ``OSError``, reported as one line ``qpyr VERB: error: ...`` on stderr;
  also a ``verify`` that found problems;
- ``2`` a usage error (unknown option, bad option value), reported by argparse with the usage;
- ``130`` interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from qpyr.cli import demo, estimate, info, pack, plan, unpack, verify
from qpyr.cli._common import EXIT_STATUS
from qpyr.errors import QpyrError, QpyrWarning

__all__ = ["main", "console_main"]

#: The verbs, in the order ``qpyr --help`` lists them.
_VERBS = (pack, unpack, info, verify, demo, estimate, plan)


def _parser() -> argparse.ArgumentParser:
    from qpyr._version import __version__

    p = argparse.ArgumentParser(prog="qpyr", description="Quantized image pyramids on Zarr v3.", epilog=EXIT_STATUS)
    p.add_argument("--version", action="version", version=f"qpyr {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for verb in _VERBS:
        verb.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error or failed verify, 2 usage, 130 interrupted)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", QpyrWarning)
            plain = warnings.showwarning

            def show(message: Any, category: type[Warning], *rest: Any, **kw: Any) -> None:
                if issubclass(category, QpyrWarning):
                    print(f"qpyr {args.cmd}: warning: {message}", file=sys.stderr)
                else:
                    plain(message, category, *rest, **kw)

            warnings.showwarning = show
            rc: int = args.func(args)
        return rc
    except (QpyrError, OSError) as e:  # OSError: e.g. an output file in a missing directory
        print(f"qpyr {args.cmd}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"qpyr {args.cmd}: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """The ``qpyr`` console script."""
    sys.exit(main())
