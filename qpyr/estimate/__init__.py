"""Cost estimation for qpyr stores: price tables, cost arithmetic, and the sample-based estimator.

The package itself is callable, so that ``qpyr.estimate(...)`` is the estimator while
``qpyr.estimate.cost`` / ``qpyr.estimate.prices`` stay importable modules::

    >>> import qpyr.estimate
    >>> result = qpyr.estimate(["photos/"], sample=200)          # doctest: +SKIP
    >>> result.policy("mixed").projected_bytes.mean              # doctest: +SKIP

``qpyr.estimate(...)`` is :func:`qpyr.estimate.estimator.estimate`; see also
:func:`~qpyr.estimate.estimator.estimate_store`. Importing this package is cheap: the estimator
(numpy, the writer) loads on first use.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = [
    "CostEstimate",
    "EstimateInputError",
    "EstimateResult",
    "Interval",
    "LevelEstimate",
    "PolicyEstimate",
    "SampleInfo",
    "estimate",
    "estimate_store",
]

_SUBMODULES = ("cli", "cost", "estimator", "prices", "render")


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import estimator

        return getattr(estimator, name)
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """Makes ``qpyr.estimate(...)`` call the estimator (a package cannot otherwise be called, and
    a function named ``estimate`` in ``qpyr`` would be replaced by this package on import)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .estimator import estimate

        return estimate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
