"""Pack tasks on a Dask cluster: submission with a bounded number in flight, and worker tuning."""

from __future__ import annotations

import uuid
from typing import Any

from qpyr.io.inputs import InputRef
from qpyr.io.storage import ObjectStore
from qpyr.write.listing import Listing, task_refs
from qpyr.write.options import PackOptions
from qpyr.write.task import pack_task

__all__ = ["tune_worker_process", "run_on_client"]


_WORKER_TUNED = False


def tune_worker_process() -> None:
    """Settings for a process that runs pack tasks side by side with others (a Dask worker).

    - One torch thread: the worker processes are the parallelism; torch's own pool would
      oversubscribe the cores (on a busy machine its threads spin instead of working).
    - glibc malloc thresholds (Linux): Dask's nanny starts workers with
      ``MALLOC_TRIM_THRESHOLD_=65536``, which also pins the mmap threshold at 128 KiB, so every
      MiB-sized temporary of a pyramid or an SSIM is a fresh ``mmap`` and page-faulted again.
      Raising ``M_MMAP_THRESHOLD`` to 32 MiB and ``M_TRIM_THRESHOLD`` to 64 MiB keeps them in
      the heap; memory stays bounded by one task.
    """
    global _WORKER_TUNED
    if _WORKER_TUNED:
        return
    import torch

    torch.set_num_threads(1)
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if hasattr(libc, "mallopt"):
            libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
            libc.mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD
    except OSError:  # not glibc: nothing to tune
        pass
    _WORKER_TUNED = True


def _pack_on_worker(url: str, storage_options: dict[str, Any] | None, task: int, refs: list[InputRef],
                    options: PackOptions) -> tuple[int, int]:
    """:func:`pack_task` on a Dask worker (see :func:`tune_worker_process`). Returns (task,
    items): the receipt stays in the store, not in the scheduler."""
    tune_worker_process()
    pack_task(url, storage_options, task, refs, options)
    return task, len(refs)


def run_on_client(client: Any, url: str, ostore: ObjectStore, todo: list[int], listing: Listing,
                  options: PackOptions, storage_options: dict[str, Any] | None, bar: Any) -> None:
    """Run tasks ``todo`` on the workers of ``client`` (a ``distributed.Client``), one per worker
    thread in flight; ``bar`` (a tqdm bar or None) counts packed items. The first task error is
    raised once every task in flight has ended."""
    from distributed import as_completed

    workers = max(1, sum(client.nthreads().values()))
    # One task per worker thread in flight: the driver holds at most this many tasks' inputs,
    # and no task waits in a busy worker's queue while another worker idles (with two per
    # thread, Dask sometimes gave one of two workers three of four tasks).
    limit = workers
    pending = iter(todo)
    nonce = uuid.uuid4().hex[:8]
    ac = as_completed()
    first_error: BaseException | None = None

    def submit() -> bool:
        t = next(pending, None)
        if t is None:
            return False
        refs = task_refs(ostore, listing.session, t, listing.mem, storage_options)
        listing.mem.pop(t, None)
        ac.add(client.submit(_pack_on_worker, url, storage_options, t, refs, options, pure=False,
                             key=f"qpyr-pack-{nonce}-{t}"))
        return True

    for _ in range(limit):
        if not submit():
            break
    for fut in ac:
        try:
            _, n = fut.result()
            if bar is not None:
                bar.update(n)
        except BaseException as e:  # noqa: BLE001 - re-raised below, after in-flight tasks end
            first_error = first_error or e
        if first_error is None:
            submit()
    # On an error nothing new was submitted and every task in flight has ended, so nothing
    # writes into the store while the caller cleans up.
    if first_error is not None:
        raise first_error
