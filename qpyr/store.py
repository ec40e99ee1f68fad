"""Deprecated import path: use :mod:`qpyr.read.store`. Kept for one release; re-exports its public names."""

from qpyr.read.store import *  # noqa: F403
from qpyr.read.store import __all__  # noqa: F401
