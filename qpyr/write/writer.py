"""The writer: pack inputs into a store, one shard-owning task at a time, then commit.

:func:`run_pack` drives a pack: one streamed pass lists the inputs into per-task lists under
``.qpyr/`` (:mod:`qpyr.write.listing`), a journal fingerprints the pack
(:mod:`qpyr.write.journal`), tasks (:func:`~qpyr.write.task.pack_task`) run here or on a Dask
cluster (:mod:`qpyr.write.dask`), and the commit (:mod:`qpyr.write.commit`) streams the catalog
and writes the root ``zarr.json`` with the manifest **last**: a store without it is incomplete,
and re-running the same pack skips tasks whose receipts exist. Every step can be killed and
re-run (spec/scale.md has the protocol and its invariants).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from qpyr._version import FORMAT_VERSION, FORMAT_VERSION_1
from qpyr.errors import InputError, QpyrError, StorageError, StoreExistsError
from qpyr.format import manifest as fmt
from qpyr.io.storage import ObjectStore
from qpyr.write.commit import commit, finish, rollback
from qpyr.write.dask import run_on_client
from qpyr.write.dask import tune_worker_process as tune_worker_process
from qpyr.write.journal import JOURNAL, finished_tasks, foreign_files, has_foreign_content, peek_root, read_journal
from qpyr.write.listing import Listing, check_names_against, list_inputs, lists_prefix, task_refs
from qpyr.write.options import DEFAULT_SLOTS_PER_TASK as DEFAULT_SLOTS_PER_TASK
from qpyr.write.options import PackOptions
from qpyr.write.task import pack_task

__all__ = ["run_pack"]
# Imported ``X as X`` above: ``tune_worker_process`` and ``DEFAULT_SLOTS_PER_TASK`` (like
# ``PackOptions``) were imported from this module before the package was split and still are;
# new code imports them from :mod:`qpyr.write`.


def _run_tasks(url: str, ostore: ObjectStore, todo: list[int], listing: Listing, options: PackOptions,
               storage_options: dict[str, Any] | None, client: Any, bar: Any) -> None:
    """Run tasks ``todo``: in this process when ``client`` is None, else on its Dask workers."""
    if client is not None:
        run_on_client(client, url, ostore, todo, listing, options, storage_options, bar)
        return
    for t in todo:
        refs = task_refs(ostore, listing.session, t, listing.mem, storage_options)
        pack_task(url, storage_options, t, refs, options, on_item=(lambda _n: bar.update(1)) if bar else None)
        listing.mem.pop(t, None)


def run_pack(
    inputs: Iterable[Any],
    url: str,
    options: PackOptions,
    *,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    append: bool = False,
    progress: bool = False,
    client: Any = None,
) -> dict[str, Any]:
    """Pack ``inputs`` into the store at ``url``; returns the committed manifest.

    Crash-safe and resumable (spec/scale.md): the inputs are listed once, streamed, into
    per-task lists under ``.qpyr/``; a journal records the pack's fingerprint; tasks write
    their shards and then a receipt; the commit writes the root ``zarr.json`` last. Re-running
    the same call after a crash (even ``SIGKILL``) at any point skips finished tasks and
    completes the pack; every item is packed exactly once.

    ``append=True`` adds the inputs after the store's items (new tasks and shard rows only;
    no existing object is rewritten, readers keep their snapshot). A failed append (bad input)
    is rolled back; ``append=True, overwrite=True`` abandons an unfinished append of other
    inputs. ``client``: a ``distributed.Client``; tasks run on its workers, one per worker
    thread in flight.
    """
    options.make_policy()  # fail fast on a bad policy, before touching storage
    ostore = ObjectStore(url, storage_options)
    mode = "append" if append else "pack"
    root, has_root = peek_root(ostore)
    journal = read_journal(ostore) if ostore.exists(JOURNAL) else None
    finished_fp = None
    if journal is not None and root is not None and root.manifest["generation"] == journal["base_generation"] + 1:
        finish(ostore, root.manifest)  # a commit landed but its cleanup was interrupted
        finished_fp, journal = journal["fingerprint"], None
    elif journal is None and ostore.exists(JOURNAL):
        journal = {"fingerprint": "", "mode": "?", "lists": "", "first_task": 0, "tasks": 0, "base_generation": -1}
    previous = None
    if append:
        if has_root and root is None:
            from qpyr.read.store import open_store

            open_store(ostore)  # raises the reason the store cannot be opened
        previous = root
        if previous is not None and fmt.major_version(previous.manifest) >= 2:
            # a 2.0 store keeps its shard size; records need no slot geometry
            options = replace(options, layout=2, shard_bytes=int(previous.manifest["records"]["shard_bytes"]))
        elif previous is not None:
            options = replace(options, layout=1)  # a 1.x store is appended to in 1.x
            # The store's geometry wins over the call's slots_per_task: existing buckets keep
            # their own (it fixes their items per shard and task slot ranges, format.md §8.3),
            # and no task may hold more items than the slots it owns in any of them.
            own = {bd["path"]: int(bd["slots_per_task"]) for bd in previous.manifest["buckets"]}
            spt = min([int(previous.manifest["slots_per_task"]), *own.values()])
            options = replace(options, slots_per_task=spt,
                              bucket_slots=tuple(sorted((p, s) for p, s in own.items() if s != spt)))
    if journal is None and finished_fp is None:
        if append and not has_root:
            raise InputError(f"no store at {url!r} to append to; drop --append to create one.")
        foreign = [] if append else foreign_files(ostore)
        if foreign:  # never delete what qpyr did not write, with or without overwrite
            n = len(foreign)
            shown = ", ".join(foreign[:5]) + (f", ... ({n - 5} more)" if n > 5 else "")
            raise StoreExistsError(f"{url!r} is not empty: it holds {n} file{'s' if n != 1 else ''} that "
                                   f"{'are' if n != 1 else 'is'} not a qpyr store ({shown}); refusing to overwrite it.")
        if not append and has_root and not overwrite:
            raise StoreExistsError(f"{url!r} already holds a qpyr store; pass --overwrite (overwrite=True) to replace it.")
        if not has_root and not overwrite and has_foreign_content(ostore):
            raise StoreExistsError(f"{url!r} exists and is not empty; pass --overwrite (overwrite=True) to replace it.")
        ostore.delete(".qpyr")  # leftovers of a run killed before its journal was written
    first_task = int(previous.manifest["tasks"]) if previous is not None else 0
    base_gen = int(previous.manifest["generation"]) if previous is not None else 0
    done = finished_tasks(ostore) if journal is not None else set()
    prev_names = previous.catalog.index if previous is not None else None  # O(N) names: the open store's own table
    session = uuid.uuid4().hex[:12]
    try:
        # after an interrupted cleanup the root already holds this pack's names: compare first
        listing = list_inputs(inputs, ostore, options, session=session, mode=mode, first_task=first_task,
                               storage_options=storage_options,
                               previous_names=prev_names if finished_fp is None else None)
        if finished_fp is not None and finished_fp != listing.fingerprint and prev_names is not None:
            check_names_against(ostore, listing, first_task, prev_names)
    except BaseException:
        ostore.delete(lists_prefix(session) if journal is not None or finished_fp is not None else ".qpyr")
        raise
    fresh = True
    if journal is not None:
        if (journal["fingerprint"] == listing.fingerprint and journal["mode"] == mode
                and journal["base_generation"] == base_gen and journal["first_task"] == first_task):
            ostore.delete(lists_prefix(listing.session))  # same inputs: the journal's lists stand
            listing.session = journal["lists"]
            for t in done:
                listing.mem.pop(t, None)
            fresh = False
        elif overwrite:
            if append:
                rollback(ostore, previous.manifest if previous is not None else None, keep=lists_prefix(listing.session))
            else:
                rollback(ostore, None, keep=lists_prefix(listing.session))
            done = set()
        else:
            ostore.delete(lists_prefix(listing.session))
            what = "append" if journal["mode"] == "append" else "pack"
            raise StoreExistsError(
                f"{url!r} holds an unfinished {what} of other inputs; re-run that {what} to complete it, or pass "
                f"--overwrite (overwrite=True) to {'abandon it' if append else 'replace the store'}.")
    elif finished_fp is not None:
        if finished_fp == listing.fingerprint:  # this very pack had committed: nothing left to do
            ostore.delete(".qpyr")
            return root.manifest  # type: ignore[no-any-return]
        if not append and not overwrite:
            ostore.delete(".qpyr")
            raise StoreExistsError(f"{url!r} already holds a qpyr store; pass --overwrite (overwrite=True) to replace it.")
    if fresh and not append and (has_root or has_foreign_content(ostore)):
        rollback(ostore, None, keep=lists_prefix(listing.session))  # overwrite=True: replace the store
    if fresh:
        journal = {"fingerprint": listing.fingerprint, "mode": mode, "lists": listing.session,
                   "first_task": first_task, "tasks": listing.tasks, "items": listing.items,
                   "base_generation": base_gen, "slots_per_task": options.slots_per_task,
                   "format_version": FORMAT_VERSION if options.layout >= 2 else FORMAT_VERSION_1}
        ostore.write(JOURNAL, json.dumps(journal).encode())
    task_ids = range(first_task, first_task + listing.tasks)
    todo = [t for t in task_ids if t not in done]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=listing.items, unit="img", desc="packing",
                   initial=listing.items - sum(min(options.slots_per_task, listing.items - (t - first_task) * options.slots_per_task) for t in todo))
    try:
        _run_tasks(url, ostore, todo, listing, options, storage_options, client, bar)
        manifest = commit(ostore, options, task_ids, previous=previous)
        finish(ostore, manifest)
        return manifest
    except QpyrError as e:
        if not isinstance(e, StorageError):  # a bad input: leave the store as it was before this call
            if previous is None:
                ostore.clear()
            else:
                rollback(ostore, previous.manifest)
        raise
    finally:
        if bar is not None:
            bar.close()
