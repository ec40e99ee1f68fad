"""Cost estimation for qpyr stores: price tables, cost arithmetic, and the sample-based estimator.

The package itself is callable, so that ``qpyr.estimate(...)`` is the estimator while its
modules stay importable::

    >>> import qpyr
    >>> result = qpyr.estimate(["photos/"], sample=200)          # doctest: +SKIP
    >>> result.policy("mixed").projected_bytes.mean              # doctest: +SKIP

``qpyr.estimate(...)`` is :func:`qpyr.estimate.estimator.estimate`; an existing store is
:func:`~qpyr.estimate.existing.estimate_store`. Importing this package is cheap: the estimator
(numpy, the writer) loads on first use.

Modules, one job each:

========================  ==================================================================
``options``               arguments: defaults and checks (:class:`EstimateInputError`)
``sources``               file lists, source expansion, "is this an existing store?"
``sampling``              the seeded reservoir over the listing, the stratified sample choice
``probe``                 image geometry and file size from headers (no decode)
``packing``               packing the sample in memory, per-image/level bytes and quality
``baselines``             fp32 / fp16 / lossless / JPEG q90 baselines, the policies compared
``regression``            covariates, two-phase regression, bootstrap interval
``planner``               per-level bucket of an image under a policy, without pixels
``layout_model``          format 2.0: shards, framing, documents, catalog, objects, reads per access pattern
``layout_model_1x``       the same for the 1.x layout (``format="1"``): buckets, shard indexes
``pricing``               storage classes and dollars of a projection
``results``               the typed results (``to_dict()`` is the ``--json`` document)
``estimator``             :func:`estimate`: the steps above in order
``existing``              :func:`estimate_store`: an existing store's actual figures
``prices`` / ``cost``     price tables / cost arithmetic
``render`` / ``cli``      text table and PNG chart / ``qpyr estimate``
========================  ==================================================================
"""

from __future__ import annotations

import importlib
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

#: Where each public name is defined (imported on first use).
_HOMES = {
    "CostEstimate": "results",
    "EstimateResult": "results",
    "Interval": "results",
    "LevelEstimate": "results",
    "PolicyEstimate": "results",
    "SampleInfo": "results",
    "EstimateInputError": "options",
    "estimate": "estimator",
    "estimate_store": "existing",
}
#: Modules, importable as attributes (``qpyr.estimate.cost``) without an import statement.
_SUBMODULES = ("baselines", "cost", "estimator", "existing", "layout_model", "layout_model_1x", "options", "packing",
               "planner",
               "prices", "pricing", "probe", "regression", "render", "results", "sampling", "sources")


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is not None:
        return getattr(importlib.import_module(f"{__name__}.{home}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """Makes ``qpyr.estimate(...)`` call the estimator (a package cannot otherwise be called, and
    a function named ``estimate`` in ``qpyr`` would be replaced by this package on import)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from qpyr.estimate.estimator import estimate

        return estimate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
