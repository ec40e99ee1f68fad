"""qpyr — quantized image pyramids on Zarr v3.

>>> import qpyr
>>> store = qpyr.pack(["photo.jpg"], "photos.qpyr")            # doctest: +SKIP
>>> store.read("photo.jpg", levels=[2])[2].shape                # doctest: +SKIP
torch.Size([3, 128, 128])

``import qpyr`` imports no heavy dependency: :func:`pack` and :func:`open` (defined in
:mod:`qpyr.api`) import the writer and reader when called, ``qpyr.Store`` and the
``qpyr.estimate`` package load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qpyr._version import FORMAT_VERSION, __version__
from qpyr.api import open, pack
from qpyr.errors import QpyrError

if TYPE_CHECKING:
    from qpyr.read.store import Store

__all__ = ["__version__", "FORMAT_VERSION", "QpyrError", "pack", "open", "Store"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from qpyr.read.store import Store

        return Store
    if name == "estimate":  # the callable package qpyr.estimate: qpyr.estimate(...) is the estimator
        import importlib

        return importlib.import_module(".estimate", __name__)
    raise AttributeError(f"module 'qpyr' has no attribute {name!r}")
