"""Deprecated import path: use :mod:`qpyr.policies`. Kept for one release; re-exports its public names."""

from qpyr.policies import *  # noqa: F403
from qpyr.policies import __all__  # noqa: F401
