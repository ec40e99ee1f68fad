"""Deprecated import path: use :mod:`qpyr.write.writer`. Kept for one release; re-exports its public names."""

from qpyr.write.writer import *  # noqa: F403
from qpyr.write.writer import __all__  # noqa: F401
