"""Object storage over fsspec: local paths and any fsspec URL (s3://, gs://, memory://, file://).

:class:`ObjectStore` is the only place qpyr touches storage. It counts bytes and requests
(``io_stats``), retries transient errors with exponential backoff, writes local files
atomically (temporary name + rename), and turns backend errors into :class:`StorageError`
messages that say what to do. Keys are ``/``-separated paths relative to the store root.

Reads of byte ranges are the reader's hot path. On local files they are ``os.pread`` calls on
cached open files (no per-read ``open``, which costs more than reading a small chunk); on
remote filesystems many ranges go to the backend in one ``cat_ranges`` call, which async
backends such as s3fs run concurrently.

An ``ObjectStore`` survives ``fork`` and pickling: the fsspec filesystem is re-created in a
child process (async filesystems are not fork-safe, fsspec#835) and is never pickled.
"""

from __future__ import annotations

import errno
import json
import os
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TypeVar

import fsspec

from qpyr.errors import InputError, StorageError

__all__ = ["ObjectStore", "is_url", "parse_storage_options", "DEFAULT_DEADLINE", "DEADLINE_ENV"]

T = TypeVar("T")

#: Open local files kept for ``pread`` (per ObjectStore).
_MAX_OPEN_FILES = 128
#: Upper bound of one backoff sleep, seconds.
_MAX_BACKOFF = 5.0
#: Seconds one storage operation (all its tries and backoff sleeps together) may take before it
#: fails with a StorageError; ``ObjectStore(deadline=...)`` or the environment variable
#: :data:`DEADLINE_ENV` change it (``0`` or ``none``: no deadline).
DEFAULT_DEADLINE = 60.0
DEADLINE_ENV = "QPYR_STORAGE_DEADLINE"
#: Per-attempt connect / read timeouts given to botocore (s3fs) unless the storage options set
#: their own: an attempt that hangs must leave time for the retries inside the deadline.
_CONNECT_TIMEOUT = 10.0
_READ_TIMEOUT = 30.0


def default_deadline() -> float | None:
    """The deadline from :data:`DEADLINE_ENV`, else :data:`DEFAULT_DEADLINE` (``None``: none)."""
    raw = os.environ.get(DEADLINE_ENV, "").strip()
    if not raw:
        return DEFAULT_DEADLINE
    if raw.lower() in ("0", "none", "off"):
        return None
    try:
        v = float(raw)
    except ValueError:
        raise InputError(f"Expected {DEADLINE_ENV} to be a number of seconds (or 0/none). Got {raw!r}.") from None
    if not v > 0 or v != v or v == float("inf"):
        raise InputError(f"Expected {DEADLINE_ENV} to be a positive number of seconds (or 0/none). Got {raw!r}.")
    return v


def _backend_options(url: str, storage_options: dict[str, Any], deadline: float | None) -> dict[str, Any]:
    """``storage_options`` with qpyr's single-retry-layer defaults for s3fs: botocore makes one
    attempt per call, with connect/read timeouts inside the deadline (qpyr retries, with
    backoff, within the deadline). Options the caller set win."""
    if not url.startswith(("s3://", "s3a://")):
        return storage_options
    cfg = dict(storage_options.get("config_kwargs") or {})
    cfg.setdefault("retries", {"total_max_attempts": 1})
    cap = deadline if deadline is not None else float("inf")
    cfg.setdefault("connect_timeout", min(_CONNECT_TIMEOUT, cap))
    cfg.setdefault("read_timeout", min(_READ_TIMEOUT, cap))
    return dict(storage_options, config_kwargs=cfg)

# Substrings of backend error types/messages, by what they mean (botocore and aiohttp errors
# are not OSErrors; s3fs maps some codes to OSError subclasses and keeps the text of others).
_NO_BUCKET = ("NoSuchBucket", "bucket does not exist")
_AUTH = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "NoCredentials",
         "InvalidToken", "ExpiredToken", "Unable to locate credentials")
_UNREACHABLE = ("EndpointConnectionError", "Could not connect", "ConnectionRefused", "Connection refused",
                "Name or service not known", "nodename nor servname", "ClientConnectorError")
_TRANSIENT = ("Timeout", "timed out", "Throttl", "SlowDown", "RequestLimitExceeded", "ServiceUnavailable",
              "InternalError", "503", "500", "502", "504", "ConnectionReset", "Connection reset",
              "IncompleteRead", "ServerDisconnected", "ClientPayloadError", "BrokenPipe",
              "reduce your request rate")
# Error codes of an object store's reply worth retrying. s3fs turns them into bare OSErrors
# (SlowDown/ServiceUnavailable → EBUSY, InternalError → EREMOTEIO) whose text is only the
# server's message, so the code is read from the botocore error chained as the cause.
_TRANSIENT_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
                              "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "OperationAborted",
                              "BandwidthLimitExceeded", "RequestThrottled", "EC2ThrottledException"})
_TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED,
                               errno.EPIPE, getattr(errno, "EREMOTEIO", errno.EIO)})


def is_url(path: str) -> bool:
    return "://" in path


def _protocol_hint(url: str) -> str:
    proto = url.split("://", 1)[0]
    return {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(proto, "")


def _has(e: BaseException, words: tuple[str, ...]) -> bool:
    text = f"{type(e).__name__}: {e}"
    return any(w in text for w in words)


def _service_reply(e: BaseException) -> tuple[str, int]:
    """``(error code, HTTP status)`` of the service reply behind ``e`` (a botocore-style error
    with a ``response`` dict, raised or chained as a cause), or ``("", 0)``."""
    x: BaseException | None = e
    for _ in range(4):
        if x is None:
            break
        r = getattr(x, "response", None)
        if isinstance(r, dict):
            err, meta = r.get("Error") or {}, r.get("ResponseMetadata") or {}
            try:
                status = int(meta.get("HTTPStatusCode") or 0) if isinstance(meta, dict) else 0
            except (TypeError, ValueError):
                status = 0
            return (str(err.get("Code") or "") if isinstance(err, dict) else ""), status
        x = x.__cause__ or x.__context__
    return "", 0


def classify_error(e: BaseException) -> str:
    """``"missing"`` (no such key), ``"no-bucket"``, ``"auth"``, ``"unreachable"``,
    ``"transient"`` (worth retrying) or ``"fatal"``."""
    if isinstance(e, FileNotFoundError):
        return "no-bucket" if _has(e, _NO_BUCKET) else "missing"
    if isinstance(e, PermissionError) or _has(e, _AUTH):
        return "auth"
    if _has(e, _NO_BUCKET):
        return "no-bucket"
    if isinstance(e, ConnectionRefusedError) or _has(e, _UNREACHABLE):
        return "unreachable"
    if isinstance(e, (ConnectionError, TimeoutError)) or _has(e, _TRANSIENT):
        return "transient"
    code, status = _service_reply(e)
    if code in _TRANSIENT_CODES or status == 429 or status >= 500:
        return "transient"
    if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
        return "transient"
    return "fatal"


class ObjectStore:
    """A store root on any fsspec filesystem, with I/O accounting and retries.

    Args:
        url: local path or fsspec URL of the root.
        storage_options: passed to the fsspec filesystem (e.g. ``endpoint_url``, ``key``,
            ``secret`` for s3fs; credentials otherwise come from the backend's usual
            environment variables and config files).
        retries: extra tries for transient errors (timeouts, throttling, 5xx), with
            exponential backoff from ``backoff`` seconds (with jitter, capped at 5 s). An
            unreachable endpoint gets one extra try. These are the only retries: s3fs and
            botocore are told to make one attempt per call.
        deadline: seconds one operation may take, every try and sleep included (default
            :data:`DEFAULT_DEADLINE`, or :data:`DEADLINE_ENV`; ``None``: no deadline). Past it
            the operation fails with a :class:`StorageError` saying what was being fetched and
            how long it waited. Local files have no deadline.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, *, retries: int = 4,
                 backoff: float = 0.1, deadline: float | None | str = "default"):
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.deadline: float | None = default_deadline() if deadline == "default" else (
            None if deadline is None else float(deadline))
        if self.deadline is not None and not self.deadline > 0:
            raise InputError(f"Expected a positive storage deadline in seconds (or None). Got {deadline!r}.")
        self._ends = threading.local()  # the running operation's deadline (monotonic), per thread
        self._lock = threading.Lock()
        self.bytes_read = 0
        self.requests = 0
        self._connect()

    def _connect(self) -> None:
        url = self.url
        try:
            if is_url(url):
                fs, root = fsspec.core.url_to_fs(url, **_backend_options(url, self.storage_options, self.deadline))
                if hasattr(fs, "retries") and url.startswith(("s3://", "s3a://")):
                    fs.retries = 1  # s3fs's own retry loop: qpyr's _call is the one retry layer
            else:
                fs = fsspec.filesystem("file")
                root = os.path.abspath(url)
        except ImportError as e:
            hint = _protocol_hint(url)
            raise StorageError(
                f"Cannot open {url!r}: {e}." + (f" Install {hint} to access this URL." if hint else "")
            ) from e
        except (ValueError, TypeError) as e:
            raise StorageError(f"Cannot open {url!r}: {e}. Check the URL and storage options.") from e
        self._fs = fs
        self.root = root.rstrip("/") or root
        proto = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        self.local = "file" in proto or "local" in proto
        self._files: OrderedDict[str, IO[bytes]] = OrderedDict()
        self._pid = os.getpid()

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (re-created after a fork)."""
        if self._pid != os.getpid():
            self._lock = threading.Lock()
            self._connect()
        return self._fs

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options, "retries": self.retries,
                "backoff": self.backoff, "deadline": self.deadline}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["storage_options"], retries=state["retries"],  # type: ignore[misc]
                      backoff=state["backoff"], deadline=state.get("deadline", "default"))

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    # -- accounting ------------------------------------------------------------------
    def _count(self, nbytes: int, requests: int = 1) -> None:
        with self._lock:
            self.bytes_read += nbytes
            self.requests += requests

    def io_stats(self) -> dict[str, int]:
        """``{"bytes_read", "requests"}`` since creation or :meth:`reset_io_stats`."""
        with self._lock:
            return {"bytes_read": self.bytes_read, "requests": self.requests}

    def reset_io_stats(self) -> None:
        with self._lock:
            self.bytes_read = 0
            self.requests = 0

    # -- helpers ---------------------------------------------------------------------
    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _error(self, what: str, e: BaseException, kind: str, tries: int) -> StorageError:
        if kind == "no-bucket":
            return StorageError(f"{what}: the bucket of {self.url!r} does not exist ({e}). Create it or fix the URL.")
        if kind == "auth" and self.local:
            return StorageError(f"{what} on {self.url!r}: permission denied ({e}).")
        if kind == "auth":
            return StorageError(f"{what} on {self.url!r}: access denied ({type(e).__name__}: {e}). Check the "
                                "credentials (storage options key/secret, or the backend's environment "
                                "variables such as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).")
        if kind == "unreachable":
            ep = self.storage_options.get("endpoint_url") or (self.storage_options.get("client_kwargs") or {}).get(
                "endpoint_url")
            where = f"endpoint {ep!r}" if ep else "the storage endpoint"
            return StorageError(f"{what} on {self.url!r}: cannot reach {where} after {tries} tries "
                                f"({type(e).__name__}: {e}). Is the endpoint reachable?")
        if kind == "transient":
            return StorageError(f"{what} on {self.url!r} failed after {tries} tries: {type(e).__name__}: {e}")
        return StorageError(f"{what} on {self.url!r} failed: {type(e).__name__}: {e}")

    def _delay(self, attempt: int) -> float:
        """The backoff before retry ``attempt + 1``: ``backoff * 2**attempt`` seconds (capped at
        5 s), jittered down to half of it so clients that failed together do not retry together."""
        d = min(self.backoff * (2 ** attempt), _MAX_BACKOFF)
        return d * (0.5 + random.random() / 2)

    def _timeout(self) -> dict[str, float]:
        """``{"timeout": seconds left}`` for an async fsspec call inside a running operation
        (fsspec's sync wrapper cancels the call when it runs out), else ``{}``."""
        end = getattr(self._ends, "end", None)
        if end is None or not getattr(self._fs, "async_impl", False):
            return {}
        return {"timeout": max(end - time.monotonic(), 0.001)}

    def _late(self, what: str, t0: float, tries: int, e: BaseException | None) -> StorageError:
        cause = f" (last error: {type(e).__name__}: {e})" if e is not None and str(e) else ""
        return StorageError(
            f"{what} on {self.url!r}: no complete answer within the {self.deadline:g} s storage deadline "
            f"(waited {time.monotonic() - t0:.1f} s, {tries} tries){cause}. Is the endpoint up? Set "
            f"{DEADLINE_ENV} (seconds) to wait longer.")

    def _end(self, t0: float) -> float | None:
        """The monotonic time an operation started at ``t0`` must end by (None: no deadline)."""
        return None if self.deadline is None or self.local else t0 + self.deadline

    def _call(self, what: str, fn: Callable[[], T], *, t0: float | None = None) -> T:
        """Run ``fn`` (one backend call) with retries, all within the deadline of the operation
        that started at ``t0`` (default: now)."""
        t0 = time.monotonic() if t0 is None else t0
        end = self._end(t0)
        attempt = 0
        self._ends.end = end
        try:
            while True:
                try:
                    return fn()
                except StorageError:
                    raise
                except Exception as e:  # noqa: BLE001 - classified below; nothing is swallowed
                    kind = classify_error(e)
                    if kind == "missing":
                        raise
                    if end is not None and time.monotonic() >= end:
                        raise self._late(what, t0, attempt + 1, e) from e
                    limit = self.retries if kind == "transient" else min(1, self.retries) if kind == "unreachable" else 0
                    if attempt >= limit:
                        raise self._error(what, e, kind, attempt + 1) from e
                    delay = self._delay(attempt)
                    if end is not None and time.monotonic() + delay >= end:
                        raise self._late(what, t0, attempt + 1, e) from e
                time.sleep(delay)
                attempt += 1
        finally:
            self._ends.end = None

    # -- local fast path -------------------------------------------------------------
    def _file(self, p: str) -> IO[bytes]:
        with self._lock:
            f = self._files.get(p)
            if f is not None:
                self._files.move_to_end(p)
                return f
        f = open(p, "rb", buffering=0)  # noqa: SIM115 - cached; closed on eviction by refcount
        with self._lock:
            self._files[p] = f
            if len(self._files) > _MAX_OPEN_FILES:
                # A reader still holding the evicted object keeps it open until it is done.
                self._files.popitem(last=False)
        return f

    def forget(self, key: str) -> None:
        """Drop cached open files of ``key`` (and keys under it), so the next read sees an object
        another process replaced."""
        if self.local:
            self._forget(self.path(key))

    def _forget(self, p: str | None = None) -> None:
        with self._lock:
            if p is None:
                self._files.clear()
            else:
                for k in [k for k in self._files if k == p or k.startswith(p.rstrip("/") + "/")]:
                    del self._files[k]

    def _pread(self, p: str, start: int | None, end: int | None) -> bytes:
        try:
            f = self._file(p)
        except IsADirectoryError:
            raise FileNotFoundError(p) from None
        fd = f.fileno()
        if start is None:
            start = 0
        if start < 0 or end is None or end < 0:
            size = os.fstat(fd).st_size
            start = max(0, size + start) if start < 0 else start
            end = size if end is None else max(0, size + end) if end < 0 else end
        n = end - start
        if n <= 0:
            return b""
        data = os.pread(fd, n, start)
        while len(data) < n:  # short reads are legal; stop at end of file
            more = os.pread(fd, n - len(data), start + len(data))
            if not more:
                break
            data += more
        return data

    # -- reads -----------------------------------------------------------------------
    def read(self, key: str) -> bytes:
        """Whole object. Raises ``FileNotFoundError`` for a missing key."""
        if self.local and self._pid == os.getpid():
            data = self._call(f"Reading {key}", lambda: self._pread(self.path(key), 0, None))
        else:
            data = self._call(f"Reading {key}", lambda: self.fs.cat_file(self.path(key), **self._timeout()))
        self._count(len(data))
        return bytes(data)

    def read_range(self, key: str, start: int, end: int | None) -> bytes:
        """Bytes ``[start, end)`` of an object; a negative ``start`` counts from the end and
        ``end=None`` reads to the end (so ``(-n, None)`` is the last ``n`` bytes)."""
        return self.read_ranges([key], [start], [end])[0]

    def read_ranges(self, keys: Sequence[str], starts: Sequence[int], ends: Sequence[int | None]) -> list[bytes]:
        """Fetch many byte ranges (concurrently on async backends such as s3fs).

        Each range counts as one request in :meth:`io_stats`. Ranges that fail transiently are
        retried; a missing object raises ``FileNotFoundError`` naming its key.
        """
        n = len(keys)
        if n == 0:
            return []
        if self.local and self._pid == os.getpid():
            out: list[bytes] = []
            for k, s, e in zip(keys, starts, ends, strict=True):
                p = self.path(k)
                out.append(self._call(f"Reading {k}", lambda p=p, s=s, e=e: self._pread(p, s, e)))  # type: ignore[misc]
            self._count(sum(len(b) for b in out), n)
            return out
        results: list[Any] = [None] * n
        todo = list(range(n))
        attempt = 0
        t0 = time.monotonic()
        end = self._end(t0)
        while todo:
            paths = [self.path(keys[i]) for i in todo]
            s_, e_ = [starts[i] for i in todo], [ends[i] for i in todo]
            what = f"Reading {keys[todo[0]]}" + (f" and {len(todo) - 1} more range(s)" if len(todo) > 1 else "")
            got: list[Any] = self._call(
                what,
                lambda paths=paths, s_=s_, e_=e_: self.fs.cat_ranges(paths, s_, e_, on_error="return", **self._timeout()),  # type: ignore[misc]
                t0=t0,
            )
            retry: list[int] = []
            last: BaseException | None = None
            for i, r in zip(todo, got, strict=True):
                if not isinstance(r, BaseException):
                    results[i] = r
                    continue
                kind = classify_error(r)
                if kind == "missing":
                    raise FileNotFoundError(keys[i]) from r
                if end is not None and time.monotonic() >= end:
                    raise self._late(f"Reading {keys[i]}", t0, attempt + 1, r) from r
                limit = self.retries if kind == "transient" else min(1, self.retries) if kind == "unreachable" else 0
                if attempt >= limit:
                    raise self._error(f"Reading {keys[i]}", r, kind, attempt + 1) from r
                retry.append(i)
                last = r
            if retry:
                delay = self._delay(attempt)
                if end is not None and time.monotonic() + delay >= end:
                    raise self._late(f"Reading {keys[retry[0]]}", t0, attempt + 1, last) from last
                time.sleep(delay)
                attempt += 1
            todo = retry
        self._count(sum(len(r) for r in results), n)
        return [bytes(r) for r in results]

    def read_many(self, keys: Sequence[str]) -> list[bytes]:
        """Whole objects, fetched together (concurrently on async backends)."""
        if self.local and self._pid == os.getpid():
            return [self.read(k) for k in keys]
        return self.read_ranges(keys, [0] * len(keys), [None] * len(keys))

    def size(self, key: str) -> int:
        info = self._call(f"Stat {key}", lambda: self.fs.info(self.path(key), **self._timeout()))
        self._count(0)
        return int(info["size"])

    def exists(self, key: str) -> bool:
        return bool(self._call(f"Checking {key}", lambda: self.fs.exists(self.path(key), **self._timeout())))

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """All objects under ``prefix`` (recursive) → size in bytes."""
        base = self.path(prefix)
        try:
            found = self._call(f"Listing {prefix or '/'}", lambda: self.fs.find(base, detail=True, **self._timeout()))
        except FileNotFoundError:
            return {}
        out: dict[str, int] = {}
        fs = self.fs
        root = fs._strip_protocol(self.root) if hasattr(fs, "_strip_protocol") else self.root
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
            self._forget(p)
            tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, p)
            except OSError as e:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise self._local_write_error(p, e) from e
            return
        self._call(f"Writing {key}", lambda: self.fs.pipe_file(p, data, **self._timeout()))

    def _local_write_error(self, p: str, e: OSError) -> StorageError:
        """One line naming the store, the path and the cause of a failed local write."""
        d = os.path.dirname(p)
        while d and not os.path.exists(d):
            d = os.path.dirname(d)
        if d and not os.path.isdir(d):
            why = f"{d!r} is a file, not a directory"
        elif isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            why = f"no permission to write in {d!r}" + (" (read-only file system)" if e.errno == errno.EROFS else "")
        else:
            why = f"{e.strerror or type(e).__name__} (writing under {d!r})"
        return StorageError(f"Cannot write the store {self.url!r} ({p}): {why}. Choose another output path.")

    def delete(self, key: str) -> None:
        if self.local:
            self._forget(self.path(key))
            if not os.path.lexists(self.path(key)):
                return  # nothing there (also when a parent is a file)
        try:
            self._call(f"Deleting {key}", lambda: self.fs.rm(self.path(key), recursive=True, **self._timeout()))
        except FileNotFoundError:
            pass

    def clear(self) -> None:
        """Remove everything under the root."""
        if self.local:
            import shutil

            self._forget()
            if os.path.isdir(self.root):
                shutil.rmtree(self.root)
            elif os.path.exists(self.root):
                os.remove(self.root)
            return
        for k in list(self.list_sizes()):
            self.delete(k)


def parse_storage_options(pairs: Sequence[str] | None) -> dict[str, Any] | None:
    """fsspec storage options from ``KEY=VALUE`` strings (the CLI's ``--storage-option``).

    ``true``/``false`` become booleans, ``{...}`` values JSON objects, and a dotted key
    (``client_kwargs.endpoint_url=...``) a nested dict. ``None`` when there are no pairs.
    """
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for p in pairs:
        k, eq, v = p.partition("=")
        if not eq or not k:
            raise InputError(f"Expected --storage-option KEY=VALUE. Got {p!r}.")
        val: Any = v
        if v.lower() in ("true", "false"):
            val = v.lower() == "true"
        elif v.startswith("{"):
            try:
                val = json.loads(v)
            except ValueError:
                pass
        if "." in k:  # client_kwargs.endpoint_url=... → nested dict
            head, _, tail = k.partition(".")
            out.setdefault(head, {})[tail] = val
        else:
            out[k] = val
    return out
