"""Helpers the verbs share: the common options, storage options, progress, opening a store.

Nothing here imports the library at module level: the parser is built from argparse alone
and each verb's ``run`` imports what it calls, so ``qpyr --version`` and ``qpyr VERB --help``
start without loading torch, numpy, zarr, fsspec or the policies.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qpyr.read.store import Store

__all__ = [
    "EXIT_STATUS",
    "HELP_DEFAULT_POLICY",
    "HELP_PIXEL_LIMIT",
    "HELP_POLICIES",
    "add_common",
    "add_verb",
    "open_store",
    "progress",
    "storage_options",
]

#: The exit-code contract of every verb, printed at the end of each ``--help``.
EXIT_STATUS = ("exit status: 0 ok; 1 error (bad input, unreadable or corrupt store, failed verify);\n"
               "2 usage error (bad arguments); 130 interrupted")

# What ``--help`` says about library defaults. The parser does not import the modules that own
# them (qpyr.policies loads the codecs and torch); the options default to None so the library's
# own default applies when the command runs, and tests/test_cli.py checks these copies.
#: :data:`qpyr.policies.DEFAULT_POLICY`.
HELP_DEFAULT_POLICY = "quality:ssim=0.95"
#: :data:`qpyr.io.inputs.DEFAULT_PIXEL_LIMIT`.
HELP_PIXEL_LIMIT = 2**28
#: The names of :data:`qpyr.policies.POLICIES`, each with a line on what it stores.
HELP_POLICIES = {
    "lossless": "every level exact in the source dtype",
    "fp32": "every level float32",
    "fp16": "every level float16",
    "bf16": "every level bfloat16",
    "int8": "every level 8-bit codes + scale/zero-point",
    "int4": "every level 4-bit codes (two per byte) + scale/zero-point",
    "mixed": "fp16 / int8 / int4 by level short side (>=256 / >=64 / smaller)",
    "dct": "every level 8x8 DCT (qpyr.dct); quality=1..100, chroma=420|444, tables=annexk|ssim, entropy=ctx|fast|jfif",
    "quality": "per level the cheapest encoding meeting ssim=X / psnr=Y (DCT or lossless)",
    "adaptive": "per level DCT quality from edge density / texture entropy (thresholds settable)",
    "saliency": "per tile prune/int4/int8/fp16/fp32 from saliency + motion (qpyr.tiles)",
    "budget": "rate-distortion optimal encodings within bytes=B per image (weights=, ssim=)",
}

_STORAGE_HELP = "fsspec storage option (repeatable; dotted keys nest, e.g. client_kwargs.endpoint_url=...)"


def add_verb(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` to ``sub`` (from ``add_subparsers``) with the exit-status epilog."""
    sp: argparse.ArgumentParser = sub.add_parser(name, epilog=EXIT_STATUS, **kwargs)
    return sp


def add_common(sp: argparse.ArgumentParser, *, storage_help: str = _STORAGE_HELP,
               quiet_help: str | None = "no progress bars or summaries") -> None:
    """``--storage-option KEY=VALUE`` (repeatable) and, unless ``quiet_help`` is None, ``-q/--quiet``."""
    sp.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help=storage_help)
    if quiet_help is not None:
        sp.add_argument("-q", "--quiet", action="store_true", help=quiet_help)


def storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The fsspec storage options of ``--storage-option`` (None when none were given)."""
    from qpyr.io.storage import parse_storage_options

    return parse_storage_options(getattr(args, "storage_option", None))


def progress(args: argparse.Namespace) -> bool:
    """Show progress bars: not ``--quiet`` and stderr is a terminal."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def open_store(args: argparse.Namespace) -> Store:
    """Open ``args.store`` with the command's storage options."""
    from qpyr.api import open as qopen

    return qopen(args.store, storage_options=storage_options(args))
