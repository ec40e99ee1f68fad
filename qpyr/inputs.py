"""Inputs: discover image files, ``.npy`` arrays, directories, globs and URLs; load them.

Discovery is streamed (a generator), names are stable and derived from paths: a file's name is
its base name; files found under a directory or glob are named by their path relative to
that directory (``sub/photo.jpg``). Loading returns a ``[C, H, W]`` numpy array in the source
dtype, after the pixel-limit guard (checked from the header, before decoding) and the
non-finite check.
"""

from __future__ import annotations

import glob as _glob
import io
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError, InputNotFoundError, NonFiniteError, PixelLimitError
from .storage import is_url

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_PIXEL_LIMIT",
    "InputRef",
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


def discover(
    inputs: Iterable[Any], *, storage_options: dict[str, Any] | None = None
) -> Iterator[InputRef]:
    """Yield an :class:`InputRef` per image, in a stable order.

    Args:
        inputs: paths, globs (``**`` recursive), directories (recursive), URLs/URL prefixes
            (``s3://bucket/prefix/``, ``s3://bucket/**/*.jpg``), numpy arrays
            (``[H, W]`` or ``[H, W, C]``, named ``array-00000`` ...), or ``(name, array)``
            pairs, or a ``{name: array}`` mapping.

    Raises:
        InputNotFoundError: a path or pattern matched nothing, or a directory holds no images.
    """
    so = tuple(sorted((storage_options or {}).items()))
    if isinstance(inputs, dict):
        inputs = list(inputs.items())
    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
        inputs = [inputs]
    n_arrays = 0
    for inp in inputs:
        if isinstance(inp, np.ndarray):
            yield InputRef(f"array-{n_arrays:05d}", inp)
            n_arrays += 1
            continue
        if isinstance(inp, tuple) and len(inp) == 2 and isinstance(inp[0], str):
            yield InputRef(inp[0], inp[1])
            continue
        s = os.fspath(inp)
        if is_url(s):
            yield from _discover_url(s, storage_options or {}, so)
        else:
            yield from _discover_local(s)


def _discover_local(s: str) -> Iterator[InputRef]:
    if _is_glob(s):
        root = _glob_root(s)
        found = sorted(p for p in _glob.glob(s, recursive=True) if os.path.isfile(p) and _has_ext(p))
        if not found:
            raise InputNotFoundError(f"No image files match {s!r}.")
        for p in found:
            yield InputRef(os.path.relpath(p, root or ".").replace(os.sep, "/"), p)
        return
    if os.path.isdir(s):
        n = 0
        for dirpath, dirnames, filenames in os.walk(s):
            dirnames.sort()
            for fn in sorted(filenames):
                if _has_ext(fn):
                    p = os.path.join(dirpath, fn)
                    n += 1
                    yield InputRef(os.path.relpath(p, s).replace(os.sep, "/"), p)
        if n == 0:
            raise InputNotFoundError(
                f"Directory {s!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})."
            )
        return
    if not os.path.exists(s):
        raise InputNotFoundError(f"Input {s!r} does not exist.")
    yield InputRef(os.path.basename(s), s)


def _discover_url(s: str, storage_options: dict[str, Any], so: tuple[tuple[str, Any], ...]) -> Iterator[InputRef]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(s, **storage_options)
    proto = s.split("://", 1)[0]

    def url(p: str) -> str:
        return f"{proto}://{p}"

    if _is_glob(path):
        root = _glob_root(path)
        found = sorted(p for p in fs.glob(path) if _has_ext(p))
        if not found:
            raise InputNotFoundError(f"No image files match {s!r}.")
        for p in found:
            yield InputRef(p[len(root):].lstrip("/"), url(p), so)
        return
    if fs.isdir(path):
        n = 0
        for p in sorted(fs.find(path)):
            if _has_ext(p):
                n += 1
                yield InputRef(p[len(path.rstrip("/")):].lstrip("/"), url(p), so)
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
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
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
    Image.MAX_IMAGE_PIXELS = max(pixel_limit, 1)
    try:
        try:
            with warnings.catch_warnings():  # our own limit check below gives the clear error
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as e:
            raise InputError(f"{where}: not a readable image (unknown or corrupt format).") from e
        except Image.DecompressionBombError as e:
            raise PixelLimitError(f"{where}: {e}") from e
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
                    f"{where}: {shape[0]} x {shape[1]} pixels exceeds the limit of {pixel_limit}."
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
