"""PyTorch datasets over qpyr stores: map-style and streaming, multi-level, cloud-ready.

.. code-block:: python

    import torch, qpyr.torch, qpyr.collate
    ds = qpyr.torch.PyramidDataset("photos.qpyr", levels=[2])            # or s3://bucket/photos.qpyr
    loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=2, collate_fn=qpyr.collate.collate_padded)
    for batch in loader:
        x, mask = batch["levels"][2], batch["mask"][2]                   # [32, 3, H, W] float32 in [0, 1]

Samples are ``{"name": str, "index": int, "levels": {level: Tensor[C, h, w]}}`` (float32, in
[0, 1] for 8/16-bit sources; or ``dtype=torch.uint8``, 0..255, for loaders that normalise on
the device: collate them with ``DataLoader(pin_memory=True)`` or ``collate_padded(...,
pin_memory=True)`` for pinned batches, as FFCV and DALI hand them out). Stores are opened lazily in the process that reads (each
DataLoader worker opens its own: async fsspec filesystems are not fork-safe), so the datasets
work with ``num_workers`` 0 or more, persistent workers and the ``fork``/``spawn`` start
methods.

Device-side decoding: with ``device_decode=True`` workers return compact
:class:`~qpyr.read.payload.LevelPayload` objects (stored integers and parameters, or a split
codec's coefficients) and :func:`qpyr.torch.decode.decode_batch` turns a collated batch into tensors on the
training device in the main process — the CPU workers only move and entropy-decode bytes.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from qpyr.errors import InputError
from qpyr.read.payload import LevelPayload, check_dtype
from qpyr.read.pruned import with_coarser
from qpyr.read.store import Store, open_store
from qpyr.torch._distributed import dist_rank_world
from qpyr.torch.decode import decode_batch
from qpyr.torch.qat import fake_quantize

# decode_batch (qpyr.torch.decode) and fake_quantize (qpyr.torch.qat) are re-exported for imports of this module
__all__ = ["PyramidDataset", "StreamingPyramidDataset", "decode_batch", "fake_quantize"]

_STATE_VERSION = 1

MISSING_LEVEL = ("error", "skip", "coarsest")
"""What a dataset with ``levels=[...]`` does with items that have fewer levels (small images):
``"error"`` (default) raises :class:`~qpyr.errors.InputError` at construction, naming them;
``"skip"`` leaves them out of the dataset; ``"coarsest"`` reads, under the key of each level
they lack, their coarsest level (which is larger than the level asked for)."""


class _Source:
    """What both datasets share: lazy per-process store, level selection, one sample."""

    def __init__(self, url: str, levels: Sequence[int] | int | None, target_size: int | None,
                 transform: Callable[[torch.Tensor], Any] | None, storage_options: dict[str, Any] | None,
                 device_decode: bool, dtype: torch.dtype, missing_level: str):
        if (levels is None) == (target_size is None):
            raise InputError("Give exactly one of levels=[...] or target_size=.")
        if device_decode and transform is not None:
            raise InputError("transform runs on decoded tensors; with device_decode=True apply it after decode_batch.")
        self.url = url
        self.levels = None if levels is None else ([int(levels)] if isinstance(levels, (int, np.integer))
                                                   else [int(x) for x in levels])
        if self.levels is not None and not self.levels:
            raise InputError("Expected at least one level.")
        self.target_size = None if target_size is None else int(target_size)
        self.transform = transform
        self.storage_options = dict(storage_options or {})
        self.device_decode = device_decode
        self.dtype = check_dtype(dtype)
        if missing_level not in MISSING_LEVEL:
            raise InputError(f"missing_level must be one of {', '.join(map(repr, MISSING_LEVEL))}. Got {missing_level!r}.")
        self.missing_level = missing_level
        self._store: Store | None = None
        self._pid = -1
        # store indices of the dataset's items (None: all); decided here, before any batch
        self._ids: np.ndarray | None = None if self.levels is None else self._select_items()

    def _select_items(self) -> np.ndarray | None:
        """Check ``levels`` against the store and apply ``missing_level``: the store indices of
        the items the dataset reads (None: all of them)."""
        assert self.levels is not None
        st = self.store
        top = len(st.catalog.levels)
        wrong = [li for li in self.levels if not 0 <= li < top]
        if wrong:
            raise InputError(f"{self.url}: the store has levels 0..{top - 1}; levels={self.levels} asks for {wrong}.")
        nl = st.catalog.sources[:, 4].astype(np.int64)
        need = max(self.levels)
        lacking = np.flatnonzero(nl <= need)
        if lacking.size == 0 or self.missing_level == "coarsest":
            return None
        if self.missing_level == "error":
            names = st.catalog.names
            eg = ", ".join(f"{names[i]!r} ({nl[i]} levels)" for i in lacking[:3])
            raise InputError(
                f"{self.url}: {lacking.size} of {len(nl)} items have no level {need} (too small for it), e.g. {eg}. "
                "Pass missing_level='skip' to leave them out of the dataset, or missing_level='coarsest' to read "
                "their coarsest level in place of the levels they lack.")
        keep = np.flatnonzero(nl > need)
        if keep.size == 0:
            raise InputError(f"{self.url}: no item has level {need}; levels={self.levels} with missing_level='skip' "
                             "leaves an empty dataset.")
        return keep

    def _count(self) -> int:
        """Items in the dataset."""
        return len(self.store) if self._ids is None else len(self._ids)

    def _item(self, position: int) -> int:
        """Store index of the dataset's item ``position`` (a valid position)."""
        return position if self._ids is None else int(self._ids[position])

    @property
    def store(self) -> Store:
        """The store, opened in this process on first use."""
        if self._store is None or self._pid != os.getpid():
            self._store = open_store(self.url, storage_options=self.storage_options or None)
            self._pid = os.getpid()
        return self._store

    def _state_for_pickle(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_store"], d["_pid"] = None, -1  # never ship an open store (or its fsspec session)
        return d

    def _samples(self, idx: Sequence[int]) -> list[dict[str, Any]]:
        """Samples of items ``idx`` (valid indices), fetched together: one batch of concurrent,
        coalesced byte ranges per level read, so a DataLoader batch costs one round trip per
        level rather than one per image (what makes a bucket's latency bearable)."""
        st = self.store
        idx = [int(i) for i in idx]
        plan: dict[tuple[int, int], list[int]] = {}  # (key in the sample, level read) -> batch positions
        if self.levels is not None:
            top = st.catalog.sources[idx, 4].astype(np.int64) - 1  # coarsest level of each item
            for key in self.levels:
                for j in range(len(idx)):
                    plan.setdefault((key, min(key, int(top[j]))), []).append(j)
        else:
            for j, i in enumerate(idx):
                li = st.pick_level(i, target_size=self.target_size)
                plan.setdefault((li, li), []).append(j)
        levels: list[dict[int, Any]] = [{} for _ in idx]
        for (key, li), js in plan.items():
            items = [idx[j] for j in js]
            # on the CPU each payload is decoded as soon as it is fetched (in cache); pruned
            # qpyr.tiles levels stay payloads: they carry the coarser level they fill from
            # (decode() fills them exactly as Store.read does), wherever they are decoded
            now = None if self.device_decode else (lambda p: p if p.pruned else p.decode("cpu", self.dtype))
            got = st.fetch_batch(items, li, coefficients=self.device_decode, finish=now)
            pending = [k for k, g in enumerate(got) if isinstance(g, LevelPayload)]
            if pending:
                filled = with_coarser(st, [items[k] for k in pending], li, [got[k] for k in pending])
                for k, p in zip(pending, filled, strict=True):
                    got[k] = p if self.device_decode else p.decode("cpu", self.dtype)
            for j, t in zip(js, got, strict=True):
                levels[j][key] = t if self.transform is None or self.device_decode else self.transform(t)
        names = st.catalog.names
        return [{"name": names[i], "index": i, "levels": lv} for i, lv in zip(idx, levels, strict=True)]

    def _sample(self, i: int) -> dict[str, Any]:
        return self._samples([i])[0]

    def _chosen_levels(self) -> np.ndarray:
        """``int64 [N]``: the level each item of the store reads (the first listed level, or
        the item's coarsest where it lacks it; or the ``target_size`` choice)."""
        st = self.store
        n = len(st)
        if self.levels is not None:
            return np.minimum(self.levels[0], st.catalog.sources[:, 4].astype(np.int64) - 1)
        out = np.zeros(n, np.int64)
        for li in range(st.manifest["levels"]):
            hw = st.level_shapes(li)
            ok = (hw.min(axis=1) >= self.target_size) & (hw[:, 0] > 0)
            out[ok] = li
        return out

    def sizes(self) -> np.ndarray:
        """``int64 [len(self), 2]``: ``(h, w)`` of the (first) level each item of the dataset
        returns; no I/O beyond the catalog. For :class:`qpyr.collate.AspectRatioBucketSampler`."""
        st = self.store
        chosen = self._chosen_levels()
        out = np.full((len(st), 2), -1, np.int64)
        for li in np.unique(chosen):
            sel = chosen == li
            out[sel] = st.level_shapes(int(li))[sel]
        return out if self._ids is None else out[self._ids]


class PyramidDataset(_Source, Dataset):  # type: ignore[type-arg]
    """Map-style dataset: ``ds[i]`` reads item ``i``'s levels.

    Args:
        url: store path or fsspec URL (``s3://``, ``gs://``, ``memory://``, ``file://``).
        levels: levels to read for every item (each sample's ``"levels"`` has these keys).
        target_size: instead of ``levels``, read per item the smallest level whose short side
            is >= ``target_size`` (level 0 if the image is smaller).
        transform: applied to each decoded level tensor (in the worker).
        storage_options: fsspec options (credentials, ``endpoint_url`` ...).
        device_decode: return :class:`~qpyr.read.payload.LevelPayload` s instead of tensors; decode
            with :func:`decode_batch` on the training device.
        missing_level: with ``levels``, what to do with items that lack one of them (images
            too small for that level): ``"error"`` (default) raises
            :class:`~qpyr.errors.InputError` here, at construction, naming them; ``"skip"``
            leaves them out (``len`` counts the rest; ``ds[i]`` is the ``i``-th item that has
            the levels); ``"coarsest"`` gives them, under the key of each level they lack,
            their coarsest level (so such tensors are larger than the others of that key).
        dtype: dtype of decoded tensors: floating (default float32), or ``torch.uint8`` for
            8-bit sources (0..255 as ``Store.read(..., dtype=torch.uint8)`` gives them: a
            quarter of float32's bytes through the workers' shared memory, normalised on the
            training device; sources above 8 bits raise :class:`~qpyr.errors.InputError`).
            With ``device_decode=True`` pass the dtype to :func:`decode_batch` instead.

    ``ds[i]`` is ``{"name": str, "index": int, "levels": {level: Tensor[C, h, w]}}`` (``index``:
    the item's index in the store, equal to ``i`` unless ``missing_level="skip"`` dropped items): ``dtype``
    (float32) values in [0, 1] for uint8/uint16 sources, source units otherwise, uint8 0..255
    with ``dtype=torch.uint8``; or
    ``{level: LevelPayload}`` with ``device_decode=True``. Works with any sampler, including
    ``DistributedSampler``.
    """

    def __init__(self, url: str, levels: Sequence[int] | int | None = None, *, target_size: int | None = None,
                 transform: Callable[[torch.Tensor], Any] | None = None,
                 storage_options: dict[str, Any] | None = None, device_decode: bool = False,
                 dtype: torch.dtype = torch.float32, missing_level: str = "error"):
        _Source.__init__(self, url, levels, target_size, transform, storage_options, device_decode, dtype,
                         missing_level)

    def __len__(self) -> int:
        return self._count()

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = self._count()
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        return self._sample(self._item(i % n))

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """``[ds[i] for i in indices]``, fetched as one batch (a DataLoader with a batch size
        calls this for every batch)."""
        n = self._count()
        for index in indices:
            if not -n <= int(index) < n:
                raise IndexError(f"index {index} out of range for a dataset of {n} items")
        return self._samples([self._item(int(i) % n) for i in indices])

    def __getstate__(self) -> dict[str, Any]:
        return self._state_for_pickle()

    def __repr__(self) -> str:
        what = f"levels={self.levels}" if self.levels is not None else f"target_size={self.target_size}"
        return f"PyramidDataset({self.url!r}, {what})"


def _spawning() -> bool:
    return multiprocessing.context.get_spawning_popen() is not None


#: Bytes of whole shards a streaming reader process keeps (format 2.0).
DEFAULT_READAHEAD = 256 * 2**20


class StreamingPyramidDataset(_Source, IterableDataset):  # type: ignore[type-arg]
    """Iterable dataset: a shard-aware shuffled stream, split by rank and worker, resumable.

    The order of an epoch is a pure function of ``(seed, epoch)``: shards (rows of
    ``items_per_shard`` items of the first level read) are permuted, consecutive runs of
    ``block_shards`` shards form blocks, and items are permuted within each block — so each
    worker reads from a few shards at a time (shard indexes stay cached) while the order is
    still well mixed. Position ``p`` of the epoch's sequence goes to rank ``p % world_size``;
    each rank's sequence is dealt to DataLoader workers in runs of ``batch_size``, worker
    ``j % num_workers`` getting run ``j`` — which is the order in which a DataLoader with the
    same ``batch_size`` hands out their batches. So the trainer sees exactly its rank's
    sequence, whatever the number of workers, every item once per epoch across ranks.

    Args:
        url, levels, target_size, transform, storage_options, device_decode, dtype,
            missing_level: as in :class:`PyramidDataset` (``"skip"`` streams only the items
            that have the levels).
        shuffle: False streams items in store order.
        seed: shuffling seed.
        block_shards: shards per shuffle block.
        batch_size: the DataLoader's batch size (needed for exact resumption with workers).
        rank, world_size: defaults from ``torch.distributed`` when initialized, else 0 and 1.
        drop_last: give every rank the same number of items (``floor(N / world_size)``,
            dropping the last few items of the epoch's order), as DDP needs.
        readahead_bytes: format-2.0 stores: each reader process fetches every shard it needs
            whole, with one request, and keeps up to this many bytes of shards (default
            256 MiB: a shuffle block of 4 shards of 32 MiB, twice). An epoch then costs one
            request per shard per level read in each rank's worker. 0 reads item ranges instead.

    Call :meth:`set_epoch` before each epoch (it reaches persistent workers too). For exact
    mid-epoch resumption save ``state_dict(samples_seen=k)`` (``k`` = samples this rank has
    consumed; with ``num_workers=0`` it is counted for you) and ``load_state_dict`` it into a
    new dataset before iterating: the stream continues with exactly the remaining samples, even
    with a different number of workers or ranks.
    """

    def __init__(self, url: str, levels: Sequence[int] | int | None = None, *, target_size: int | None = None,
                 shuffle: bool = True, seed: int = 0, block_shards: int = 4, batch_size: int = 1,
                 rank: int | None = None, world_size: int | None = None, drop_last: bool = False,
                 transform: Callable[[torch.Tensor], Any] | None = None,
                 storage_options: dict[str, Any] | None = None, device_decode: bool = False,
                 dtype: torch.dtype = torch.float32, missing_level: str = "error",
                 readahead_bytes: int = DEFAULT_READAHEAD):
        _Source.__init__(self, url, levels, target_size, transform, storage_options, device_decode, dtype,
                         missing_level)
        if int(readahead_bytes) < 0:
            raise InputError(f"Expected readahead_bytes >= 0. Got {readahead_bytes}.")
        self.readahead_bytes = int(readahead_bytes)
        if block_shards < 1 or batch_size < 1:
            raise InputError(f"Expected block_shards >= 1 and batch_size >= 1. Got {block_shards}, {batch_size}.")
        self.shuffle, self.seed, self.block_shards, self.batch_size = shuffle, int(seed), int(block_shards), int(batch_size)
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        self.drop_last = drop_last
        # [epoch, resume_epoch, resume_position]: shared memory, so set_epoch / load_state_dict
        # in the main process reach persistent workers (fork inherits it, spawn ships it).
        self._shared: Any = multiprocessing.RawArray("q", [0, -1, 0])
        self._yielded = 0

    # -- epoch and state -------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return int(self._shared[0])

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next iteration (call before each epoch)."""
        self._shared[0] = int(epoch)
        self._yielded = 0

    def state_dict(self, samples_seen: int | None = None) -> dict[str, Any]:
        """Position in the current epoch: ``samples_seen`` = samples this rank consumed (by
        default those this process iterated: correct for ``num_workers=0``)."""
        seen = self._yielded if samples_seen is None else int(samples_seen)
        if seen < 0:
            raise InputError(f"Expected samples_seen >= 0. Got {seen}.")
        epoch, r_epoch, r_pos = (int(x) for x in self._shared)
        base = r_pos if r_epoch == epoch else 0
        return {"version": _STATE_VERSION, "seed": self.seed, "epoch": epoch, "shuffle": self.shuffle,
                "block_shards": self.block_shards, "items": self._count(),
                "position": base + seen * self.world_size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration of ``state["epoch"]`` starts after
        the samples already consumed (by all ranks)."""
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise InputError(f"Expected a StreamingPyramidDataset state of version {_STATE_VERSION}. Got {state!r}.")
        for k in ("seed", "shuffle", "block_shards"):
            if state[k] != getattr(self, k):
                raise InputError(f"The state was saved with {k}={state[k]!r}; this dataset has {getattr(self, k)!r}.")
        if state["items"] != self._count():
            raise InputError(f"The state was saved for a dataset of {state['items']} items; this one has {self._count()}.")
        self._shared[0] = int(state["epoch"])
        self._shared[1] = int(state["epoch"])
        self._shared[2] = int(state["position"])
        self._yielded = 0

    def __getstate__(self) -> dict[str, Any]:
        d = self._state_for_pickle()
        if not _spawning():
            d["_shared"] = list(self._shared)  # plain copy: a RawArray pickles only when spawning
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        if isinstance(d["_shared"], list):
            d["_shared"] = multiprocessing.RawArray("q", d["_shared"])
        self.__dict__.update(d)

    # -- order ---------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """Store indices of the dataset's items in the order of ``epoch`` (before splitting
        over ranks)."""
        st = self.store
        ids = np.arange(len(st), dtype=np.int64) if self._ids is None else self._ids
        n = len(ids)
        if not self.shuffle:
            return ids.copy()
        rng = np.random.default_rng([self.seed, int(epoch)])
        chosen = self._chosen_levels()
        shard = np.full(len(st), -1, np.int64)
        for li in np.unique(chosen):
            sel = chosen == li
            shard[sel] = st.shard_ids(int(li))[sel]
        shard = shard[ids]
        uniq, inverse = np.unique(shard, return_inverse=True)
        perm = rng.permutation(len(uniq))          # shard order
        block = np.empty(len(uniq), np.int64)
        block[perm] = np.arange(len(uniq)) // self.block_shards
        key = block[inverse]                        # each item's block
        jitter = rng.random(n)                      # order within a block
        return ids[np.lexsort((jitter, key))]

    def _rank_sequence(self, epoch: int, position: int) -> np.ndarray:
        order = self.epoch_order(epoch)
        if self.drop_last and self.world_size > 1:
            order = order[:len(order) // self.world_size * self.world_size]
        rest = order[position:]
        start = (self.rank - position) % self.world_size
        return rest[start::self.world_size]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, r_epoch, r_pos = (int(x) for x in self._shared)
        position = r_pos if r_epoch == epoch else 0
        seq = self._rank_sequence(epoch, position)
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            runs = np.arange(len(seq)) // self.batch_size
            seq = seq[runs % info.num_workers == info.id]
        self._yielded = 0
        self.store.buffer_shards(self.readahead_bytes)  # whole shards, one request each (format 2.0)
        for s in range(0, len(seq), self.batch_size):  # each run of batch_size fetched as one batch
            for sample in self._samples(seq[s:s + self.batch_size].tolist()):
                self._yielded += 1  # counted before the yield: the consumer holds it when it asks
                yield sample

    def __len__(self) -> int:
        """Items this rank streams in a full epoch."""
        n = self._count()
        if self.drop_last and self.world_size > 1:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __repr__(self) -> str:
        return (f"StreamingPyramidDataset({self.url!r}, levels={self.levels}, seed={self.seed}, "
                f"rank={self.rank}/{self.world_size})")
