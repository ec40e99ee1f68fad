"""The framing of a ``ctx`` entropy section, shared by stream versions 1, 2 and 4: the three
section lengths and the model header (spec/codecs/dct.md §3, §6.2)."""

from __future__ import annotations

import struct

import numpy as np

from qpyr.codecs.dct._bitio import _BitReader, _gather_bits, _IntBitReader
from qpyr.codecs.dct._contexts import _NCTX
from qpyr.codecs.dct._header import NAME
from qpyr.codecs.dct._tokens import _NT
from qpyr.errors import CodecError


def entropy_sections(data: bytes, pos: int, default_models: bool) -> tuple[bytes, bytes, int]:
    """``(model header bytes, raw bit bytes, byte offset of the rANS words)`` of the section
    starting at ``pos``; the lengths must add up to the end of ``data`` (words: ``4 n`` bytes)."""
    if len(data) < pos + 12:
        raise CodecError(f"Corrupt {NAME} data: truncated before the entropy section.")
    nh, nr, na = struct.unpack_from("<III", data, pos)
    pos += 12
    if nh + nr + na != len(data) - pos or na % 4:
        raise CodecError(f"Corrupt {NAME} data: section lengths do not add up.")
    if default_models and nh:
        raise CodecError(f"Corrupt {NAME} data: default models but a model header.")
    return data[pos : pos + nh], data[pos + nh : pos + nh + nr], pos + nh + nr


def read_model_header(hb: bytes) -> np.ndarray:
    """The model header -> levels ``int64 [contexts, 17]`` (row ``c``: ``L[0..T]`` then zeros;
    all zeros for an absent context). Raises on a truncated header, ``T >= 17`` or ``L[T] = 0``."""
    hr = _IntBitReader(hb)
    present: list[tuple[int, int, int]] = []  # (context, T, bit offset of L[0])
    for ci in range(_NCTX):  # presence bits and alphabet sizes with the scalar reader
        if hr.read(1):
            t = hr.read(5)
            if t >= _NT:
                raise CodecError(f"Corrupt {NAME} data: token alphabet {t + 1} > {_NT}.")
            if 5 * (t + 1) > hr.left:
                raise CodecError(f"Corrupt {NAME} data: model header is truncated.")
            present.append((ci, t, 8 * len(hb) - hr.left))
            hr.left -= 5 * (t + 1)
    levels = np.zeros((_NCTX, _NT), dtype=np.int64)
    if not present:
        return levels
    sizes = np.array([t + 1 for _, t, _ in present])
    starts = np.repeat(np.array([o for _, _, o in present]), sizes)
    starts += 5 * (np.arange(starts.size) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    lv = _gather_bits(_BitReader(hb), starts, 5)  # all 5-bit levels in one gather
    if (lv[np.cumsum(sizes) - 1] == 0).any():
        raise CodecError(f"Corrupt {NAME} data: empty model.")
    rows = np.repeat(np.array([ci for ci, _, _ in present]), sizes)
    cols = np.arange(starts.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    levels[rows, cols] = lv
    return levels
