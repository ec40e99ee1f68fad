"""Inputs: discover image files, ``.npy`` arrays, directories, globs, file lists and URLs; load them.

Discovery is streamed (a generator that never holds the list of inputs): directories, globs
and bucket prefixes are walked one directory (or one 1000-key listing page) at a time, in
lexicographic order of the full path — for S3 that is the order ``ListObjectsV2`` returns, so
a local tree and the same tree in a bucket list identically. Names are stable and derived from
paths: a file given directly is named by its base name; files found under a directory, glob or
prefix by their path relative to it (``sub/photo.jpg``); a :class:`FileList` entry by the entry
itself (or an explicit ``NAME<TAB>PATH``). Loading returns a ``[C, H, W]`` numpy array in the
source dtype, after the pixel-limit guard (checked from the header, before decoding) and the
non-finite check.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from qpyr.errors import InputError, InputNotFoundError, NonFiniteError, PixelLimitError
from qpyr.io.storage import is_url

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_PIXEL_LIMIT",
    "InputRef",
    "FileList",
    "discover",
    "load",
    "check_array",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".npy")
#: Default limit on pixels per image (H * W): 2**28 (268 Mpx), a decompression-bomb guard.
DEFAULT_PIXEL_LIMIT = 2**28
MAX_CHANNELS = 16


@dataclass(frozen=True)
class InputRef:
    """One input: a stable item ``name`` and its ``source`` (path, URL, or in-memory array)."""

    name: str
    source: Any  # str path/URL or np.ndarray
    storage_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        # Item names are stored as UTF-8 (spec/format.md, catalog). A file name that is not
        # valid UTF-8 reaches Python as a str with lone surrogates; refuse it while listing,
        # before anything is written, rather than fail at commit.
        try:
            self.name.encode("utf-8")
        except UnicodeEncodeError:
            shown = self.source if isinstance(self.source, str) else self.name
            raise InputError(
                f"{shown!r}: the item name {self.name!r} is not valid UTF-8 (a file name in another "
                "encoding?); rename the file, or name the input explicitly (NAME<TAB>PATH in a "
                "--from-list file, or a (name, path) pair).") from None


@dataclass(frozen=True)
class FileList:
    """Inputs listed in a text file (``qpyr pack --from-list FILE``), read line by line.

    Each line is ``PATH_OR_URL`` or ``NAME<TAB>PATH_OR_URL``; blank lines and lines starting
    with ``#`` are skipped. Without an explicit name, an entry is named by the entry itself
    minus any URL scheme and leading ``/`` or ``./`` (``s3://bucket/train/cat/1.jpg`` →
    ``bucket/train/cat/1.jpg``; ``/data/a.png`` → ``data/a.png``), so distinct paths give
    distinct, stable names. Entries are single files or objects; they are not checked for
    existence while listing (millions of ``HEAD`` requests): a missing one fails when its task
    loads it.
    """

    path: str


def _is_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def _has_ext(p: str) -> bool:
    return p.lower().endswith(IMAGE_EXTENSIONS)


def _glob_root(pattern: str) -> str:
    parts = pattern.replace("\\", "/").split("/")
    root: list[str] = []
    for p in parts:
        if _is_glob(p):
            break
        root.append(p)
    return "/".join(root)


def _component_regex(c: str) -> str:
    out = "(?!\\.)" if c[:1] in ("*", "?", "[") else ""  # like glob: wildcards skip dot-files
    i = 0
    while i < len(c):
        ch = c[i]
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            j = c.find("]", i + 2 if c[i + 1:i + 2] in ("!", "]") else i + 1)
            if j < 0:
                out += re.escape(ch)
            else:
                body = c[i + 1:j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out += "[" + body.replace("\\", "\\\\") + "]"
                i = j
        else:
            out += re.escape(ch)
        i += 1
    return out


def _glob_regex(rel_pattern: str) -> re.Pattern[str]:
    """Regex for a glob relative to its root: ``*``/``?``/``[]`` within one path component,
    ``**`` any number of directories (not hidden ones)."""
    parts = [p for p in rel_pattern.split("/") if p]
    out = ""
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if p == "**":
            # each repetition starts (or ends) with "/": no ambiguous nesting, no backtracking blow-up
            out += "(?:(?!\\.)[^/]*(?:/(?!\\.)[^/]*)*)?" if last else "(?:(?!\\.)[^/]+/)*"
        else:
            out += _component_regex(p) + ("" if last else "/")
    return re.compile(out + "\\Z", re.DOTALL)


def discover(
    inputs: Iterable[Any] | FileList | str, *, storage_options: dict[str, Any] | None = None
) -> Iterator[InputRef]:
    """Yield an :class:`InputRef` per image, in a stable order, without listing ahead.

    Args:
        inputs: paths, globs (``**`` recursive), directories (recursive), URLs/URL prefixes
            and globs (``s3://bucket/prefix/``, ``s3://bucket/**/*.jpg``), :class:`FileList`
            files, numpy arrays (``[H, W]`` or ``[H, W, C]``, named ``array-00000`` ...), or
            ``(name, array_or_path)`` pairs, or a ``{name: array}`` mapping. ``inputs`` itself
            may be a one-shot iterator.

    Raises:
        InputNotFoundError: a path or pattern matched nothing, or a directory holds no images.
    """
    so = tuple(sorted((storage_options or {}).items()))
    if isinstance(inputs, dict):
        inputs = list(inputs.items())
    if isinstance(inputs, (str, os.PathLike, np.ndarray, FileList)):
        inputs = [inputs]
    n_arrays = 0
    for inp in inputs:
        if isinstance(inp, np.ndarray):
            yield InputRef(f"array-{n_arrays:05d}", inp)
            n_arrays += 1
            continue
        if isinstance(inp, tuple) and len(inp) == 2 and isinstance(inp[0], str):
            src = os.fspath(inp[1]) if isinstance(inp[1], os.PathLike) else inp[1]
            yield InputRef(inp[0], src, so if isinstance(src, str) and is_url(src) else ())
            continue
        if isinstance(inp, FileList):
            yield from _discover_list(inp, so)
            continue
        s = os.fspath(inp)
        if is_url(s):
            yield from _discover_url(s, storage_options or {}, so)
        else:
            yield from _discover_local(s)


def _list_name(entry: str) -> str:
    name = entry.split("://", 1)[1] if is_url(entry) else entry.replace("\\", "/")
    while name.startswith(("/", "./")):
        name = name[2:] if name.startswith("./") else name[1:]
    return name or entry


def _discover_list(fl: FileList, so: tuple[tuple[str, Any], ...]) -> Iterator[InputRef]:
    try:
        f = open(fl.path, encoding="utf-8")  # noqa: SIM115 - closed below; iterated lazily
    except OSError as e:
        raise InputNotFoundError(f"Cannot read the input list {fl.path!r}: {e.strerror}.") from e
    with f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, tab, src = line.partition("\t")
            if not tab:
                src = name.strip()
                name = _list_name(src)
            elif not name or not src.strip():
                raise InputError(f"{fl.path}:{lineno}: expected NAME<TAB>PATH. Got {line!r}.")
            src = src.strip()
            yield InputRef(name, src, so if is_url(src) else ())


def _walk_sorted(root: str, rel: str = "", max_depth: int | None = None) -> Iterator[str]:
    """Relative paths of the files under ``root`` in lexicographic order of the full path
    (a directory sorts as its name plus ``/``); one directory's entries in memory per level.
    ``max_depth``: directories below this many levels are not entered."""
    try:
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            entries = [(e.name + ("/" if e.is_dir() else ""), e.name) for e in it]
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return
    entries.sort()
    for key, name in entries:
        p = f"{rel}/{name}" if rel else name
        if key.endswith("/"):
            if max_depth is None or max_depth > 0:
                yield from _walk_sorted(root, p, None if max_depth is None else max_depth - 1)
        else:
            yield p


def _discover_local(s: str) -> Iterator[InputRef]:
    if _is_glob(s):
        root = _glob_root(s)
        rel_pat = s.replace("\\", "/")[len(root):].lstrip("/")
        pat = _glob_regex(rel_pat)
        depth = None if "**" in rel_pat else rel_pat.count("/")
        n = 0
        for rel in _walk_sorted(root or ".", max_depth=depth):
            if _has_ext(rel) and pat.match(rel):
                n += 1
                yield InputRef(rel, os.path.join(root, rel) if root else rel)
        if not n:
            raise InputNotFoundError(f"No image files match {s!r}.")
        return
    if os.path.isdir(s):
        n = 0
        for rel in _walk_sorted(s):
            if _has_ext(rel):
                n += 1
                yield InputRef(rel, os.path.join(s, rel))
        if n == 0:
            raise InputNotFoundError(
                f"Directory {s!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})."
            )
        return
    if not os.path.exists(s):
        raise InputNotFoundError(f"Input {s!r} does not exist.")
    yield InputRef(os.path.basename(s), s)


#: Keys fetched per S3 listing request (the service's maximum page).
_S3_PAGE = 1000


def _iter_keys(fs: Any, prefix: str) -> Iterator[str]:
    """Full paths (``bucket/key``) of the objects whose path starts with ``prefix``, in
    lexicographic order, one listing page at a time.

    S3 (s3fs): ``ListObjectsV2`` pages without a delimiter, which the service returns sorted.
    Other filesystems: a sorted walk, one directory listing at a time.
    """
    if "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)) and hasattr(fs, "_iterdir"):
        from fsspec.asyn import sync

        bucket, _, key = prefix.partition("/")
        agen = fs._iterdir(bucket, delimiter="", prefix=key)

        async def page() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            try:
                while len(out) < _S3_PAGE:
                    out.append(await agen.__anext__())
            except StopAsyncIteration:
                pass
            return out

        while True:
            got = sync(fs.loop, page)
            for info in got:
                if info.get("type") != "directory" and not info["name"].endswith("/"):
                    yield info["name"]
            if len(got) < _S3_PAGE:
                return
    else:
        base = prefix.rstrip("/")
        yield from _walk_fs(fs, base)


def _walk_fs(fs: Any, path: str) -> Iterator[str]:
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return
    keyed = []
    for e in entries:
        name = e["name"].rstrip("/")
        if name == path.rstrip("/"):
            continue
        keyed.append((name + ("/" if e.get("type") == "directory" else ""), name, e.get("type") == "directory"))
    keyed.sort()
    for _, name, is_dir in keyed:
        if is_dir:
            yield from _walk_fs(fs, name)
        else:
            yield name


def _discover_url(s: str, storage_options: dict[str, Any], so: tuple[tuple[str, Any], ...]) -> Iterator[InputRef]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(s, **storage_options)
    proto = s.split("://", 1)[0]

    def url(p: str) -> str:
        return f"{proto}://{p}"

    if _is_glob(path):
        root = _glob_root(path).rstrip("/")
        pat = _glob_regex(path[len(root):].lstrip("/"))
        n = 0
        for p in _iter_keys(fs, root + "/"):
            rel = p[len(root):].lstrip("/")
            if _has_ext(p) and pat.match(rel):
                n += 1
                yield InputRef(rel, url(p), so)
        if not n:
            raise InputNotFoundError(f"No image files match {s!r}.")
        return
    if fs.isdir(path):
        n = 0
        base = path.rstrip("/")
        for p in _iter_keys(fs, base + "/"):
            if _has_ext(p):
                n += 1
                yield InputRef(p[len(base):].lstrip("/"), url(p), so)
        if n == 0:
            raise InputNotFoundError(f"{s!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
        return
    if not fs.exists(path):
        raise InputNotFoundError(f"Input {s!r} does not exist.")
    yield InputRef(path.rsplit("/", 1)[-1], s, so)


def check_array(
    a: np.ndarray, where: str, *, pixel_limit: int = DEFAULT_PIXEL_LIMIT, nonfinite: str = "error"
) -> np.ndarray:
    """Validate an ``[H, W]`` / ``[H, W, C]`` array and return it as ``[C, H, W]``.

    ``nonfinite``: ``"error"`` (default) rejects NaN/Inf; ``"replace"`` maps NaN to 0 and
    +/-Inf to the largest/smallest finite value of the array.
    """
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise InputError(f"{where}: expected a real numeric array. Got dtype {a.dtype}.")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise InputError(f"{where}: expected an H x W or H x W x C array. Got shape {a.shape}.")
    h, w, c = a.shape
    if h == 0 or w == 0 or c == 0:
        raise InputError(f"{where}: expected a non-empty image. Got shape {a.shape}.")
    if c > MAX_CHANNELS:
        raise InputError(f"{where}: expected at most {MAX_CHANNELS} channels. Got {c} (shape {a.shape}).")
    if h * w > pixel_limit:
        raise PixelLimitError(
            f"{where}: {h} x {w} = {h * w} pixels exceeds the limit of {pixel_limit} "
            "(raise it with --max-pixels / pixel_limit= if the image is trusted)."
        )
    if a.dtype == np.bool_:  # a mask: False/True are 0.0/1.0, stored as 8-bit 0/255
        a = a.astype(np.uint8) * np.uint8(255)
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            if nonfinite != "replace":
                bad = int((~finite).sum())
                raise NonFiniteError(
                    f"{where}: {bad} NaN/Inf value(s); clean the data or pass "
                    "--nonfinite replace (NaN → 0, ±Inf → the finite max/min)."
                )
            fin = a[finite]
            hi = fin.max() if fin.size else 0
            lo = fin.min() if fin.size else 0
            a = np.nan_to_num(a, nan=0.0, posinf=hi, neginf=lo)
    return np.ascontiguousarray(np.moveaxis(a, -1, 0))


def _read_bytes(ref: InputRef) -> bytes:
    src = ref.source
    if is_url(src):
        import fsspec

        with fsspec.open(src, "rb", **dict(ref.storage_options)) as f:
            data: bytes = f.read()
        return data
    with open(src, "rb") as f:
        return f.read()


def _decode_image(data: bytes, where: str, pixel_limit: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # Pillow's own bomb check off: the check below names --max-pixels
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im: Image.Image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as e:
            raise InputError(f"{where}: not a readable image (unknown or corrupt format).") from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise InputError(f"{where}: truncated or corrupt image ({e}).") from e
        w, h = im.size
        if w * h > pixel_limit:
            raise PixelLimitError(
                f"{where}: {h} x {w} = {h * w} pixels exceeds the limit of {pixel_limit} "
                "(raise it with --max-pixels if the image is trusted)."
            )
        if im.format == "PNG" and im.mode in ("RGB", "RGBA", "I;16", "I") and _png_bit_depth(data) == 16:
            return _decode_png16(data, where)
        if im.format == "TIFF":
            arr = _decode_tiff(data)
            if arr is not None:
                return arr
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise InputError(f"{where}: truncated or corrupt image ({e}).") from e
        if im.format == "PNG":
            _check_png_complete(data, where)
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode == "PA":
            im = im.convert("RGBA")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode == "1":
            im = im.convert("L")
        elif mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im, dtype=np.uint16)
        arr = np.asarray(im)
        return arr
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _png_bit_depth(data: bytes) -> int:
    return data[24] if len(data) > 25 and data[:8] == b"\x89PNG\r\n\x1a\n" else 8


def _decode_png16(data: bytes, where: str) -> np.ndarray:
    try:
        import imagecodecs

        return np.asarray(imagecodecs.png_decode(data))
    except ImportError:  # pragma: no cover - imagecodecs is a dependency
        raise InputError(f"{where}: 16-bit colour PNG needs imagecodecs (pip install imagecodecs).") from None
    except Exception as e:
        raise InputError(f"{where}: truncated or corrupt PNG ({e}).") from e


def _check_png_complete(data: bytes, where: str) -> None:
    """Refuse a PNG whose image data ends early. Pillow fills the missing rows with zeros when
    the compressed stream ends cleanly before the last row; libpng (imagecodecs) does not."""
    import imagecodecs

    try:
        imagecodecs.png_decode(data)
    except Exception as e:
        raise InputError(f"{where}: truncated or corrupt PNG ({e}).") from e


def _decode_tiff(data: bytes) -> np.ndarray | None:
    try:
        import tifffile
    except ImportError:
        return None
    try:
        arr = tifffile.imread(io.BytesIO(data))
    except Exception:
        return None  # let Pillow report the problem
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return np.asarray(arr)


def load(ref: InputRef, *, pixel_limit: int = DEFAULT_PIXEL_LIMIT, nonfinite: str = "error") -> np.ndarray:
    """Load one input as ``[C, H, W]`` in its source dtype (see :func:`check_array`)."""
    src = ref.source
    where = ref.name if not isinstance(src, str) else src
    if not isinstance(src, str):
        return check_array(np.asarray(src), f"array {ref.name!r}", pixel_limit=pixel_limit, nonfinite=nonfinite)
    try:
        if src.lower().endswith(".npy"):
            if is_url(src):
                arr = np.load(io.BytesIO(_read_bytes(ref)), allow_pickle=False)
            else:
                arr = np.load(src, allow_pickle=False, mmap_mode="r")
            shape = arr.shape
            if len(shape) >= 2 and int(shape[0]) * int(shape[1]) > pixel_limit:
                raise PixelLimitError(
                    f"{where}: {shape[0]} x {shape[1]} = {int(shape[0]) * int(shape[1])} pixels exceeds the limit "
                    f"of {pixel_limit} (raise it with --max-pixels / pixel_limit= if the array is trusted)."
                )
            return check_array(np.array(arr), where, pixel_limit=pixel_limit, nonfinite=nonfinite)
        data = _read_bytes(ref)
    except FileNotFoundError as e:
        raise InputNotFoundError(f"Input {where!r} does not exist.") from e
    except (InputError, PixelLimitError):
        raise
    except ValueError as e:
        raise InputError(f"{where}: not a readable .npy array ({e}).") from e
    except OSError as e:
        raise InputError(f"{where}: cannot read ({e}).") from e
    if not data:
        raise InputError(f"{where}: empty file.")
    arr = _decode_image(data, where, pixel_limit)
    return check_array(arr, where, pixel_limit=pixel_limit, nonfinite=nonfinite)
