"""The pack's own records under ``.qpyr/``: the journal and the task receipts.

The journal (:data:`JOURNAL`) fingerprints a pack before any task runs; each task writes its
receipt (:func:`receipt_key`) after its shards. A re-run reads both to know what is done
(spec/scale.md). :func:`peek_root` and :func:`has_foreign_content` say what else the store holds.
"""

from __future__ import annotations

import json
from typing import Any

from qpyr.errors import QpyrError
from qpyr.io.storage import ObjectStore

__all__ = ["JOURNAL", "receipt_key", "read_journal", "finished_tasks", "peek_root", "has_foreign_content",
           "foreign_files"]

JOURNAL = ".qpyr/pack.json"


def receipt_key(task: int) -> str:
    return f".qpyr/receipts/task-{task:08d}.json"


def finished_tasks(ostore: ObjectStore) -> set[int]:
    """Task numbers whose receipts exist (those tasks need not run again)."""
    return {int(k.rsplit("-", 1)[1].split(".")[0]) for k in ostore.list_sizes(".qpyr/receipts")
            if k.endswith(".json")}


def read_journal(ostore: ObjectStore) -> dict[str, Any] | None:
    """The journal, or None when it is unreadable, of an older qpyr, or not ours."""
    try:
        j = json.loads(ostore.read(JOURNAL))
    except (FileNotFoundError, ValueError):
        return None
    need = {"fingerprint": str, "mode": str, "lists": str, "first_task": int, "tasks": int, "base_generation": int}
    if not isinstance(j, dict) or any(not isinstance(j.get(k), t) for k, t in need.items()):
        return None  # a journal of an older qpyr, or not ours: treated as an unfinished foreign pack
    return j


def peek_root(ostore: ObjectStore) -> tuple[Any, bool]:
    """(open Store or None, whether a root document exists)."""
    from qpyr.read.store import open_store

    if not ostore.exists("zarr.json"):
        return None, False
    try:
        return open_store(ostore), True
    except QpyrError:
        return None, True


def has_foreign_content(ostore: ObjectStore) -> bool:
    """Whether the store holds anything besides ``.qpyr/``."""
    return any(not k.startswith(".qpyr/") for k in ostore.list_sizes())


def foreign_files(ostore: ObjectStore) -> list[str]:
    """Keys of a store that is neither empty nor recognisably a qpyr store (a root ``zarr.json``
    holding a qpyr manifest, or a qpyr journal directory ``.qpyr/``); ``[]`` when it is either."""
    keys = sorted(ostore.list_sizes())
    if not keys or any(k.startswith(".qpyr/") for k in keys):
        return []
    if "zarr.json" in keys:
        try:
            doc = json.loads(ostore.read("zarr.json"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("attributes"), dict) and "qpyr" in doc["attributes"]:
            return []
    return keys
