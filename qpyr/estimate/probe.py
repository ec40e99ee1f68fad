"""The cheap probe: channels, size, dtype, file format and file size of an input, from its
header and its listing, without decoding pixels (the same values :func:`qpyr.inputs.load`
produces). It sizes the corpus: pyramid shapes, bucket layout, file-size covariate."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from qpyr.errors import InputError, InputNotFoundError
from qpyr.io.inputs import DEFAULT_PIXEL_LIMIT, InputRef

__all__ = ["Geom", "level_shapes", "probe"]


@dataclass(frozen=True)
class Geom:
    """What the probe learns about one image (``file_bytes`` None for arrays)."""

    channels: int
    height: int
    width: int
    dtype: str
    file_bytes: float | None
    format: str = ""  # file format from the header ("PNG", "JPEG", "npy", "tiff", ...)


_MODE_CHANNELS = {"1": 1, "L": 1, "LA": 2, "PA": 4, "RGB": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 3,
                  "YCbCr": 3, "LAB": 3, "HSV": 3, "I": 1, "F": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "La": 2}


def _probe_bytes_head(f: Any, where: str, size: int | None, pixel_limit: int) -> Geom:
    from PIL import Image

    head = f.read(32)
    f.seek(0)
    if head[:6] == b"\x93NUMPY":
        version = np.lib.format.read_magic(f)
        try:
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(f)
        except ValueError:  # e.g. format 3.0 (utf-8 header): load it
            f.seek(0)
            arr = np.load(io.BytesIO(f.read()), allow_pickle=False)
            shape, dtype = arr.shape, arr.dtype
        shape = tuple(shape)
        if len(shape) == 2:
            shape = shape + (1,)
        if len(shape) != 3:
            raise InputError(f"{where}: expected an H x W or H x W x C array. Got shape {shape}.")
        h, w, c = (int(x) for x in shape)
        dt = np.dtype(dtype)
        return Geom(c, h, w, "uint8" if dt == np.bool_ else dt.name, size, "npy")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        try:
            import tifffile

            with tifffile.TiffFile(f) as tf:
                s = tf.series[0]
                shape, dt = tuple(int(x) for x in s.shape), np.dtype(s.dtype)
            if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
                shape = (shape[1], shape[2], shape[0])
            if len(shape) == 2:
                shape = shape + (1,)
            if len(shape) == 3:
                return Geom(shape[2], shape[0], shape[1], dt.name, size, "tiff")
        except Exception:
            f.seek(0)  # let Pillow try
        f.seek(0)
    im = Image.open(f)
    w, h = im.size
    if w * h > pixel_limit:
        raise InputError(f"{where}: {h} x {w} pixels exceeds the limit of {pixel_limit}.")
    mode = im.mode
    c = _MODE_CHANNELS.get(mode) or len(im.getbands())
    if mode == "P":
        c = 4 if "transparency" in im.info else 3
    kind = {"I": "int32", "F": "float32", "I;16": "uint16", "I;16B": "uint16", "I;16L": "uint16"}.get(mode, "uint8")
    if im.format == "PNG" and len(head) > 25 and head[24] == 16 and mode in ("RGB", "RGBA", "I;16", "I"):
        kind = "uint16"
    return Geom(c, h, w, kind, size, str(im.format or ""))


def probe(ref: InputRef, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> Geom:
    """Channels, size, dtype and file size of one input, from its header (no decode)."""
    src = ref.source
    if not isinstance(src, str):
        from qpyr.io.inputs import check_array

        a = check_array(np.asarray(src), f"array {ref.name!r}", pixel_limit=pixel_limit, nonfinite="replace")
        return Geom(int(a.shape[0]), int(a.shape[1]), int(a.shape[2]), a.dtype.name, None)
    try:
        if "://" in src:
            import fsspec

            with fsspec.open(src, "rb", **dict(ref.storage_options)) as f:
                size = getattr(f, "size", None)
                return _probe_bytes_head(f, src, int(size) if size is not None else None, pixel_limit)
        size = os.path.getsize(src)
        if size == 0:
            raise InputError(f"{src}: empty file.")
        with open(src, "rb") as f:
            return _probe_bytes_head(f, src, size, pixel_limit)
    except InputError:
        raise
    except FileNotFoundError as e:
        raise InputNotFoundError(f"Input {src!r} does not exist.") from e
    except Exception as e:  # Pillow raises many types for bad headers
        raise InputError(f"{src}: not a readable image ({type(e).__name__}: {e}).") from e


def level_shapes(h: int, w: int) -> list[tuple[int, int]]:
    """(height, width) of every level of the pyramid :func:`qpyr.pack` builds by default."""
    from qpyr.io.pyramid import DEFAULT_MIN_SIDE, default_levels, level_shape

    return [level_shape(h, w, li) for li in range(default_levels(h, w, DEFAULT_MIN_SIDE))]
