"""Sources of a corpus: file lists, the sources as given, and whether one is an existing store.

A SOURCE is what :func:`qpyr.pack` takes (directory, glob, image file, URL or bucket prefix,
arrays) or a file list: ``@FILE``, or an existing local ``.txt`` / ``.lst`` file, one path or URL
per line (blank lines and ``#`` comments skipped).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from qpyr.errors import InputNotFoundError, QpyrError
from qpyr.io.inputs import FileList

__all__ = ["LIST_SUFFIXES", "describe_source", "expand_sources", "is_store", "open_local_list", "read_list"]

#: A SOURCE that is an existing local file with one of these suffixes, or any ``@FILE``,
#: is a file list: one path or URL per line; blank lines and ``#`` comments are skipped.
LIST_SUFFIXES = (".txt", ".lst")


def read_list(spec: str, storage_options: dict[str, Any] | None) -> list[str]:
    """The entries of a remote file list ``spec`` (``@URL`` or a URL), read whole."""
    path = spec[1:] if spec.startswith("@") else spec
    try:
        if "://" in path:
            import fsspec

            with fsspec.open(path, "rt", encoding="utf-8", **(storage_options or {})) as f:
                text = f.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputNotFoundError(f"Cannot read file list {path!r}: {e}.") from e
    lines = [ln.strip() for ln in text.splitlines()]
    out = [ln for ln in lines if ln and not ln.startswith("#")]
    if not out:
        raise InputNotFoundError(f"File list {path!r} names no images.")
    return out


def open_local_list(spec: str) -> FileList:
    """A local file list (``@FILE`` or a ``.txt`` / ``.lst`` path) as a streamed
    :class:`qpyr.inputs.FileList`: one line in memory at a time, and entries are not checked for
    existence while listing (a million ``stat`` calls took ~30 s here); a missing or unreadable
    entry counts as unreadable when the sample reaches it. Raises when the file cannot be read
    or names no images (it is read up to its first entry)."""
    path = spec[1:] if spec.startswith("@") else spec
    try:
        with open(path, encoding="utf-8") as f:
            found = any(ln.strip() and not ln.lstrip().startswith("#") for ln in f)
    except (OSError, UnicodeDecodeError) as e:
        raise InputNotFoundError(f"Cannot read file list {path!r}: {e}.") from e
    if not found:
        raise InputNotFoundError(f"File list {path!r} names no images.")
    return FileList(path)


def expand_sources(sources: Any, storage_options: dict[str, Any] | None) -> list[Any]:
    """``sources`` as a list: local file lists become streamed :class:`~qpyr.inputs.FileList`
    sources, remote ones their entries; raises if nothing is left."""
    if isinstance(sources, dict):
        sources = list(sources.items())
    elif isinstance(sources, (str, os.PathLike, np.ndarray)):
        sources = [sources]
    out: list[Any] = []
    for s in sources:
        if isinstance(s, os.PathLike):
            s = os.fspath(s)
        if isinstance(s, str) and (s.startswith("@") or (
                s.lower().endswith(LIST_SUFFIXES) and "://" not in s and os.path.isfile(s))):
            if "://" in (s[1:] if s.startswith("@") else s):
                out += read_list(s, storage_options)
            else:
                out.append(open_local_list(s))
        else:
            out.append(s)
    if not out:
        raise InputNotFoundError("No sources given: pass directories, globs, files, URLs or a file list.")
    return out


def describe_source(s: Any) -> str:
    """A source as text for the result (arrays by shape or name)."""
    if isinstance(s, np.ndarray):
        return f"<array {list(s.shape)}>"
    if isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str):
        return f"<array {s[0]!r}>"
    if isinstance(s, FileList):
        return f"@{s.path}"
    return str(s)


def is_store(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``url`` (local path or fsspec URL) holds a committed qpyr store (a root ``zarr.json``
    whose attributes carry the qpyr manifest)."""
    if not isinstance(url, (str, os.PathLike)):
        return False
    url = os.fspath(url)
    if "://" not in url and not os.path.isdir(url):
        return False
    from qpyr.format.manifest import MANIFEST_KEY
    from qpyr.io.storage import ObjectStore

    try:
        ostore = ObjectStore(url, storage_options)
        if not ostore.exists("zarr.json"):
            return False
        doc = json.loads(ostore.read("zarr.json"))
    except (QpyrError, OSError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("attributes"), dict) and MANIFEST_KEY in doc["attributes"]
