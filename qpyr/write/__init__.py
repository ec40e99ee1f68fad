"""The writer: shard-owning pack tasks, their journal and the commit that writes the manifest last.

:func:`run_pack` (:mod:`qpyr.write.writer`) is the entry point. Its parts, one module each:
:mod:`~qpyr.write.options` (:class:`PackOptions`), :mod:`~qpyr.write.listing` (the streamed
input listing, split into tasks), :mod:`~qpyr.write.task` (:func:`pack_task`, the
engine-agnostic task that one process, ``--workers N`` or a Dask cluster runs),
:mod:`~qpyr.write.journal` (journal and receipts), :mod:`~qpyr.write.commit` (commit, cleanup,
rollback) and :mod:`~qpyr.write.dask` (Dask submission, :func:`tune_worker_process`).
"""

from qpyr.codecs.quant import StoredType
from qpyr.write.commit import commit
from qpyr.write.dask import tune_worker_process
from qpyr.write.journal import JOURNAL, receipt_key
from qpyr.write.options import DEFAULT_SLOTS_PER_TASK, PackOptions
from qpyr.write.task import pack_task
from qpyr.write.writer import run_pack

__all__ = ["PackOptions", "pack_task", "commit", "run_pack", "tune_worker_process", "JOURNAL", "receipt_key",
           "DEFAULT_SLOTS_PER_TASK", "StoredType"]
