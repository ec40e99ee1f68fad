"""Object storage over fsspec: local paths and any fsspec URL (s3://, gs://, memory://, file://).

:class:`ObjectStore` is the only place qpyr touches storage. It counts bytes and requests
(``io_stats``), retries transient errors with exponential backoff, writes local files
atomically (temporary name + rename), and turns backend errors into :class:`StorageError`
messages that say what to do. Keys are ``/``-separated paths relative to the store root.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import fsspec

from .errors import StorageError

__all__ = ["ObjectStore", "is_url"]

T = TypeVar("T")

_TRANSIENT = (ConnectionError, TimeoutError)


def is_url(path: str) -> bool:
    return "://" in path


def _protocol_hint(url: str) -> str:
    proto = url.split("://", 1)[0]
    return {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(proto, "")


class ObjectStore:
    """A store root on any fsspec filesystem, with I/O accounting."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, *, retries: int = 4):
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.retries = retries
        try:
            if is_url(url):
                fs, root = fsspec.core.url_to_fs(url, **self.storage_options)
            else:
                fs = fsspec.filesystem("file")
                root = os.path.abspath(url)
        except ImportError as e:
            hint = _protocol_hint(url)
            raise StorageError(
                f"Cannot open {url!r}: {e}." + (f" Install {hint} to access this URL." if hint else "")
            ) from e
        except ValueError as e:
            raise StorageError(f"Cannot open {url!r}: {e}.") from e
        self.fs = fs
        self.root = root.rstrip("/")
        self.local = getattr(fs, "protocol", None) in ("file", ("file", "local"), ("file",)) or (
            isinstance(fs.protocol, tuple) and "file" in fs.protocol
        )
        self._lock = threading.Lock()
        self.bytes_read = 0
        self.requests = 0

    # -- accounting ------------------------------------------------------------------
    def _count(self, nbytes: int, requests: int = 1) -> None:
        with self._lock:
            self.bytes_read += nbytes
            self.requests += requests

    def io_stats(self) -> dict[str, int]:
        with self._lock:
            return {"bytes_read": self.bytes_read, "requests": self.requests}

    def reset_io_stats(self) -> None:
        with self._lock:
            self.bytes_read = 0
            self.requests = 0

    # -- helpers ---------------------------------------------------------------------
    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except FileNotFoundError:
                raise
            except PermissionError as e:
                raise StorageError(f"{what} on {self.url!r}: permission denied ({e}). Check credentials.") from e
            except _TRANSIENT as e:
                if attempt == self.retries:
                    raise StorageError(
                        f"{what} on {self.url!r} failed after {self.retries + 1} tries: {e}. "
                        "Is the endpoint reachable?"
                    ) from e
            except OSError as e:
                msg = str(e)
                transient = any(s in msg for s in ("Timeout", "timed out", "Connection", "Throttl", "SlowDown", "503", "500"))
                if not transient or attempt == self.retries:
                    raise StorageError(f"{what} on {self.url!r} failed: {e}") from e
            except Exception as e:  # botocore and aiohttp errors are not OSErrors
                name = type(e).__name__
                msg = str(e)
                if "NoSuchBucket" in msg or "NoSuchBucket" in name:
                    raise StorageError(f"{what}: the bucket of {self.url!r} does not exist.") from e
                if any(s in msg or s in name for s in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "NoCredentials")):
                    raise StorageError(f"{what} on {self.url!r}: access denied ({name}). Check credentials.") from e
                transient = any(s in msg or s in name for s in ("Timeout", "Connect", "EndpointConnectionError", "Throttl", "SlowDown"))
                if not transient or attempt == self.retries:
                    raise StorageError(f"{what} on {self.url!r} failed: {name}: {e}") from e
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    # -- reads -----------------------------------------------------------------------
    def read(self, key: str) -> bytes:
        data: bytes = self._call(f"Reading {key}", lambda: self.fs.cat_file(self.path(key)))
        self._count(len(data))
        return data

    def read_range(self, key: str, start: int, end: int) -> bytes:
        data: bytes = self._call(
            f"Reading {key}[{start}:{end}]", lambda: self.fs.cat_file(self.path(key), start=start, end=end)
        )
        self._count(len(data))
        return data

    def read_ranges(self, keys: list[str], starts: list[int], ends: list[int]) -> list[bytes]:
        """Fetch many byte ranges (concurrently on async backends such as s3fs)."""
        if not keys:
            return []
        paths = [self.path(k) for k in keys]
        out: list[Any] = self._call(
            f"Reading {len(keys)} ranges",
            lambda: self.fs.cat_ranges(paths, starts, ends, on_error="return"),
        )
        for k, r in zip(keys, out):
            if isinstance(r, FileNotFoundError):
                raise FileNotFoundError(k)
            if isinstance(r, Exception):
                raise StorageError(f"Reading {k} on {self.url!r} failed: {r}") from r
        self._count(sum(len(r) for r in out), len(keys))
        return out

    def size(self, key: str) -> int:
        info = self._call(f"Stat {key}", lambda: self.fs.info(self.path(key)))
        self._count(0)
        return int(info["size"])

    def exists(self, key: str) -> bool:
        return bool(self._call(f"Checking {key}", lambda: self.fs.exists(self.path(key))))

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """All objects under ``prefix`` (recursive) → size in bytes."""
        base = self.path(prefix)
        try:
            found = self._call(f"Listing {prefix or '/'}", lambda: self.fs.find(base, detail=True))
        except FileNotFoundError:
            return {}
        out: dict[str, int] = {}
        root = self.fs._strip_protocol(self.root) if hasattr(self.fs, "_strip_protocol") else self.root
        for p, info in found.items():
            if info.get("type") == "directory":
                continue
            rel = p[len(root):].lstrip("/") if p.startswith(root) else p
            out[rel] = int(info.get("size") or 0)
        return out

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        yield from self.list_sizes(prefix)

    # -- writes ----------------------------------------------------------------------
    def write(self, key: str, data: bytes) -> None:
        """Write an object; local files are written to a temporary name and renamed."""
        p = self.path(key)
        if self.local:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
            return
        self._call(f"Writing {key}", lambda: self.fs.pipe_file(p, data))

    def delete(self, key: str) -> None:
        try:
            self._call(f"Deleting {key}", lambda: self.fs.rm(self.path(key), recursive=True))
        except FileNotFoundError:
            pass

    def clear(self) -> None:
        """Remove everything under the root."""
        if self.local:
            import shutil

            if os.path.isdir(self.root):
                shutil.rmtree(self.root)
            elif os.path.exists(self.root):
                os.remove(self.root)
            return
        for k in list(self.list_sizes()):
            self.delete(k)
