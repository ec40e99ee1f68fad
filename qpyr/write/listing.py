"""The input listing: one streamed pass over the inputs, split into per-task lists.

:func:`list_inputs` writes the ordered inputs of every task to ``.qpyr/lists/<session>/``
(memory O(task), never O(inputs)), fingerprints the pack and checks item names;
:func:`task_refs` reads a task's inputs back when it runs.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from qpyr.errors import FormatError, InputError, InputNotFoundError
from qpyr.io.inputs import InputRef, discover
from qpyr.io.storage import ObjectStore, is_url
from qpyr.write.options import PackOptions

__all__ = ["Listing", "list_inputs", "lists_prefix", "check_names_against", "task_refs"]


@dataclass
class Listing:
    """What one streamed pass over the inputs found."""

    session: str
    fingerprint: str
    tasks: int
    items: int
    #: refs of tasks that hold in-memory arrays (they cannot go to a JSON list); others are in the store
    mem: dict[int, list[InputRef]]


def lists_prefix(session: str) -> str:
    return f".qpyr/lists/{session}"


def _list_key(session: str, task: int) -> str:
    return f"{lists_prefix(session)}/task-{task:08d}.json"


def _array_digest(a: Any) -> bytes:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    if a.size and a.dtype.kind != "O":  # object arrays are refused when loaded
        h.update(a.reshape(-1).view(np.uint8))
    return h.digest()


def _name_hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def list_inputs(inputs: Iterable[Any], ostore: ObjectStore, options: PackOptions, *, session: str, mode: str,
                 first_task: int, storage_options: dict[str, Any] | None, previous_names: Any) -> Listing:
    """One streamed pass over the inputs: write the ordered input list of every task to
    ``.qpyr/lists/<session>/``, fingerprint the pack, and check names.

    Memory: one task's refs, plus 8 bytes per name (a 64-bit hash, to find duplicates at the
    end; colliding hashes are resolved against the written lists) — never the list of inputs.
    In-memory arrays are the exception: they cannot be written to a JSON list, so the refs of
    tasks that hold arrays stay in memory until they are packed (or found done).
    """
    spt = options.slots_per_task
    h = hashlib.sha256(json.dumps({"mode": mode, "options": asdict(options)}, sort_keys=True).encode())
    hashes = array("Q")
    mem: dict[int, list[InputRef]] = {}
    chunk: list[InputRef] = []
    t = first_task
    n = 0

    def flush() -> None:
        nonlocal t, chunk
        recs: list[list[str | None]] = []
        has_arrays = False
        for r in chunk:
            if isinstance(r.source, str):
                recs.append([r.name, r.source])
            else:
                has_arrays = True
                recs.append([r.name, None])
        ostore.write(_list_key(session, t), json.dumps({"task": t, "items": recs}).encode())
        if has_arrays:
            mem[t] = chunk
        t += 1
        chunk = []

    for ref in discover(inputs, storage_options=storage_options):
        src = ref.source
        h.update(ref.name.encode("utf-8", "surrogatepass") + b"\0" +
                 (src.encode("utf-8", "surrogatepass") if isinstance(src, str) else _array_digest(src)) + b"\0")
        if previous_names is not None and ref.name in previous_names:
            raise InputError(f"Item name {ref.name!r} (from {_show(src)}) is already in {ostore.url!r}; "
                             "item names must be unique within a store: rename the input.")
        hashes.append(_name_hash(ref.name))
        chunk.append(ref)
        n += 1
        if len(chunk) == spt:
            flush()
    if chunk:
        flush()
    if n == 0:
        raise InputNotFoundError("No inputs given.")
    srt = np.frombuffer(hashes, np.uint64)
    srt.sort()  # in place: the hashes are the only per-name memory (8 bytes each)
    clash = srt[1:][srt[1:] == srt[:-1]]
    if clash.size:
        _raise_duplicate(ostore, session, first_task, t, mem, set(clash.tolist()))
    return Listing(session, h.hexdigest(), t - first_task, n, mem)


def _show(src: Any) -> str:
    return repr(src) if isinstance(src, str) else "an in-memory array"


def _raise_duplicate(ostore: ObjectStore, session: str, t0: int, t1: int, mem: dict[int, list[InputRef]],
                     clash: set[int]) -> None:
    """Find the names behind colliding hashes (rare: one more pass over the written lists)."""
    seen: dict[str, Any] = {}
    for t in range(t0, t1):
        recs = [[r.name, r.source] for r in mem[t]] if t in mem else json.loads(ostore.read(_list_key(session, t)))["items"]
        for name, src in recs:
            if _name_hash(name) in clash:
                if name in seen:
                    raise InputError(f"Duplicate item name {name!r} (from {_show(seen[name])} and {_show(src)}); "
                                     "item names must be unique within a store.")
                seen[name] = src


def check_names_against(ostore: ObjectStore, listing: Listing, t0: int, names: Any) -> None:
    """Raise :class:`~qpyr.errors.InputError` if a listed name is already in ``names``."""
    for t in range(t0, t0 + listing.tasks):
        recs = ([[r.name, r.source] for r in listing.mem[t]] if t in listing.mem
                else json.loads(ostore.read(_list_key(listing.session, t)))["items"])
        for name, src in recs:
            if name in names:
                raise InputError(f"Item name {name!r} (from {_show(src)}) is already in {ostore.url!r}; "
                                 "item names must be unique within a store: rename the input.")


def task_refs(ostore: ObjectStore, listing_session: str, t: int, mem: dict[int, list[InputRef]],
               storage_options: dict[str, Any] | None) -> list[InputRef]:
    """The inputs of task ``t``: from ``mem`` (in-memory arrays) or its written list."""
    if t in mem:
        return mem[t]
    recs = json.loads(ostore.read(_list_key(listing_session, t)))["items"]
    so = tuple(sorted((storage_options or {}).items()))
    out = []
    for name, src in recs:
        if src is None:
            raise FormatError(f"The unfinished pack in {ostore.url!r} packs in-memory arrays; pass the same arrays "
                              "again to complete it.")
        out.append(InputRef(name, src, so if is_url(src) else ()))
    return out
