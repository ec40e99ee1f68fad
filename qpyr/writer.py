"""Deprecated import path: use :mod:`qpyr.write`. Kept for one release; re-exports its public names."""

from qpyr.write import *  # noqa: F403
from qpyr.write import __all__  # noqa: F401
