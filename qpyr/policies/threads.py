"""One compute thread inside a pack task, so that packing gives the same bytes everywhere.

DESIGN decision 13: the same inputs and policy give byte-identical chunks whatever the engine,
task split or thread count. A pack takes decisions on floating-point values (an SSIM against a
floor, a coefficient against a rounding threshold), and multi-threaded kernels (torch's
intra-op pool, OpenBLAS / MKL) may sum in an order that depends on how many threads they use,
which moves a value across such a threshold now and then: a pack with 8 torch and BLAS threads
differed from one with 1 thread in 2 of 400 objects on 40 photo crops. Dask's nanny starts its
workers with ``OMP_NUM_THREADS=1`` and the like, a driver process does not; so every pack task
runs its numerics on one thread, in whatever process it runs. The parallelism of a pack is its
tasks (one per Dask worker), never the threads inside one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["single_threaded"]


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the body with one torch intra-op thread and one BLAS thread; restore both after."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)
