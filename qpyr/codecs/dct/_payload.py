"""What entropy decoding of a ``qpyr.dct`` chunk gives: coefficients or a JPEG stream."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DctCoefficients:
    """Entropy-decoded payload: what :meth:`DctCodec.reconstruct` turns into pixels.

    ``planes[i]`` is ``int16 [by, bx, 64]`` quantised coefficients in natural order (with
    ``entropy="fast"`` a view of a frequency-major ``[64, by, bx]`` array: not C-contiguous);
    ``tables`` is ``uint16 [n, 64]`` natural order; ``plane_table[i]`` indexes ``tables``.
    ``shape`` is the chunk's ``(C, H, W)``; ``chroma420`` says planes 1 and 2 are half-size
    Cb/Cr of a YCbCr image, ``ycbcr`` that the three planes are Y, Cb, Cr.
    """

    shape: tuple[int, int, int]
    ycbcr: bool
    chroma420: bool
    tables: np.ndarray
    plane_table: tuple[int, ...]
    planes: tuple[np.ndarray, ...]


@dataclasses.dataclass(frozen=True)
class JfifStream:
    """Payload of an ``entropy="jfif"`` chunk: its validated baseline JPEG stream.

    Decoding it is all of the work (Huffman decoding, IDCT, chroma upsampling, colour), done by
    :meth:`DctCodec.reconstruct` on the target device: libjpeg-turbo on CPU, nvJPEG on CUDA.
    ``shape`` is the chunk's ``(C, H, W)`` (C = 1 or 3), ``chroma420`` its sampling.
    """

    shape: tuple[int, int, int]
    chroma420: bool
    data: bytes

