"""The framing of a ``ctx`` entropy section, shared by stream versions 1, 2 and 4: the three
section lengths and the model header (spec/codecs/dct.md §3, §6.2)."""

from __future__ import annotations

import struct

import numpy as np

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
    all zeros for an absent context). Raises on a truncated header, ``T >= 17`` or ``L[T] = 0``.
    Parsed by a compiled loop (:func:`qpyr._kernels.rans.model_header`)."""
    from qpyr._kernels.rans import MODEL_HEADER_ERRORS, model_header

    levels, err = model_header(hb, _NCTX, _NT)
    if err:
        raise CodecError(f"Corrupt {NAME} data: {MODEL_HEADER_ERRORS[err]}.")
    return levels
