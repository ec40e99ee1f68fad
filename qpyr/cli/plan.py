"""``qpyr plan``: what a policy decides for one image, without writing a store.

``qpyr plan IMAGE --policy SPEC [--previous FRAME] [--levels N] [--json]`` prints
:func:`qpyr.ops.plan.plan_image` (``--json``: its JSON shape) or its table.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from qpyr.cli._common import add_common, add_verb, storage_options

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register ``plan`` on the CLI's subparsers."""
    sp = add_verb(sub, "plan", help="show a policy's plan for one image (budget: the RD frontier)",
                  description="What a policy decides for one image, without writing a store.")
    sp.add_argument("image", metavar="IMAGE", help="image file, .npy array or URL")
    sp.add_argument("--policy", required=True, metavar="SPEC", help="policy spec, e.g. budget:bytes=60000")
    sp.add_argument("--previous", metavar="FRAME", help="previous frame (side information for saliency:frames=true)")
    sp.add_argument("--levels", type=int, metavar="N", help="levels incl. level 0")
    sp.add_argument("--json", action="store_true", help="machine-readable output (incl. the RD frontier)")
    add_common(sp, storage_help="fsspec storage option for IMAGE/FRAME URLs (repeatable; dotted keys nest)",
               quiet_help=None)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the plan of ``args.policy`` for ``args.image``."""
    from qpyr.ops.plan import plan_image, render_plan

    d = plan_image(args.image, args.policy, previous=args.previous, levels=args.levels,
                   storage_options=storage_options(args))
    print(json.dumps(d, indent=2) if args.json else render_plan(d))
    return 0


def __getattr__(name: str) -> Any:
    # the plan library moved to qpyr.ops.plan; its names stay reachable from here, loaded on use
    if name in ("plan_image", "render_plan"):
        from qpyr.ops import plan

        return getattr(plan, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
