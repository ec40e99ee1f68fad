"""``unpack``: decode items' levels to image files (PNG / TIFF / NPY) under one directory.

Integer sources are written back in their source dtype (``round(value / value_scale)``), so a
lossless store unpacks bit-exact. Float sources are written as float32 (TIFF / NPY only).
Output paths come from stored item names, which are untrusted: :func:`safe_relpath` maps any
name to a path strictly inside the output directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import torch

from qpyr.codecs.quant import value_scale_for
from qpyr.errors import InputError, ItemNotFoundError, StorageError
from qpyr.read.store import Store

__all__ = ["FORMATS", "safe_relpath", "to_source_array", "unpack"]

FORMATS = ("png", "tiff", "npy")

_RESERVED = {"con", "prn", "aux", "nul", "conin$", "conout$", "clock$",
             *(f"com{i}" for i in "0123456789¹²³"), *(f"lpt{i}" for i in "0123456789¹²³")}
# control characters, Windows-forbidden characters, and lone surrogates (not encodable)
_BAD_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*\ud800-\udfff]')
#: Bytes (UTF-8) per path component and components per path that ``safe_relpath`` keeps; the
#: output file name adds ``~<index>_l<level>.<ext>`` (< 40 bytes) and filesystems allow 255.
MAX_COMPONENT_BYTES = 200
MAX_COMPONENTS = 16


def _cap(part: str, nbytes: int) -> str:
    b = part.encode("utf-8")
    if len(b) <= nbytes:
        return part
    import hashlib

    tag = "~" + hashlib.sha256(b).hexdigest()[:8]
    return b[:nbytes - len(tag)].decode("utf-8", "ignore") + tag


def safe_relpath(name: str) -> str:
    """Map an untrusted item name to a relative path strictly inside any directory: no ``..``,
    root, drive, NUL, control or reserved component (``CON``, ``nul.txt`` ...), no component
    over :data:`MAX_COMPONENT_BYTES` bytes, at most :data:`MAX_COMPONENTS` components (longer
    names keep a hash of what was cut, so distinct names stay distinct). Never empty."""
    parts = []
    for part in re.split(r"[\\/]+", name):
        part = _BAD_CHARS.sub("_", part).strip(" .")
        if not part or part in (".", ".."):
            continue
        if part.split(".")[0].strip(" ").lower() in _RESERVED:
            part = "_" + part
        parts.append(_cap(part, MAX_COMPONENT_BYTES))
    if len(parts) > MAX_COMPONENTS:
        parts = parts[:MAX_COMPONENTS - 1] + [_cap("_".join(parts[MAX_COMPONENTS - 1:]), MAX_COMPONENT_BYTES)]
    return "/".join(parts) or "_"


def to_source_array(t: torch.Tensor, source_dtype: str) -> np.ndarray:
    """Decoded ``Tensor[C, H, W]`` → ``[H, W, C]`` numpy in the source dtype (ints rounded and
    clipped) or float32 for float sources."""
    a = t.detach().to("cpu", torch.float64).numpy()
    dt = np.dtype(source_dtype)
    if dt.kind in "iub":
        vs = value_scale_for(dt)
        info = np.iinfo(dt) if dt.kind != "b" else np.iinfo(np.uint8)
        # float64 rounds the bounds of 64-bit types outward (2**63 - 1 -> 2**63) and a value
        # past the bound wraps in the cast: saturate at the largest float inside the range
        lo, hi = (float(x) for x in (info.min, info.max))
        lo = lo if int(lo) >= info.min else float(np.nextafter(lo, 0.0))
        hi = hi if int(hi) <= info.max else float(np.nextafter(hi, 0.0))
        a = np.clip(np.rint(a / vs), lo, hi).astype(dt if dt.kind != "b" else np.uint8)
    else:
        a = a.astype(np.float32)
    return np.moveaxis(a, 0, -1)


def _level_array(store: Store, name: str, li: int, src: str) -> np.ndarray:
    """One level as ``[H, W, C]`` in the source dtype. 32/64-bit integer levels stored
    losslessly are written from their stored values (float32 decoding cannot hold them)."""
    if np.dtype(src).kind in "iu" and np.dtype(src).itemsize >= 4:
        raw = store.read(name, [li], dequantize=False)[li]
        if raw.stored_type == "source" and str(raw.values.dtype).removeprefix("torch.") == src:
            return np.moveaxis(raw.values.cpu().numpy(), 0, -1)
    return to_source_array(store.read(name, [li])[li], src)


def _write(path: str, arr: np.ndarray, fmt: str) -> None:
    tmp = path + ".partial"
    if fmt == "npy":
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    elif fmt == "tiff":
        import tifffile

        tifffile.imwrite(tmp, arr, photometric="rgb" if arr.shape[-1] in (3, 4) else "minisblack")
    else:
        with open(tmp, "wb") as f:
            f.write(png_bytes(arr))
    os.replace(tmp, path)


#: Images with a side below this are written by :func:`_plain_png` (imagecodecs' encoder fails
#: on many 1-pixel-wide images).
_SMALL_PNG_SIDE = 16


def png_bytes(arr: np.ndarray) -> bytes:
    """PNG file bytes of ``[H, W, C]`` uint8/uint16 (C = 1..4), any ``H, W >= 1``."""
    a = np.ascontiguousarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if min(a.shape[:2]) >= _SMALL_PNG_SIDE:
        import imagecodecs

        try:
            return bytes(imagecodecs.png_encode(a))
        except Exception:  # noqa: BLE001 - the plain encoder below handles every shape
            pass
    return _plain_png(np.ascontiguousarray(arr))


def _plain_png(arr: np.ndarray) -> bytes:
    """A plain PNG (ISO/IEC 15948: filter 0 on every row, one zlib IDAT) of ``[H, W, C]``."""
    import struct
    import zlib

    h, w, c = arr.shape
    depth = 16 if arr.dtype.itemsize == 2 else 8
    color = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = arr.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def unpack(
    store: Store,
    out_dir: str,
    *,
    levels: Sequence[int] | None = None,
    items: Sequence[str] | None = None,
    fmt: str = "png",
    on_item: Callable[[str], None] | None = None,
    skipped: list[str] | None = None,
) -> list[str]:
    """Write ``<out_dir>/<item name>_l<level>.<ext>`` files; returns the paths written.

    Items without an asked level are skipped (their names appended to ``skipped`` when given);
    if no item has any asked level, :class:`ItemNotFoundError`. A failed unpack leaves no empty
    output directory of its own making."""
    if fmt not in FORMATS:
        raise InputError(f"Expected --format one of {', '.join(FORMATS)}. Got {fmt!r}.")
    names = list(items) if items else store.names
    for n in names:
        store.item_index(n)  # fail early on unknown names
    root = os.path.realpath(out_dir)
    created = not os.path.exists(root)
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise StorageError(f"Cannot create the output directory {out_dir!r}: {e.strerror or e}.") from e
    try:
        return _unpack_into(store, root, names, levels, fmt, on_item, skipped)
    except BaseException:
        if created:  # a failed unpack leaves no empty directory of its own making behind
            _remove_empty_dirs(root)
        raise


def _remove_empty_dirs(root: str) -> None:
    for dp, _dirs, _files in sorted(os.walk(root, topdown=False), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dp)  # only succeeds on an empty directory
        except OSError:
            pass


def _unpack_into(store: Store, root: str, names: list[str], levels: Sequence[int] | None, fmt: str,
                 on_item: Callable[[str], None] | None, skipped: list[str] | None) -> list[str]:
    missing: list[str] = []
    written: list[str] = []
    used: set[str] = set()
    ext = {"png": "png", "tiff": "tif", "npy": "npy"}[fmt]
    for name in names:
        info = store.item_info(name)
        src = info["dtype"]
        if fmt == "png" and src not in ("uint8", "uint16", "bool"):
            raise InputError(f"Item {name!r} has a {src} source, which PNG cannot hold; use --format tiff or npy.")
        nl = len(info["levels"])
        want = list(range(nl)) if levels is None else list(levels)
        if any(not 0 <= li < nl for li in want):
            if levels is not None and all(li >= 0 for li in want):
                missing.append(name)  # a level this item lacks: skipped and reported
                continue
            bad = next(li for li in want if not 0 <= li < nl)
            raise ItemNotFoundError(f"Item {name!r} has levels 0..{nl - 1}; --level {bad} was asked for.")
        rel = safe_relpath(name)
        stem = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
        if stem.lower() in used:  # two names sanitized to the same path: keep both
            base, j = f"{stem}~{store.item_index(name)}", 0
            stem = base
            while stem.lower() in used:
                j += 1
                stem = f"{base}.{j}"
        used.add(stem.lower())
        for li in want:
            arr = _level_array(store, name, li, src)
            path = os.path.realpath(os.path.join(root, f"{stem}_l{li}.{ext}"))
            if os.path.commonpath([root, path]) != root:
                raise InputError(f"Item name {name!r} maps outside the output directory; refusing to write it.")
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if os.path.commonpath([root, os.path.realpath(os.path.dirname(path))]) != root:
                    raise InputError(f"Item name {name!r} maps outside the output directory; refusing to write it.")
                _write(path, arr, fmt)
            except BaseException as e:
                if os.path.exists(path + ".partial"):
                    os.remove(path + ".partial")  # nothing half-written is left behind
                if not isinstance(e, OSError):
                    raise
                raise StorageError(f"Cannot write {path!r} for item {name!r}: {e.strerror or e}.") from e
            written.append(path)
        if on_item:
            on_item(name)
    if missing and not written:
        asked = ", ".join(str(li) for li in levels or [])
        raise ItemNotFoundError(f"No item has level {asked}: {len(missing)} item(s) asked, none written.")
    if skipped is not None:
        skipped.extend(missing)
    return written
