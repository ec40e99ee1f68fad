"""Deprecated import path: use :mod:`qpyr.torch.collate`. Kept for one release; re-exports its public names."""

from qpyr.torch.collate import *  # noqa: F403
from qpyr.torch.collate import __all__  # noqa: F401
