"""The two entry points of the library: :func:`pack` images into a store and :func:`open` one.

Both import the writer and the reader when called, so ``import qpyr`` stays light (no torch).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from qpyr.errors import QpyrWarning

if TYPE_CHECKING:
    from qpyr.read.store import Store

__all__ = ["pack", "open"]


def pack(
    inputs: Any,
    url: str,
    *,
    policy: str | None = None,
    levels: int | None = None,
    filter: str = "area",
    min_side: int | None = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    append: bool = False,
    pixel_limit: int | None = None,
    nonfinite: str = "error",
    slots_per_task: int | None = None,
    min_ssim: Any = None,
    min_psnr: Any = None,
    progress: bool = False,
    client: Any = None,
    format: str = "2.0",  # noqa: A002
    shard_bytes: int | None = None,
) -> Store:
    """Pack images into a qpyr store at ``url`` and return it opened.

    Args:
        inputs: paths, directories, globs, URLs, numpy arrays (``[H, W]`` / ``[H, W, C]``),
            ``(name, array)`` pairs or a ``{name: array}`` mapping.
        url: local path or fsspec URL of the store.
        policy: policy spec ``NAME[:key=value,...]`` (default :data:`qpyr.policies.DEFAULT_POLICY`).
        levels: levels per item including level 0 (default: halve while the short side stays
            >= ``min_side`` = 32).
        overwrite: replace an existing store.
        append: add the inputs to an existing store.
        pixel_limit: max pixels per image (default 2**28).
        nonfinite: ``"error"`` or ``"replace"`` for NaN/Inf in float inputs.
        min_ssim, min_psnr: quality floors, a number (every level) or ``{level: number}``: a
            lossy level that misses its floor is re-encoded at higher quality or stored
            lossless; the manifest records the measured quality and the decision.
        progress: show a progress bar.
        client: a ``dask.distributed.Client``: pack tasks run on its workers.
        format: ``"2.0"`` (default: items as records in shards filled to ``shard_bytes``) or
            ``"1"`` (the 1.x layout of padded slots in size-class buckets, for 1.x readers).
            An append keeps the store's own format.
        shard_bytes: format 2.0 shard size (default 32 MiB; 16-64 MiB suits object stores).
    """
    from qpyr.format import manifest as fmt
    from qpyr.io.inputs import DEFAULT_PIXEL_LIMIT
    from qpyr.io.pyramid import DEFAULT_MIN_SIDE
    from qpyr.policies import DEFAULT_POLICY
    from qpyr.write.writer import DEFAULT_SLOTS_PER_TASK, PackOptions, run_pack

    opts = PackOptions(
        policy=policy or DEFAULT_POLICY, deep_lossless=policy is None, levels=levels, filter=filter,
        min_side=min_side or DEFAULT_MIN_SIDE, pixel_limit=pixel_limit or DEFAULT_PIXEL_LIMIT,
        nonfinite=nonfinite, slots_per_task=slots_per_task or DEFAULT_SLOTS_PER_TASK,
        min_ssim=_floor_strings(min_ssim), min_psnr=_floor_strings(min_psnr),
        layout=_layout(format), shard_bytes=shard_bytes or fmt.SHARD_BYTES,
    )
    run_pack(inputs, url, opts, storage_options=storage_options, overwrite=overwrite, append=append,
             progress=progress, client=client)
    store = open(url, storage_options=storage_options)
    deepest = store.manifest["levels"] - 1
    for key, li in opts.floor_levels():
        if li > deepest:
            warnings.warn(f"{key} names level {li}, but no image of the store has it (levels 0..{deepest}): "
                          "the floor applied to nothing.", QpyrWarning, stacklevel=2)
    return store


def _layout(format: str) -> int:  # noqa: A002
    """The format major of a ``format=`` argument ("2.0"/"2" or "1.x"/"1")."""
    major = str(format).split(".")[0]
    if major not in ("1", "2"):
        from qpyr.errors import InputError

        raise InputError(f"Expected format '2.0' (default) or '1' (the 1.x layout). Got {format!r}.")
    return int(major)


def _floor_strings(v: Any) -> tuple[str, ...]:
    """Quality floors as the writer's ``L:X`` / ``X`` strings (``--min-ssim`` syntax)."""
    if v is None:
        return ()
    if isinstance(v, dict):
        return tuple(f"{int(k)}:{float(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return tuple(str(x) for x in v)
    return (str(v),)


def open(url: str, *, storage_options: dict[str, Any] | None = None) -> Store:  # noqa: A001
    """Open the qpyr store at ``url`` (local path or fsspec URL)."""
    from qpyr.read.store import open_store

    return open_store(url, storage_options=storage_options)
