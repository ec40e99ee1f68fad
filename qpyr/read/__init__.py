"""The reader: open a store's manifest, plan and fetch the requested levels and regions, decode.

:func:`qpyr.read.store.open_store` and :class:`qpyr.read.store.Store` are the entry points.
"""

from qpyr.read.store import Store, open_store

__all__ = ["Store", "open_store"]
