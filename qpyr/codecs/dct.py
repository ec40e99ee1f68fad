"""``qpyr.dct``: 8x8 block-DCT lossy image codec with context-modelled ANS entropy coding.

Encoded layout, algorithms and constants are specified in ``spec/codecs/dct.md`` (colour and
chroma resampling in ``spec/codecs/ycbcr420.md``). Decoding is split in two so that the two
halves can run in different places:

* :meth:`DctCodec.decode_coefficients` -- CPU, numpy + ``constriction`` (rANS): bytes ->
  :class:`DctCoefficients` (quantised int16 coefficients and quantisation tables);
* :meth:`DctCodec.reconstruct` -- torch, any device: dequantisation + IDCT + level shift as
  one ``[blocks, 65] @ [65, 64]`` GEMM, fancy chroma upsampling, YCbCr -> RGB as one small
  GEMM plus the luma add, crop, clamp (and ``uint8`` rounding half up).

Three entropy modes (``entropy=``): ``"ctx"`` (default; context-modelled rANS, smallest),
``"fast"`` (zstd over frequency-major int8 planes; larger, several times faster to decode) and
``"jfif"`` (the chunk body is a baseline JPEG stream -- ITU-T T.81 Huffman coding with the
codec's tables: larger than ``ctx``, decoded by libjpeg-turbo on CPU and by nvJPEG through
``torchvision.io.decode_jpeg`` on CUDA; 1- and 3-channel chunks only). Small ``ctx`` chunks may
use built-in default token models instead of a per-chunk model header.
"""

from __future__ import annotations

import dataclasses
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from qpyr.codecs import color
from qpyr.errors import CodecError

__all__ = ["DctCodec", "DctCoefficients", "JfifStream", "ijg_tables", "ZIGZAG"]

NAME = "qpyr.dct"
MAGIC = b"QDCT"
VERSION = 2  # 1: ctx entropy only (flags bits 3, 4 zero); 2 adds the fast mode and default models
VERSION_JFIF = 3  # 3 adds flags bit 6 (entropy="jfif"); written only by jfif streams, so ctx/fast stay version 2
_FLAG_JFIF = 64
_FLAG_ABBREV = 128  # with bit 6: the JPEG stream omits DQT and DHT (header tables, standard Huffman tables)

_UV = np.add.outer(np.arange(8), np.arange(8)).ravel()
# qpyr "ssim" family base tables (natural order): linear in u + v, chroma 1.75x luma.
_LUMA_SSIM = np.floor(16 * (1 + 0.15 * _UV) + 0.5).astype(np.int64)
_CHROMA_SSIM = np.floor(28 * (1 + 0.15 * _UV) + 0.5).astype(np.int64)

# Annex K tables (natural row-major order).
_LUMA_K = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.int64,
)  # fmt: skip
_CHROMA_K = np.array(
    [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
     24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99]
    + [99] * 32,
    dtype=np.int64,
)  # fmt: skip


def _zigzag() -> np.ndarray:
    order = sorted(
        ((u, v) for u in range(8) for v in range(8)),
        key=lambda p: (p[0] + p[1], p[1] if (p[0] + p[1]) % 2 == 0 else p[0]),
    )
    return np.array([u * 8 + v for u, v in order], dtype=np.int64)


#: ``ZIGZAG[k]`` is the natural (row-major) index of the k-th coefficient in zigzag order.
ZIGZAG = _zigzag()
_UNZIGZAG = np.argsort(ZIGZAG)


def _dct_matrix() -> np.ndarray:
    n = np.arange(8)
    d = np.cos((2 * n[None, :] + 1) * n[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    return np.kron(d, d)  # [64 freq, 64 pixel]: coef = M @ block


_DCT64 = _dct_matrix()


def ijg_tables(quality: int, family: str = "annexk") -> np.ndarray:
    """Base tables scaled the IJG way: ``uint16 [2, 64]`` (luma, chroma), natural order.

    ``family="annexk"``: the JPEG Annex K tables (psycho-visual, steep in frequency).
    ``family="ssim"``: qpyr's tables for RGB-SSIM targets, ``round(16 (1 + 0.15 (u + v)))`` for
    luma and ``round(28 (1 + 0.15 (u + v)))`` for chroma (u, v = vertical, horizontal
    frequency). SSIM weighs structure at every frequency alike, so much flatter tables than
    Annex K spend bits where SSIM sees them: 11-12 % fewer bytes at equal RGB-SSIM 0.95 on the
    demo photos' levels 0-3 (a parametric sweep of slope and chroma ratio; spec/codecs/dct.md).
    """
    s = 5000 // quality if quality < 50 else 200 - 2 * quality
    bases = (_LUMA_K, _CHROMA_K) if family == "annexk" else (_LUMA_SSIM, _CHROMA_SSIM)
    out = [(b * s + 50) // 100 for b in bases]
    return np.clip(np.stack(out), 1, 255).astype(np.uint16)


# --------------------------------------------------------------------------------------------
# Codec configuration


def _chunk_array(chunk: np.ndarray) -> np.ndarray:
    """``chunk`` as the ``uint8 [C, H, W]`` array the encoder takes (C in 1..255, H, W >= 1)."""
    arr = np.asarray(chunk)
    if arr.dtype != np.uint8 or arr.ndim != 3 or min(arr.shape) < 1 or arr.shape[0] > 255:
        raise ValueError(f"Expected a uint8 array [C, H, W] with C in 1..255. Got {arr.dtype} {arr.shape}.")
    return arr


def pad_for_dct(arr: np.ndarray, height: int, width: int, *, unit: int = 16) -> np.ndarray:
    """Pad ``[C, h, w]`` to ``[C, height, width]`` so that the padding costs almost no bits.

    Samples up to the next multiple of ``unit`` (16 = one 4:2:0 macroblock) replicate the edge
    (no ringing into the visible area). Whole ``unit`` blocks past that are *constant*: blocks to
    the right of the image repeat the mean of the last visible block of their block row, block
    rows below the image repeat the mean of the first block of the last visible block row. With
    the codec's left/up DC prediction those blocks code as zero residual and no AC, where edge
    replication would code a stripe of texture per padded block. Decoders crop, so the fill is
    invisible; any padding rule decodes with the same decoder.
    """
    c, h, w = arr.shape
    if height < h or width < w:
        raise ValueError(f"pad_for_dct: target {height}x{width} is smaller than {h}x{w}")
    h1, w1 = min(height, -(-h // unit) * unit), min(width, -(-w // unit) * unit)
    out = np.empty((c, height, width), dtype=arr.dtype)
    out[:, :h1, :w1] = np.pad(arr, ((0, 0), (0, h1 - h), (0, w1 - w)), mode="edge")
    if width > w1:
        x0 = max(0, w1 - unit)
        for y0 in range(0, h1, unit):
            m = out[:, y0:y0 + unit, x0:w1].reshape(c, -1).mean(axis=1)
            out[:, y0:y0 + unit, w1:] = np.round(m).astype(arr.dtype)[:, None, None]
    if height > h1:
        y0 = max(0, h1 - unit)
        m = out[:, y0:h1, :min(unit, w1)].reshape(c, -1).mean(axis=1)
        out[:, h1:, :] = np.round(m).astype(arr.dtype)[:, None, None]
    return out


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


@dataclasses.dataclass(frozen=True)
class DctCodec:
    """8x8 DCT codec for ``uint8 [C, H, W]`` chunks.

    Parameters (keyword only)
        quality: 1..100, IJG scaling of the base tables (ignored when ``tables`` is given), or
            ``"chunk"``: each chunk was encoded with its own quality, read from its header (how
            quality-target policies pool items of different qualities into one bucket). A
            ``"chunk"`` codec decodes but cannot encode: encode with a concrete quality.
        tables: 1 or 2 tables of 64 ints in 1..65535, **natural (row-major) order**; the
            second (chroma) table defaults to the first.
        chroma: ``"420"`` (YCbCr with half-resolution chroma; 3-channel input only -- other
            channel counts are coded plane by plane with the luma table) or ``"444"``.
        rdo: zero isolated +-1 coefficients whose rate outweighs their distortion.
        entropy: ``"ctx"`` (context-modelled rANS, smallest), ``"fast"`` (zstd over
            frequency-major int8 coefficient planes: ~25% larger, several times faster to
            decode) or ``"jfif"`` (a baseline JPEG stream with these tables, Huffman tables
            optimised per chunk: ~17% larger than ``ctx``, decoded by libjpeg-turbo / nvJPEG,
            the fastest to decode; 1- or 3-channel chunks, tables <= 255, H, W <= 65500).
            The decoder reads the mode from the stream.
        family: base tables that ``quality`` scales: ``"annexk"`` (JPEG Annex K) or ``"ssim"``
            (qpyr's flat tables for SSIM targets, see :func:`ijg_tables`). Recorded in the
            stream (flags bit 5).
    """

    quality: int | Literal["chunk"] = 90
    tables: tuple[tuple[int, ...], ...] | None = None
    chroma: Literal["420", "444"] = "420"
    rdo: bool = True
    entropy: Literal["ctx", "fast", "jfif"] = "ctx"
    family: Literal["annexk", "ssim"] = "annexk"

    def __init__(
        self,
        *,
        quality: int | str = 90,
        tables: Sequence[Sequence[int]] | np.ndarray | None = None,
        chroma: str = "420",
        rdo: bool = True,
        entropy: str = "ctx",
        family: str = "annexk",
    ) -> None:
        if quality != "chunk":
            if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
                raise ValueError(f"quality: expected an int in 1..100 or 'chunk'. Got {quality!r}.")
            if not 1 <= int(quality) <= 100:
                raise ValueError(f"quality: expected an int in 1..100 or 'chunk'. Got {quality}.")
        if chroma not in ("420", "444"):
            raise ValueError(f"chroma: expected '420' or '444'. Got {chroma!r}.")
        if not isinstance(rdo, bool):
            raise ValueError(f"rdo: expected a bool. Got {rdo!r}.")
        if entropy not in ("ctx", "fast", "jfif"):
            raise ValueError(f"entropy: expected 'ctx', 'fast' or 'jfif'. Got {entropy!r}.")
        if family not in ("annexk", "ssim"):
            raise ValueError(f"family: expected 'annexk' or 'ssim'. Got {family!r}.")
        norm: tuple[tuple[int, ...], ...] | None = None
        if tables is not None:
            try:
                arr = np.asarray(tables)
            except Exception as e:  # ragged nested sequences
                raise ValueError(f"tables: expected 1 or 2 lists of 64 ints. Got {tables!r}.") from e
            if arr.ndim == 1:
                arr = arr[None]
            if arr.ndim != 2 or arr.shape[0] not in (1, 2) or arr.shape[1] != 64:
                raise ValueError(f"tables: expected 1 or 2 tables of 64 ints. Got shape {arr.shape}.")
            if arr.dtype.kind not in "iu" or arr.min() < 1 or arr.max() > 65535:
                raise ValueError("tables: expected integers in 1..65535 (natural order).")
            if entropy == "jfif" and arr.max() > 255:
                raise ValueError("tables: entropy='jfif' writes 8-bit baseline JPEG tables; expected integers in "
                                 f"1..255. Got a maximum of {int(arr.max())}.")
            norm = tuple(tuple(int(v) for v in row) for row in arr)
        object.__setattr__(self, "quality", "chunk" if quality == "chunk" else int(quality))
        object.__setattr__(self, "tables", norm)
        object.__setattr__(self, "chroma", chroma)
        object.__setattr__(self, "rdo", rdo)
        object.__setattr__(self, "entropy", entropy)
        object.__setattr__(self, "family", family)

    # -- configuration round trip -----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """``{"name": "qpyr.dct", "configuration": {...}}`` with defaults left out."""
        cfg: dict[str, Any] = {}
        if self.quality != 90:
            cfg["quality"] = self.quality
        if self.tables is not None:
            cfg["tables"] = [list(t) for t in self.tables]
        if self.chroma != "420":
            cfg["chroma"] = self.chroma
        if not self.rdo:
            cfg["rdo"] = False
        if self.entropy != "ctx":
            cfg["entropy"] = self.entropy
        if self.family != "annexk":
            cfg["family"] = self.family
        return {"name": NAME, "configuration": cfg}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DctCodec:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        if not isinstance(data, Mapping) or data.get("name") != NAME:
            raise ValueError(f"Expected a mapping with name {NAME!r}. Got {data!r}.")
        extra = set(data) - {"name", "configuration"}
        if extra:
            raise ValueError(f"Expected keys 'name' and 'configuration'. Got extra {sorted(extra)}.")
        cfg = data.get("configuration", {}) or {}
        unknown = set(cfg) - {"quality", "tables", "chroma", "rdo", "entropy", "family"}
        if unknown:
            raise ValueError(f"Unknown {NAME} configuration keys: {sorted(unknown)}.")
        return cls(**cfg)

    def table_array(self) -> np.ndarray:
        """The two quantisation tables in use, ``uint16 [2, 64]`` natural order."""
        if self.tables is None:
            if self.quality == "chunk":
                raise ValueError("quality 'chunk' describes stored chunks (each header holds its quality); "
                                 "encode with a concrete quality 1..100.")
            return ijg_tables(self.quality, self.family)
        t = np.array(self.tables, dtype=np.uint16)
        return np.concatenate([t, t]) if len(t) == 1 else t

    # -- encode -----------------------------------------------------------------------------

    def encode(self, chunk: np.ndarray) -> bytes:
        """Encode ``uint8 [C, H, W]`` (C in 1..255, H, W >= 1) to bytes."""
        arr = _chunk_array(chunk)
        c, h, w = arr.shape
        ycbcr = c == 3
        sub = ycbcr and self.chroma == "420"
        fast = self.entropy == "fast"
        jfif = self.entropy == "jfif"
        if jfif:
            _jfif_check_shape(c, h, w)
        flags = (1 if sub else 0) | (2 if ycbcr else 0) | (4 if self.tables is not None else 0) | (8 if fast else 0)
        if self.tables is None and self.family == "ssim":
            flags |= 32
        if jfif:
            flags |= _FLAG_JFIF
        head = MAGIC + struct.pack("<BBIIH", VERSION_JFIF if jfif else VERSION, flags, h, w, c)
        if self.tables is None:
            head += struct.pack("<B", self.quality)
        else:
            head += struct.pack("<B", len(self.tables))
            head += np.array(self.tables, dtype="<u2").tobytes()
        if jfif:
            tables = self.table_array()
            full = _jfif_encode(arr, tables, sub, optimize=True)
            if len(full) < _JFIF_ABBREV_BELOW:
                # small chunks: ~0.5 kB of tables can outweigh optimised Huffman codes
                abbrev = _jfif_abbreviate(_jfif_encode(arr, tables, sub, optimize=False))
                if len(abbrev) < len(full):
                    return head[:5] + bytes([flags | _FLAG_ABBREV]) + head[6:] + abbrev
            return head + full
        coefs, classes = self._coefficients(arr)
        if fast:
            return head + _fast_encode(coefs)
        body, default = _entropy_encode(coefs, classes)
        if default:
            head = head[:5] + bytes([flags | 16]) + head[6:]
        return head + body

    def _coefficients(self, arr: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
        """Padded planes -> quantised ``int16 [by, bx, 64]`` (natural order) and context classes."""
        c, h, w = arr.shape
        ycbcr = c == 3
        sub = ycbcr and self.chroma == "420"
        m = 16 if sub else 8
        hp, wp = -(-h // m) * m, -(-w // m) * m
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32)[None]
        x = torch.nn.functional.pad(x, (0, wp - w, 0, hp - h), mode="replicate") if (hp != h or wp != w) else x
        tables = self.table_array()
        if ycbcr:
            ycc = color.rgb_to_ycbcr(x)
            planes = [ycc[:, :1]]
            chroma = ycc[:, 1:]
            if sub:
                chroma = color.downsample_420(chroma)
            planes += [chroma[:, :1], chroma[:, 1:]]
            plane_table = (0, 1, 1)
        else:
            planes = [x[:, i : i + 1] for i in range(c)]
            plane_table = (0,) * c
        coefs = []
        for p, ti in zip(planes, plane_table, strict=False):
            img = p[0, 0].numpy().astype(np.float64)
            coefs.append(_forward_quantise(img, tables[ti], self.rdo))
        classes = [0 if (not ycbcr or i == 0) else 1 for i in range(len(coefs))]
        return coefs, classes

    # -- decode -----------------------------------------------------------------------------

    def decode_coefficients(self, data: bytes, shape: Sequence[int]) -> DctCoefficients | JfifStream:
        """Entropy-decode ``data`` (CPU only). ``shape`` is the expected ``(C, H, W)``.

        A ``jfif`` chunk gives a :class:`JfifStream` (its validated JPEG stream): the whole of
        its decoding happens in :meth:`reconstruct`, on the target device."""
        try:
            return _decode_coefficients(bytes(data), tuple(int(s) for s in shape))
        except CodecError:
            raise
        except Exception as e:  # anything a corrupt stream provokes deeper down
            raise CodecError(f"Corrupt {NAME} data: {e}") from e

    def reconstruct(
        self, payload: DctCoefficients | JfifStream, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Pixels ``Tensor[C, H, W]`` in [0, 255] on ``device``: float32 unrounded, or uint8."""
        return reconstruct(payload, device, dtype)

    def reconstruct_batch(self, payloads: Sequence[DctCoefficients | JfifStream],
                          device: str | torch.device) -> list[torch.Tensor] | None:
        """``uint8`` reconstructions of many chunks in one decoder call, or None where there
        is none: JPEG streams on CUDA with torchvision (one batched nvJPEG call). Callers fall
        back to :meth:`reconstruct` per chunk on None."""
        dev = torch.device(device)
        dec = _gpu_jpeg_decoder() if dev.type == "cuda" else None
        if dec is None or not payloads or not all(isinstance(p, JfifStream) for p in payloads):
            return None
        try:
            return _gpu_jpeg_decode(dec, payloads, dev)  # type: ignore[arg-type]
        except TypeError:  # a torchvision without batched decode_jpeg: decode one by one
            return None

    def simulate(self, chunk: np.ndarray) -> np.ndarray:
        """``decode(encode(chunk))`` without the entropy coder: ``uint8 [C, H, W]``.

        Bit-exact with the real round trip (the entropy stage is lossless), several times
        cheaper: quality searches measure candidates with it and entropy-code only the winner.
        """
        arr = _chunk_array(chunk)
        c = arr.shape[0]
        if self.entropy == "jfif":  # Huffman tables do not change pixels: skip their optimisation pass
            _jfif_check_shape(*arr.shape)
            sub = c == 3 and self.chroma == "420"
            stream = JfifStream((int(c), int(arr.shape[1]), int(arr.shape[2])), sub,
                                _jfif_encode(arr, self.table_array(), sub, optimize=False))
            return _jfif_reconstruct(stream, torch.device("cpu"), torch.uint8).numpy()
        coefs, _ = self._coefficients(arr)
        ycbcr = c == 3
        payload = DctCoefficients(
            shape=(int(c), int(arr.shape[1]), int(arr.shape[2])), ycbcr=ycbcr,
            chroma420=ycbcr and self.chroma == "420", tables=self.table_array(),
            plane_table=(0, 1, 1) if ycbcr else (0,) * c, planes=tuple(coefs),
        )
        return reconstruct(payload, "cpu", torch.uint8).numpy()

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        """Decode to ``uint8 [C, H, W]`` (entropy decode + reconstruct on CPU + round)."""
        payload = self.decode_coefficients(data, shape)
        return reconstruct(payload, "cpu", torch.uint8).numpy()


# --------------------------------------------------------------------------------------------
# Transform


def _forward_quantise(img: np.ndarray, table: np.ndarray, rdo: bool) -> np.ndarray:
    hp, wp = img.shape
    by, bx = hp // 8, wp // 8
    blocks = (img - 128.0).reshape(by, 8, bx, 8).transpose(0, 2, 1, 3).reshape(by, bx, 64)
    coef = blocks @ _DCT64.T
    t = table.astype(np.float64)
    scaled = coef / t
    q = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    if rdo:
        # A lone +-1 coefficient costs several bits (its position, its sign) but the
        # distortion it removes is at most (|c|/T)^2 - (|c|/T - 1)^2 steps^2; drop those
        # whose scaled magnitude is barely above the rounding threshold.
        q = np.where((np.abs(q) == 1) & (np.abs(scaled) < _RDO_T), 0.0, q)
        q[..., 0] = np.sign(scaled[..., 0]) * np.floor(np.abs(scaled[..., 0]) + 0.5)
    return np.clip(q, -_MAXC, _MAXC).astype(np.int16)


_IDCT64 = torch.from_numpy(_DCT64.astype(np.float32))
_MAT_CACHE: dict[tuple[bytes, float, str], torch.Tensor] = {}
# YCbCr -> RGB: chroma columns of the JFIF matrix. IDCT output of a chroma plane is the centred
# chroma itself (pixel - 128); the +128 level shift is carried by the luma IDCT.
_CHROMA_RGB = torch.tensor(color.YCBCR_TO_RGB, dtype=torch.float32)[:, 1:].contiguous()


def _dequant_idct(table: np.ndarray, offset: float, device: torch.device) -> torch.Tensor:
    """``[65, 64]``: rows 0..63 = ``diag(T) @ M`` (dequantisation fused into the IDCT matrix),
    row 64 = ``offset`` (a constant added to every pixel via a ones column). Cached."""
    key = (table.tobytes(), offset, str(device))
    m = _MAT_CACHE.get(key)
    if m is None:
        if len(_MAT_CACHE) > 64:
            _MAT_CACHE.clear()
        tab = torch.from_numpy(table.astype(np.float32))
        m = torch.cat([tab[:, None] * _IDCT64, torch.full((1, 64), float(offset))]).to(device)
        _MAT_CACHE[key] = m
    return m


def _idct(planes: Sequence[np.ndarray], table: np.ndarray, offset: float, device: torch.device) -> torch.Tensor:
    """Same-shape planes sharing one table -> ``float32 [P, 8by, 8bx]``: pixels - 128 + offset."""
    by, bx, _ = planes[0].shape
    n = by * bx
    npl = len(planes)
    if all(p.transpose(2, 0, 1).flags.c_contiguous for p in planes):
        # Frequency-major planes (entropy="fast"): build the GEMM operand as [65, P*n] with
        # contiguous row copies and hand BLAS its transpose (a stride flag, no copy). Copying
        # them into a block-major [P*n, 65] operand instead is a strided transpose that costs
        # as much as the GEMM itself. Same products, same sums: bit-identical output.
        qt = torch.empty(65, npl * n, device=device)
        for i, p in enumerate(planes):
            qt[:64, i * n : (i + 1) * n].copy_(torch.from_numpy(p.transpose(2, 0, 1)).to(device).view(64, n))
        qt[64] = 1.0
        q = qt.t()
    else:
        # int16 -> float32 conversion writes straight into one [P*n, 65] GEMM operand (no
        # stack); column 64 is ones, so the offset row of the matrix adds the level shift.
        q = torch.empty(npl * n, 65, device=device)
        for i, p in enumerate(planes):
            q[i * n : (i + 1) * n, :64].copy_(torch.from_numpy(p).to(device).reshape(n, 64))
        q[:, 64] = 1.0
    # one [blocks, 65] @ [65, 64] GEMM: on CPU this beats the separable 8x8 form (tiny-K
    # batched matmuls) and all-zero-AC skipping (gather/scatter cost more than the GEMM).
    pix = torch.mm(q, _dequant_idct(table, offset, device))
    return pix.view(npl, by, bx, 8, 8).permute(0, 1, 3, 2, 4).reshape(npl, by * 8, bx * 8)


def reconstruct(
    payload: DctCoefficients | JfifStream, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Torch half of decoding: :class:`DctCoefficients` -> ``Tensor[C, H, W]`` in [0, 255].

    ``dtype=torch.float32`` gives unrounded samples; ``torch.uint8`` rounds half up
    (``floor(x + 0.5)``: the 0.5 is folded into the level shift) after clamping. A
    :class:`JfifStream` is decoded by a JPEG decoder instead (integer samples either way).
    """
    if dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"dtype: expected torch.float32 or torch.uint8. Got {dtype}.")
    dev = torch.device(device)
    if isinstance(payload, JfifStream):
        return _jfif_reconstruct(payload, dev, dtype)
    c, h, w = payload.shape
    shift = 128.5 if dtype == torch.uint8 else 128.0
    tabs, pt = payload.tables, payload.plane_table
    if payload.ycbcr:
        y = _idct(payload.planes[:1], tabs[pt[0]], shift, dev)
        ch = _idct(payload.planes[1:], tabs[pt[1]], 0.0, dev)
        _, hp, wp = y.shape
        if payload.chroma420:
            # bilinear 2x == libjpeg fancy upsampling; measured faster on CPU than separable
            # slicing, conv_transpose or pixel-shuffle forms, and than upsampling 3 RGB
            # contributions after a low-resolution colour matrix.
            ch = color.upsample_420(ch[None], hp, wp)[0]
        out = torch.mm(_CHROMA_RGB.to(dev), ch.reshape(2, -1)).view(3, hp, wp)
        out += y  # luma (carrying the +128 level shift) added to all three channels
    else:
        out = _idct(payload.planes, tabs[pt[0]], shift, dev)  # every plane uses table 0
    out = out[:, :h, :w].clamp_(0.0, 255.0)
    if dtype != torch.uint8:
        return out
    if out.device.type == "cpu":
        # numpy's float32 -> uint8 cast is vectorised (~4x torch's on CPU); both truncate,
        # which on samples clamped to [0, 255] (carrying the +0.5) is the same floor.
        return torch.from_numpy(out.numpy().astype(np.uint8))
    return out.to(dtype)


# --------------------------------------------------------------------------------------------
# Entropy coding: tokens, contexts, rANS (constriction) and a raw bit stream

_RDO_T = 0.62  # |coef|/step below which a lone +-1 is zeroed (RDO)
_MAXC = 2047  # largest |quantised coefficient| (and DC residual is < 4096)
_NT = 17  # tokens 0..16: t < 8 is the magnitude; t >= 8 is bit length t - 4, with t - 5 extra bits
_NCLASS = 2  # 0: luma / generic plane, 1: chroma
_BAND = np.array([0] * 3 + [1] * 7 + [2] * 18 + [3] * 36)  # zigzag position -> AC band
_DS = np.array([0, 1, 2, 2, 3, 3, 3, 3, 3, 3] + [4] * 54)  # eob - k -> bucket
_NB_EDGES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48])  # neighbour-mean eob buckets
# contexts of one class: DC | EOB black (8) | EOB white (12) | AC 4 bands x 5 ds x 4 dn
_CTX_DC, _CTX_EB, _CTX_EW, _CTX_AC = 0, 1, 9, 21
_CTX_PER_CLASS = _CTX_AC + 4 * 5 * 4
_NCTX = _NCLASS * _CTX_PER_CLASS


def _tokens(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Magnitudes -> (token, extra value, extra bit count)."""
    m = m.astype(np.int64)
    bl = np.frexp(np.maximum(m, 1).astype(np.float64))[1].astype(np.int64)
    big = m >= 8
    tok = np.where(big, bl + 4, m)
    nx = np.where(big, bl - 1, 0)
    extra = np.where(big, m - (np.int64(1) << np.maximum(bl - 1, 0)), 0)
    return tok, extra, nx


class _BitWriter:
    def __init__(self) -> None:
        self.vals: list[np.ndarray] = []
        self.widths: list[np.ndarray] = []

    def write(self, values: np.ndarray, widths: np.ndarray | int) -> None:
        v = np.asarray(values, dtype=np.int64).ravel()
        w = np.broadcast_to(np.asarray(widths, dtype=np.int64), v.shape).ravel()
        self.vals.append(v)
        self.widths.append(w)

    def getvalue(self) -> bytes:
        if not self.vals:
            return b""
        v = np.concatenate(self.vals)
        w = np.concatenate(self.widths)
        total = int(w.sum())
        bits = np.zeros(total, dtype=np.uint8)
        start = np.cumsum(w) - w
        for j in range(int(w.max(initial=0))):
            sel = w > j
            bits[start[sel] + j] = (v[sel] >> (w[sel] - 1 - j)) & 1
        return np.packbits(bits).tobytes()


class _IntBitReader:
    """Scalar MSB-first reader for the small model header (Python ints: no numpy overhead)."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = 8 * len(data)

    def read(self, n: int) -> int:
        if n > self.left:
            raise CodecError(f"Corrupt {NAME} data: model header is truncated.")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)


class _BitReader:
    """Vectorised MSB-first reader of fields up to 25 bits wide: each field is cut out of the
    big-endian 32-bit window starting at its first byte (no per-bit unpacking)."""

    def __init__(self, data: bytes) -> None:
        self.bytes = np.frombuffer(data + b"\0\0\0\0", dtype=np.uint8).astype(np.int64)
        self.nbits = 8 * len(data)
        self.pos = 0
        self._words: np.ndarray | None = None

    @property
    def words(self) -> np.ndarray:
        """``words[i]``: the big-endian 32-bit window starting at byte ``i`` (built once, so a
        read gathers one word per field instead of four bytes)."""
        if self._words is None:
            b = self.bytes
            self._words = (b[:-3] << 24) | (b[1:-2] << 16) | (b[2:-1] << 8) | b[3:]
        return self._words

    def read(self, widths: np.ndarray | int, count: int | None = None) -> np.ndarray:
        if count is not None:
            w = np.full(count, int(widths), dtype=np.int64)
        else:
            w = np.asarray(widths, dtype=np.int64)
        if w.size == 0:
            return np.zeros(0, dtype=np.int64)
        end = np.cumsum(w)
        total = int(end[-1])
        if self.pos + total > self.nbits:
            raise CodecError("Corrupt qpyr.dct data: raw bit stream is truncated.")
        start = end - w
        start += self.pos
        word = self.words[start >> 3]
        self.pos += total
        start &= 7
        start += w
        word >>= 32 - start
        word &= _LOW_MASK[w]
        return word


def _gather_bits(r: _BitReader, starts: np.ndarray, width: int) -> np.ndarray:
    """Fields of ``width`` bits at absolute bit offsets ``starts`` (already bounds-checked)."""
    i = starts >> 3
    b = r.bytes
    word = (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]
    return (word >> (32 - (starts & 7) - width)) & ((1 << width) - 1)


def _quantise_histogram(counts: np.ndarray) -> np.ndarray:
    """Counts -> 5-bit log levels (0 = absent, 31 = the most frequent token)."""
    lv = np.zeros(counts.size, dtype=np.int64)
    nz = counts > 0
    if nz.any():
        r = np.log2(counts[nz] / counts.max())
        lv[nz] = np.clip(np.round(2 * r) + 31, 1, 31)
    return lv


def _model(levels: np.ndarray) -> Any:
    import constriction

    t = int(np.nonzero(levels)[0].max()) + 1
    p = np.where(levels[:t] > 0, np.exp2((levels[:t] - 31) / 2.0), 0.0)
    if t == 1:
        p = np.array([1.0, 0.0])
    return constriction.stream.model.Categorical(p, perfect=False)


def _models(levels: np.ndarray, sizes: np.ndarray, ctxs: list[int]) -> dict[int, Any]:
    """Vectorised :func:`_model` for many contexts (levels concatenated, ``sizes`` = T + 1)."""
    import constriction

    cat = constriction.stream.model.Categorical
    p = np.where(levels > 0, np.exp2((levels - 31) / 2.0), 0.0)
    out: dict[int, Any] = {}
    a = 0
    one = np.array([1.0, 0.0])
    for ci, n in zip(ctxs, sizes.tolist(), strict=True):
        out[ci] = cat(one if n == 1 else p[a : a + n], perfect=False)
        a += n
    return out


# Default token models (spec/codecs/dct.md §6.2, "default models"): for each of the 202
# contexts, the 17 levels L[0..16] as base-32 digits 0-9A-V. Trained by tools/train_dct_models.py
# on scikit-image photos not used by tools/bench_rd.py.
_DEFAULT_LEVELS = (
    "VVTSSRRQUUTRPLA11VKJFHJDGKHA777777VNNILMHJOLD888888VQQLNPJLRPJ777777"
    "VTVPSTNPVUQ999999RRVNQSNPVVR888888ONSKOQLOUVS777777LJRILONLTVT666666"
    "FDIBFINHRTV444444VLKBFJBDFE5555555VUSJMNCGKG9999999QPVJMMFGKE9666666"
    "USVPSTONRKCCCCCCCVRUQTVQQUOFAAAAAATOROQTSQVPAAAAAAAPLNJMONOVQG666666"
    "NKLJLOLNVVJ777777IFGEGHHISVN444444G7EBDFCCOVT777777C59A7A5CHSV555555"
    "555555555HV555555VVVVVVVVVVVVVVVVV4VSQNMKIJ444444448VSPNMLKN88888888"
    "BVRNKHIHJBBBBBBBBVVVVVVVVVVVVVVVVVVTROMIKEF99999999UVUSQOPONA7777777"
    "VUROOMNJKCCCCCCCCVVVVVVVVVVVVVVVVVVTPNJEHCAAAAAAAAAVUSRPONMO97777777"
    "VUSQOMLJNGAAAAAAAVVVVVVVVVVVVVVVVVVTPNKJJGKCCCCCCCCVVTSRQQPTQI777777"
    "VVUTRRQPVUPA66666VVVVVVVVVVVVVVVVVVVSSQNJMPJJJJJJJJVVUSRQPOSOFCCCCCC"
    "TUTTSSRRVUTSQLC117VKC77777777777774VQMGB667744444445VQNKGECC75555555"
    "8VQLIHB8EA8888888VQKFB9B9B99999999VSOKHEACD75555555VSPLJHGFH84444444"
    "VTQMKGFFHDD888888VQJEB999999999999VRMIEA77D55555555VSPLJGFDE42222222"
    "VTQNLIGFF85855555VSNJGEDAAAAAAAAAAVSOKHECCE86666666VTQOMKJHJD3111111"
    "VUSQOMLKLGA411111VVTRPNKFKFFFFFFFFVUSQONLKKEBBBBBBBVUSRPOMLNIB666666"
    "VVUTSSRQVTSPLC1113VME87633333333334VNGB8644444444444VOID944444444444"
    "6VPJFAA8666666666VRLGD866CB4444444VSNHEC97875555555VTOJGE99A74444444"
    "VTPLHEBDC96666666VPJC7333333333333VQKGB665333333333VRMHD866622222222"
    "VSOKFDA8A53333333VQMHDA82222222222VRMHCB85522222222VSOJGD86611111111"
    "VTQNKHECD11111111VSPMKHFFE77777777VTQNLIGFHA6666666VTQOMKHGHC6333333"
    "VVTSRQPORPKB111113VLFCA57B333333335VOJE9BA8555555555VNGBA95955555555"
    "7VOFBA7CB77777777VQJF8533333333333VSNJEC86666666666VSMGE688666666666"
    "VSMG7AA9777777777VPIC5452222222222VQKFC644444444444VSNIEB65633333333"
    "VRLFB694644444444VPJD8631111111111VQKFC773333333333VSNIEA96611111111"
    "VSOJFC96111111111VRNJEBB8444444444VRNJED8A555555555VSOKGDB7922222222"
    "VUROMKIGI91111111VUSRQPONSRPLHC111VFGDED7BE55555555VKLGJHBHJBB777777"
    "VNOJMLDKNED666666VSTNPOINQJI777777STVPSRJPSML888888PQVPSSJQTNO888888"
    "OOVORTKRUOO999999MLVKPQOQVQR999999VKKDGF5DF76333333VTSKMKAHJ77777777"
    "RPVLOMCIK85555555URVRTSGPQFCAAAAAAUQURVVMTUKIAAAAAAQLPORTPTVLK999999"
    "OJMLNPLQVOM999999OMMMOPMQVSQDDDDDDOKMLOONPVTTDDDDDDPJKJONLOUTVFFFFFF"
    "NGKKKGINSSVGGGGGGNNNNNNNNPNVNNNNNNVVVVVVVVVVVVVVVVV3VSPONMJO33333333"
    "8VTQONLLPC8888888FVQNMLJHKFFFFFFFFVVVVVVVVVVVVVVVVVVTQNLMJHL77777777"
    "VUTRRQONRC6666666VTQNMLKLMFFFFFFFFVVVVVVVVVVVVVVVVVVVSPNLKIM99999999"
    "VVUSQPONQI6666666VURPONMLNKECCCCCCVVVVVVVVVVVVVVVVVVVTQONLKNFDDDDDDD"
    "VVUTSRQQTQG777777VVUSRRQQUTME88888VVVVVVVVVVVVVVVVVUVVTRQQQSPLLLLLLL"
    "UUUTTSSRVSNEEEEEETUTTSRRRVURN999996VNGC9866666666663VQLHDB8633333333"
    "7VROMJIGI97777777AVQLGCACAAAAAAAAAVRMIC999999999999VSPLHEA9955555555"
    "VTRPNKJHIA6666666VTPMKIFCCAAAAAAAAVRMHCB99999999999VSOKIECAA55555555"
    "VTRONLKILD4444444VUQNLIHFHD8888888VURMJGECECCCCCCCCVUROMKHGF88888888"
    "VUTRQONMOH5555555VVTRQPNMQKB777777VVTRQNLKMIIIIIIIIVVURPQNMMFFFFFFFF"
    "VVTSRQOOQLDBBBBBBVVUTSRQQTQME777778VKC8888888888888BVOIBBBBBBBBBBBBB"
    "CVNICCCCCCCCCCCCCCVMGCCCCCCCCCCCCCVQJB9999999999999VSNHDBBBBBBBBBBBB"
    "VSNIGCCCCCCCCCCCCVSNGDDDDDDDDDDDDDVNGB8888888888888VOGB9999999999999"
    "VPIFAAAAAAAAAAAAAVQJHEBBBBBBBBBBBBVPH97777777777777VQLFD999999999999"
    "VRMID999999999999VRNHDB99999999999VRMHE8A6666666666VSOJFEA8B88888888"
    "VSOKHE9BA66666666VTPMKHGEC444444449VJFE999999999999JVONJJJJJJJJJJJJJ"
    "KVKMKKKKKKKKKKKKKMVMMMMMMMMMMMMMMMVQF99999999999999VRJJJJJJJJJJJJJJJ"
    "VSKKKKKKKKKKKKKKKVSMMMMMMMMMMMMMMMVOC77777777777777VOHHHHHHHHHHHHHHH"
    "VNHHHHHHHHHHHHHHHVOJJJJJJJJJJJJJJJVPF55555555555555VPKDDDDDDDDDDDDDD"
    "VPIEEEEEEEEEEEEEEVPGGGGGGGGGGGGGGGVRKB7555555555555VRMDBBBBBBBBBBBBB"
    "VRMGAAAAAAAAAAAAAVRNHAAAAAAAAAAAAA"
)
_DEFAULTS: dict[int, Any] = {}


def _default_models() -> dict[int, Any]:
    if not _DEFAULTS:
        lv = np.array([int(ch, 32) for ch in _DEFAULT_LEVELS], dtype=np.int64)
        _DEFAULTS.update(_models(lv, np.full(_NCTX, _NT), list(range(_NCTX))))
    return _DEFAULTS


def _pad1(a: np.ndarray, edge: bool) -> np.ndarray:
    """``np.pad(a, 1, mode="edge" if edge else "constant")`` for 2-D ``a``, without np.pad's
    Python overhead (a dozen calls per chunk: most of a small chunk's context modelling)."""
    h, w = a.shape
    p = np.empty((h + 2, w + 2), dtype=a.dtype)
    p[1:-1, 1:-1] = a
    if edge:
        p[0, 1:-1] = a[0]
        p[-1, 1:-1] = a[-1]
        p[:, 0] = p[:, 1]
        p[:, -1] = p[:, -2]
    else:
        p[0] = p[-1] = 0
        p[1:-1, 0] = p[1:-1, -1] = 0
    return p


def _neighbour_sum(e: np.ndarray) -> np.ndarray:
    p = _pad1(e, True)
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]


def _dc_residual(dc: np.ndarray) -> np.ndarray:
    r = dc.copy()
    r[:, 1:] = dc[:, 1:] - dc[:, :-1]
    r[1:, 0] = dc[1:, 0] - dc[:-1, 0]
    return r


def _dc_undo(r: np.ndarray) -> np.ndarray:
    r = r.copy()
    r[:, 0] = np.cumsum(r[:, 0])
    return np.cumsum(r, axis=1)


def _black_mask(by: int, bx: int) -> np.ndarray:
    return (np.add.outer(np.arange(by), np.arange(bx)) % 2) == 0


def _eob_contexts_black(dc: np.ndarray) -> np.ndarray:
    dc = dc.astype(np.int64)
    p = _pad1(dc, True)
    g = np.abs(p[:-2, 1:-1] - dc) + np.abs(p[2:, 1:-1] - dc) + np.abs(p[1:-1, :-2] - dc) + np.abs(p[1:-1, 2:] - dc)
    return np.minimum(np.frexp(g.astype(np.float64))[1], 7)


def _eob_contexts_white(eob_black_only: np.ndarray, black: np.ndarray) -> np.ndarray:
    """Bucket of the rounded mean of the in-bounds black 4-neighbours' eob (for white blocks)."""
    ep = _pad1(eob_black_only.astype(np.int64) * black, False)
    bp = _pad1(black.astype(np.int64), False)
    s = ep[:-2, 1:-1] + ep[2:, 1:-1] + ep[1:-1, :-2] + ep[1:-1, 2:]
    n = bp[:-2, 1:-1] + bp[2:, 1:-1] + bp[1:-1, :-2] + bp[1:-1, 2:]
    n = np.maximum(n, 1)
    return np.searchsorted(_NB_EDGES, (2 * s + n) // (2 * n), side="right") - 1


def _ac_positions(eob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = eob.ravel().astype(np.int64)
    total = int(e.sum())
    blk = np.repeat(np.arange(e.size), e)
    k = np.arange(total) - np.repeat(np.cumsum(e) - e, e) + 1
    return blk, k


def _ac_contexts(eob: np.ndarray, blk: np.ndarray, k: np.ndarray) -> np.ndarray:
    e = eob.ravel().astype(np.int64)
    nb = _neighbour_sum(eob.astype(np.int64)).ravel()
    ds = _DS[e[blk] - k]
    d = nb[blk] - 4 * k
    dn = (d >= -8).astype(np.int64) + (d >= 4) + (d >= 24)
    return (_BAND[k] * 5 + ds) * 4 + dn


# Decoder-side lookup tables for _ac_contexts (same values, fewer numpy passes):
# _AC_BD[64 k + eob] = (band(k) * 5 + ds(eob - k)) * 4 and _AC_DN[d + 252] = dn(d) for the
# neighbour term d = nb - 4 k in [-252, 252] (nb is a sum of four eobs <= 63).
_AC_K, _AC_E = np.divmod(np.arange(64 * 64), 64)
_AC_BD = (_BAND[_AC_K] * 5 + _DS[np.maximum(_AC_E - _AC_K, 0)]) * 4
_AC_D = np.arange(-252, 253)
_AC_DN = (_AC_D >= -8).astype(np.int64) + (_AC_D >= 4) + (_AC_D >= 24)


def _ac_contexts_lut(eob: np.ndarray, blk: np.ndarray, k: np.ndarray, base: int) -> np.ndarray:
    """``base + _ac_contexts(eob, blk, k)`` by table lookups (decoder; equal by construction)."""
    e = eob.ravel().astype(np.int64)
    nb = _neighbour_sum(eob.astype(np.int64)).ravel()
    idx = k * 64
    idx += e[blk]
    out = (_AC_BD + base)[idx]
    idx = nb[blk]
    idx += 252
    idx -= 4 * k
    out += _AC_DN[idx]
    return out


class _Plane:
    """Per-plane symbol layout shared by encoder and decoder (decode order)."""

    def __init__(self, by: int, bx: int, cls: int) -> None:
        self.by, self.bx, self.cls = by, bx, cls
        self.black = _black_mask(by, bx)
        self.base = cls * _CTX_PER_CLASS


def _symbols(coefs: list[np.ndarray], classes: list[int]) -> tuple[list[tuple[np.ndarray, np.ndarray]], bytes]:
    """Per phase (decode order): (global context per symbol, token); and the raw bit stream."""
    segments: list[tuple[np.ndarray, np.ndarray]] = []
    raw = _BitWriter()
    for q, cls in zip(coefs, classes, strict=False):
        by, bx, _ = q.shape
        pl = _Plane(by, bx, cls)
        qz = q.reshape(by, bx, 64)[..., ZIGZAG].astype(np.int64)
        dc = qz[..., 0]
        r = _dc_residual(dc).ravel()
        tok, extra, nx = _tokens(np.abs(r))
        segments.append((np.full(r.size, pl.base + _CTX_DC), tok))
        _write_fields(raw, r, extra, nx)
        nzpos = np.where(qz[..., 1:] != 0, np.arange(1, 64), 0)
        eob = nzpos.max(axis=-1)
        for sel, ctx in (
            (pl.black, pl.base + _CTX_EB + _eob_contexts_black(dc)),
            (~pl.black, pl.base + _CTX_EW + _eob_contexts_white(eob, pl.black)),
        ):
            tok, extra, nx = _tokens(eob[sel])
            segments.append((ctx[sel], tok))
            _write_fields(raw, None, extra, nx)
        blk, k = _ac_positions(eob)
        ctx = pl.base + _CTX_AC + _ac_contexts(eob, blk, k)
        v = qz.reshape(-1, 64)[blk, k]
        tok, extra, nx = _tokens(np.abs(v))
        segments.append((ctx, tok))
        _write_fields(raw, v, extra, nx)
    return segments, raw.getvalue()


def _histogram(segments: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    hist = np.zeros((_NCTX, _NT), dtype=np.int64)
    for ctx, tok in segments:
        np.add.at(hist, (ctx, tok), 1)
    return hist


def _pack(segments: list[tuple[np.ndarray, np.ndarray]], rb: bytes, models: Mapping[int, Any], hb: bytes) -> bytes:
    import constriction

    groups: list[tuple[int, np.ndarray]] = []
    for ctx, tok in segments:
        order = np.argsort(ctx.astype(np.int16), kind="stable")
        cs, ts = ctx[order], tok[order]
        bounds = np.flatnonzero(np.diff(cs)) + 1
        for a, b in zip(np.r_[0, bounds], np.r_[bounds, cs.size], strict=False):
            if b > a:
                groups.append((int(cs[a]), ts[a:b].astype(np.int32)))
    coder = constriction.stream.stack.AnsCoder()
    for c, ts in reversed(groups):
        coder.encode_reverse(ts, models[c])
    ans = coder.get_compressed().astype("<u4").tobytes()
    return struct.pack("<III", len(hb), len(rb), len(ans)) + hb + rb + ans


_TRY_DEFAULT_BLOCKS = 8192  # chunks up to this many blocks (512x512 4:2:0) also try the default models


def _entropy_encode(coefs: list[np.ndarray], classes: list[int]) -> tuple[bytes, bool]:
    """Entropy section; True when it uses the default models (no model header)."""
    segments, rb = _symbols(coefs, classes)
    hist = _histogram(segments)
    hw = _BitWriter()
    levels = np.zeros_like(hist)
    for c in range(_NCTX):
        if hist[c].any():
            levels[c] = _quantise_histogram(hist[c])
            t = int(np.nonzero(levels[c])[0].max())
            hw.write(np.array([1, t]), np.array([1, 5]))
            hw.write(levels[c, : t + 1], 5)
        else:
            hw.write(np.array([0]), 1)
    models = {c: _model(levels[c]) for c in range(_NCTX) if hist[c].any()}
    own = _pack(segments, rb, models, hw.getvalue())
    if sum(q.shape[0] * q.shape[1] for q in coefs) > _TRY_DEFAULT_BLOCKS:
        return own, False
    default = _pack(segments, rb, _default_models(), b"")
    return (default, True) if len(default) < len(own) else (own, False)


def _write_fields(raw: _BitWriter, signed: np.ndarray | None, extra: np.ndarray, nx: np.ndarray) -> None:
    """Per symbol: extra bits (if any), then a sign bit for nonzero signed values."""
    if signed is None:
        sel = nx > 0
        raw.write(extra[sel], nx[sel])
        return
    sbit = (signed < 0).astype(np.int64)
    has_sign = (signed != 0).astype(np.int64)
    w = nx + has_sign
    sel = w > 0
    raw.write(((extra << has_sign) | sbit)[sel], w[sel])


_LOW_MASK = (np.int64(1) << np.arange(33, dtype=np.int64)) - 1  # [w] = 2^w - 1
_TOK = np.arange(_NT, dtype=np.int64)
_TOK_NX = np.where(_TOK >= 8, _TOK - 5, 0)  # token -> extra bit count
_TOK_BASE = np.where(_TOK >= 8, np.int64(1) << _TOK_NX, _TOK)  # token -> magnitude sans extra bits
_TOK_SIGNED_W = np.where(_TOK > 0, _TOK_NX + 1, 0)  # token -> extra bits + sign bit


def _read_fields(raw: _BitReader, tok: np.ndarray, signed: bool) -> np.ndarray:
    """Per token, its extra bits then (``signed``, non-zero tokens) a sign bit: one read of
    every symbol's field, zero-width fields included (they read as 0), no index selection."""
    tok = tok.astype(np.intp, copy=False)  # tokens are < _NT (the models' alphabets)
    out = _TOK_BASE[tok]  # magnitude without its extra bits
    if signed:
        f = raw.read(_TOK_SIGNED_W[tok])
        out += f >> 1
        f &= 1
        np.negative(out, out=out, where=f.astype(bool))
        return out
    out += raw.read(_TOK_NX[tok])
    return out


def _parse_header(data: bytes) -> tuple[int, int, int, int, np.ndarray, int]:
    if len(data) < 17 or data[:4] != MAGIC:
        raise CodecError(f"Expected {NAME} data starting with {MAGIC!r}. Got {data[:4]!r}.")
    version, flags, h, w, c = struct.unpack_from("<BBIIH", data, 4)
    if version not in (1, VERSION, VERSION_JFIF):
        raise CodecError(f"Expected {NAME} format version 1, {VERSION} or {VERSION_JFIF}. Got {version}.")
    allowed = {1: 7, VERSION: 63, VERSION_JFIF: 255}[version]
    if (flags & ~allowed or (flags & 24) == 24 or (flags & 36) == 36 or (flags & _FLAG_JFIF and flags & 24)
            or (flags & _FLAG_ABBREV and not flags & _FLAG_JFIF)):
        raise CodecError(f"Corrupt {NAME} header: unknown flags {flags:#x} for version {version}.")
    pos = 16
    if flags & 4:
        if len(data) < pos + 1:
            raise CodecError(f"Corrupt {NAME} header: truncated.")
        n = data[pos]
        pos += 1
        if n not in (1, 2) or len(data) < pos + 128 * n:
            raise CodecError(f"Corrupt {NAME} header: bad table count {n} or truncated tables.")
        t = np.frombuffer(data, dtype="<u2", count=64 * n, offset=pos).reshape(n, 64)
        if t.min() < 1:
            raise CodecError(f"Corrupt {NAME} header: zero quantisation step.")
        tables = np.concatenate([t, t]) if n == 1 else t.copy()
        pos += 128 * n
    else:
        if len(data) < pos + 1:
            raise CodecError(f"Corrupt {NAME} header: truncated.")
        q = data[pos]
        pos += 1
        if not 1 <= q <= 100:
            raise CodecError(f"Corrupt {NAME} header: quality {q} outside 1..100.")
        tables = ijg_tables(q, "ssim" if flags & 32 else "annexk")
    return flags, c, h, w, tables.astype(np.uint16), pos


def _decode_coefficients(data: bytes, shape: tuple[int, ...]) -> DctCoefficients | JfifStream:
    import constriction

    if len(shape) != 3:
        raise CodecError(f"Expected shape (C, H, W). Got {shape}.")
    flags, c, h, w, tables, pos = _parse_header(data)
    if (c, h, w) != shape:
        raise CodecError(f"Expected encoded shape {shape}. Got {(c, h, w)} in the {NAME} header.")
    ycbcr, sub = bool(flags & 2), bool(flags & 1)
    if ycbcr != (c == 3) or (sub and not ycbcr) or c < 1 or h < 1 or w < 1:
        raise CodecError(f"Corrupt {NAME} header: flags {flags:#x} do not fit shape {shape}.")
    if flags & _FLAG_JFIF:
        js = data[pos:]
        if flags & _FLAG_ABBREV:
            js = _jfif_complete(js, tables, c)
        return JfifStream((c, h, w), sub, _jfif_validate(js, c, h, w, sub))
    m = 16 if sub else 8
    hp, wp = -(-h // m) * m, -(-w // m) * m
    dims = [(hp // 8, wp // 8)]
    if ycbcr:
        cd = (hp // 16, wp // 16) if sub else (hp // 8, wp // 8)
        dims += [cd, cd]
    else:
        dims *= c
    ptab = (0, 1, 1) if ycbcr else (0,) * c
    if flags & 8:
        planes = _fast_decode(data[pos:], dims)
        return DctCoefficients((c, h, w), ycbcr, sub, tables, ptab, planes)
    if len(data) < pos + 12:
        raise CodecError(f"Corrupt {NAME} data: truncated before the entropy section.")
    nh, nr, na = struct.unpack_from("<III", data, pos)
    pos += 12
    if nh + nr + na != len(data) - pos or na % 4:
        raise CodecError(f"Corrupt {NAME} data: section lengths do not add up.")
    if flags & 16 and nh:
        raise CodecError(f"Corrupt {NAME} data: default models but a model header.")
    hr = _IntBitReader(data[pos : pos + nh])
    raw = _BitReader(data[pos + nh : pos + nh + nr])
    ans = np.frombuffer(data, dtype="<u4", offset=pos + nh + nr).astype(np.uint32)
    # presence bits and alphabet sizes with the scalar reader; all 5-bit levels in one gather
    present: list[tuple[int, int, int]] = []  # (context, T, bit offset of L[0])
    for ci in range(0 if flags & 16 else _NCTX):
        if hr.read(1):
            t = hr.read(5)
            if t >= _NT:
                raise CodecError(f"Corrupt {NAME} data: token alphabet {t + 1} > {_NT}.")
            if 5 * (t + 1) > hr.left:
                raise CodecError(f"Corrupt {NAME} data: model header is truncated.")
            present.append((ci, t, 8 * nh - hr.left))
            hr.left -= 5 * (t + 1)
    models: dict[int, Any] = _default_models() if flags & 16 else {}
    if present:
        sizes = np.array([t + 1 for _, t, _ in present])
        starts = np.repeat(np.array([o for _, _, o in present]), sizes)
        starts += 5 * (np.arange(starts.size) - np.repeat(np.cumsum(sizes) - sizes, sizes))
        hb = _BitReader(data[pos : pos + nh])
        hb.pos = 0
        lv = _gather_bits(hb, starts, 5)
        if (lv[np.cumsum(sizes) - 1] == 0).any():
            raise CodecError(f"Corrupt {NAME} data: empty model.")
        models = _models(lv, sizes, [ci for ci, _, _ in present])
    coder = constriction.stream.stack.AnsCoder(ans)

    def tokens(ctx: np.ndarray) -> np.ndarray:
        out = np.empty(ctx.size, dtype=np.int64)
        if ctx.size == 0:
            return out
        order = np.argsort(ctx.astype(np.int16), kind="stable")  # radix sort
        counts = np.bincount(ctx, minlength=_NCTX)
        parts = []
        for ci in np.flatnonzero(counts):
            if int(ci) not in models:
                raise CodecError(f"Corrupt {NAME} data: context {ci} has no model.")
            parts.append(coder.decode(models[int(ci)], int(counts[ci])))
        out[order] = np.concatenate(parts)
        return out

    classes = [0, 1, 1] if ycbcr else [0] * c
    out_planes: list[np.ndarray] = []
    for (by, bx), cls in zip(dims, classes, strict=False):
        pl = _Plane(by, bx, cls)
        r = _read_fields(raw, tokens(np.full(by * bx, pl.base + _CTX_DC)), True)
        dc = _dc_undo(r.reshape(by, bx))
        if np.abs(dc).max() > _MAXC:
            raise CodecError(f"Corrupt {NAME} data: DC coefficient out of range.")
        eob = np.zeros((by, bx), dtype=np.int64)
        ctx = pl.base + _CTX_EB + _eob_contexts_black(dc)
        eob[pl.black] = _read_fields(raw, tokens(ctx[pl.black]), False)
        if eob.max() > 63:
            raise CodecError(f"Corrupt {NAME} data: end-of-block position out of range.")
        ctx = pl.base + _CTX_EW + _eob_contexts_white(eob, pl.black)
        eob[~pl.black] = _read_fields(raw, tokens(ctx[~pl.black]), False)
        if eob.max() > 63:
            raise CodecError(f"Corrupt {NAME} data: end-of-block position out of range.")
        blk, k = _ac_positions(eob)
        v = _read_fields(raw, tokens(_ac_contexts_lut(eob, blk, k, pl.base + _CTX_AC)), True)
        if v.size and np.abs(v).max() > _MAXC:
            raise CodecError(f"Corrupt {NAME} data: AC coefficient out of range.")
        qz = np.zeros((by * bx, 64), dtype=np.int16)  # natural order
        qz[:, 0] = dc.ravel()
        blk *= 64
        blk += ZIGZAG[k]
        qz.reshape(-1)[blk] = v  # flat scatter: one index array instead of two
        out_planes.append(qz.reshape(by, bx, 64))
    return DctCoefficients(
        shape=(c, h, w),
        ycbcr=ycbcr,
        chroma420=sub,
        tables=tables,
        plane_table=ptab,
        planes=tuple(out_planes),
    )


# --------------------------------------------------------------------------------------------
# entropy="fast": one zstd frame over frequency-major planes (spec/codecs/dct.md §6.5)

_ZSTD_LEVEL = 19
_ESC = -128  # int8 AC value marking an escape (|v| > 127); the value follows in the escape list


def _fast_encode(coefs: list[np.ndarray]) -> bytes:
    import zstandard

    parts: list[bytes] = []
    escapes: list[np.ndarray] = []
    for q in coefs:
        by, bx, _ = q.shape
        z = q.reshape(by * bx, 64)[:, ZIGZAG].T  # [64 zigzag, n]
        r = _dc_residual(z[0].reshape(by, bx).astype(np.int64)).ravel().astype("<i2")
        parts.append(r.view(np.uint8).reshape(-1, 2).T.tobytes())  # low bytes, then high bytes
        ac = z[1:]
        rows = np.flatnonzero((ac != 0).any(axis=1))
        k = int(rows[-1]) + 1 if rows.size else 0
        ac = ac[:k]
        big = np.abs(ac) > 127
        parts.append(bytes([k]) + np.where(big, _ESC, ac).astype(np.int8).tobytes())
        escapes.append(ac[big])
    esc = np.concatenate(escapes).astype("<i2")
    parts.append(struct.pack("<I", esc.size) + esc.tobytes())
    raw = b"".join(parts)
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=True).compress(raw)


_TLS = threading.local()


def _zstd_decompressor() -> Any:
    """One ``ZstdDecompressor`` per thread (creating one costs ~8 us, a sizeable part of a
    small chunk's decode; instances must not be shared between threads)."""
    d = getattr(_TLS, "zstd_d", None)
    if d is None:
        import zstandard

        d = _TLS.zstd_d = zstandard.ZstdDecompressor()
    return d


def _fast_decode(data: bytes, dims: list[tuple[int, int]]) -> tuple[np.ndarray, ...]:
    import zstandard

    n_all = sum(by * bx for by, bx in dims)
    bound = 2 * n_all + len(dims) + 63 * n_all + 4 + 2 * 63 * n_all
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as e:
        raise CodecError(f"Corrupt {NAME} data: bad zstd frame ({e}).") from e
    if not 0 <= size <= bound:
        raise CodecError(f"Corrupt {NAME} data: zstd content size {size} outside 0..{bound}.")
    try:
        raw = _zstd_decompressor().decompress(data, max_output_size=size)
    except zstandard.ZstdError as e:
        _TLS.zstd_d = None  # start the next frame from a fresh context
        raise CodecError(f"Corrupt {NAME} data: bad zstd frame ({e}).") from e
    if len(raw) != size:
        raise CodecError(f"Corrupt {NAME} data: zstd frame length mismatch.")
    buf = np.frombuffer(raw, dtype=np.uint8)
    pos = 0
    planes: list[np.ndarray] = []
    acs: list[np.ndarray] = []
    for by, bx in dims:
        n = by * bx
        if pos + 2 * n + 1 > buf.size:
            raise CodecError(f"Corrupt {NAME} data: fast payload truncated.")
        r = (buf[pos : pos + n].astype(np.int64) | (buf[pos + n : pos + 2 * n].astype(np.int64) << 8)).astype(np.int16)
        dc = _dc_undo(r.astype(np.int64).reshape(by, bx))
        if np.abs(dc).max() > _MAXC:
            raise CodecError(f"Corrupt {NAME} data: DC coefficient out of range.")
        k = int(buf[pos + 2 * n])
        pos += 2 * n + 1
        if k > 63 or pos + k * n > buf.size:
            raise CodecError(f"Corrupt {NAME} data: bad AC row count {k} or truncated.")
        ac = buf[pos : pos + k * n].view(np.int8).reshape(k, n)
        pos += k * n
        out = np.zeros((64, by, bx), dtype=np.int16)  # natural order, frequency-major
        out[0] = dc
        out.reshape(64, n)[ZIGZAG[1 : k + 1]] = ac
        planes.append(out)
        acs.append(ac)
    if pos + 4 > buf.size:
        raise CodecError(f"Corrupt {NAME} data: fast payload truncated.")
    (ne,) = struct.unpack_from("<I", raw, pos)
    pos += 4
    if pos + 2 * ne != buf.size:
        raise CodecError(f"Corrupt {NAME} data: escape list length mismatch.")
    if ne:
        vals = np.frombuffer(raw, dtype="<i2", count=ne, offset=pos)
        if np.abs(vals.astype(np.int64)).max() > _MAXC:
            raise CodecError(f"Corrupt {NAME} data: AC coefficient out of range.")
        j = 0
        for out, ac in zip(planes, acs, strict=True):
            kk, n = ac.shape
            idx = np.flatnonzero(ac.ravel() == _ESC)
            if j + idx.size > ne:
                raise CodecError(f"Corrupt {NAME} data: too few escape values.")
            out.reshape(64, n)[ZIGZAG[1 : kk + 1][idx // n], idx % n] = vals[j : j + idx.size]
            j += idx.size
        if j != ne:
            raise CodecError(f"Corrupt {NAME} data: unused escape values.")
    else:
        for ac in acs:
            if ac.size and (ac == _ESC).any():
                raise CodecError(f"Corrupt {NAME} data: escape without a value.")
    return tuple(p.transpose(1, 2, 0) for p in planes)  # [by, bx, 64] views


def chunk_quality(data: bytes) -> int | None:
    """The quality a ``qpyr.dct`` chunk was encoded with (its header byte), or ``None`` for
    chunks with explicit tables. Lets tools report the per-item quality of ``"chunk"`` buckets."""
    flags, _c, _h, _w, _tables, _pos = _parse_header(bytes(data[:17 + 256]))
    return None if flags & 4 else int(data[16])


# --------------------------------------------------------------------------------------------
# entropy="jfif": the body is a baseline JPEG stream (spec/codecs/dct.md §6.6)

_JFIF_MAX_SIDE = 65500  # libjpeg's JPEG_MAX_DIMENSION


def _jfif_check_shape(c: int, h: int, w: int) -> None:
    if c not in (1, 3):
        raise ValueError(f"entropy='jfif' codes 1- or 3-channel chunks (a JPEG stream). Got C={c}; "
                         "use entropy='ctx' or 'fast' for other channel counts.")
    if max(h, w) > _JFIF_MAX_SIDE:
        raise ValueError(f"entropy='jfif' codes chunks up to {_JFIF_MAX_SIDE} samples a side. Got {h}x{w}.")


# Complete streams of at least this many bytes are written without trying the abbreviated form
# (a second libjpeg encode): over 300 random crops (16..512 px, quality 30..97, both table
# families), the abbreviated form saved at most 0.6 % (mean 0.02 %) on streams above 16 KiB.
_JFIF_ABBREV_BELOW = 16384


def _jfif_encode(arr: np.ndarray, tables: np.ndarray, sub: bool, *, optimize: bool) -> bytes:
    """``uint8 [C, H, W]`` (C = 1 or 3) -> baseline JPEG stream without the JFIF APP0 segment.

    libjpeg-turbo (through Pillow) does the colour transform, 2x2 chroma averaging and forward
    DCT; ``tables`` are written as the stream's DQT tables (natural order, <= 255)."""
    import io

    from PIL import Image

    c = arr.shape[0]
    img = Image.fromarray(arr[0]) if c == 1 else Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)))
    qt = [[int(v) for v in tables[i]] for i in range(1 if c == 1 else 2)]
    bio = io.BytesIO()
    img.save(bio, "JPEG", qtables=qt, subsampling=2 if sub else 0, optimize=optimize)
    js = bio.getvalue()
    if js[2:4] == b"\xff\xe0":  # APP0 (JFIF): redundant here -- components 1, 2, 3 already mean YCbCr
        n = int.from_bytes(js[4:6], "big")
        js = js[:2] + js[4 + n:]
    return js


# The standard Huffman tables of ITU-T T.81 Annex K.3 (Tables K.3-K.6) as the payload of one
# DHT segment: DC luma (class 0, id 0), AC luma (1, 0), DC chroma (0, 1), AC chroma (1, 1).
# Exactly what libjpeg writes without optimize (tests/test_codec_dct.py checks it).
_STD_DHT = bytes.fromhex(
    "0000010501010101010100000000000000000102030405060708090a0b100002010303020403050504040000017d"
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a2526"
    "2728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a838485"
    "868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6"
    "d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa0100030101010101010101010000000000000102030405"
    "060708090a0b1100020102040403040705040400010277000102031104052131061241510761711322328108144291"
    "a1b1c109233352f0156272d10a162434e125f11718191a262728292a35363738393a434445464748494a5354555657"
    "58595a636465666768696a737475767778797a82838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2"
    "b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa"
)
_STD_DHT_LUMA = 29 + 179  # the first two tables


def _segments(js: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of the marker segments from after SOI up to and including SOS
    (the entropy-coded data follows SOS); raises on a malformed structure."""
    n, i, out = len(js), 2, []
    if n < 4 or js[:2] != b"\xff\xd8":
        raise CodecError(f"Corrupt {NAME} data: the JPEG stream lacks its SOI marker.")
    while True:
        if i + 4 > n or js[i] != 0xFF:
            raise CodecError(f"Corrupt {NAME} data: bad JPEG marker structure at byte {i}.")
        marker = js[i + 1]
        seg = int.from_bytes(js[i + 2:i + 4], "big")
        if seg < 2 or i + 2 + seg > n or marker in (0xD8, 0xD9, 0x01) or 0xD0 <= marker <= 0xD7:
            raise CodecError(f"Corrupt {NAME} data: bad JPEG segment {marker:#04x} at byte {i}.")
        out.append((marker, i, i + 2 + seg))
        if marker == 0xDA:
            return out
        i += 2 + seg


def _jfif_abbreviate(js: bytes) -> bytes:
    """A complete stream written with the standard Huffman tables -> the same stream without
    its DQT and DHT segments (the decoder restores both: :func:`_jfif_complete`)."""
    drop = [(a, b) for m, a, b in _segments(js) if m in (0xDB, 0xC4)]
    parts, pos = [], 0
    for a, b in drop:
        parts.append(js[pos:a])
        pos = b
    return b"".join(parts) + js[pos:]


def _jfif_complete(js: bytes, tables: np.ndarray, c: int) -> bytes:
    """Abbreviated stream (flags bit 7) -> complete baseline JPEG: SOI, then DQT with the
    header's tables (luma, and chroma for 3 channels; zigzag order, 8-bit) and DHT with the
    Annex K tables, then the rest of the stream, which MUST hold neither."""
    if any(m in (0xDB, 0xC4) for m, _, _ in _segments(js)):
        raise CodecError(f"Corrupt {NAME} data: an abbreviated JPEG stream carries DQT or DHT segments.")
    nt = 1 if c == 1 else 2
    if int(tables[:nt].max()) > 255:
        raise CodecError(f"Corrupt {NAME} header: a JPEG stream needs 8-bit tables (<= 255).")
    dqt = b"".join(bytes([i]) + tables[i][ZIGZAG].astype(np.uint8).tobytes() for i in range(nt))
    dht = _STD_DHT if c == 3 else _STD_DHT[:_STD_DHT_LUMA]
    return (js[:2] + b"\xff\xdb" + (2 + len(dqt)).to_bytes(2, "big") + dqt
            + b"\xff\xc4" + (2 + len(dht)).to_bytes(2, "big") + dht + js[2:])


def _jfif_validate(js: bytes, c: int, h: int, w: int, sub: bool) -> bytes:
    """Check the JPEG stream's frame header against the chunk before any decoder sees it (no
    allocation from a corrupt size field; baseline, 8-bit, the header's sampling)."""
    if len(js) < 4 or js[:2] != b"\xff\xd8" or js[-2:] != b"\xff\xd9":
        raise CodecError(f"Corrupt {NAME} data: the JPEG stream lacks its SOI/EOI markers (truncated?).")
    frame = None
    for marker, a, b in _segments(js):
        if marker == 0xC0:
            if frame is not None or b - a < 10:
                raise CodecError(f"Corrupt {NAME} data: bad JPEG frame header.")
            frame = js[a + 4:b]
        elif 0xC1 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            raise CodecError(f"Corrupt {NAME} data: JPEG frame type {marker:#04x}; only baseline (0xc0) is valid.")
    if frame is None:
        raise CodecError(f"Corrupt {NAME} data: no JPEG frame header before the scan.")
    p, fh, fw, nf = frame[0], int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big"), frame[5]
    if (p, fh, fw, nf) != (8, h, w, c) or len(frame) != 6 + 3 * nf:
        raise CodecError(f"Corrupt {NAME} data: JPEG frame {fh}x{fw}x{nf} ({p}-bit) does not match the chunk "
                         f"{h}x{w}x{c} (8-bit).")
    sampling = [frame[7 + 3 * k] for k in range(nf)]
    want = [0x22, 0x11, 0x11] if sub else [0x11] * c
    if sampling != want:
        raise CodecError(f"Corrupt {NAME} data: JPEG sampling factors {[hex(s) for s in sampling]} do not match "
                         f"chroma {'420' if sub else '444'}.")
    return js


def _jfif_pixels(stream: JfifStream) -> np.ndarray:
    """libjpeg-turbo decode (through simplejpeg's TurboJPEG binding: the fastest CPU JPEG
    decoder measured, ``tools/bench_decode.py``): ``uint8 [H, W, C]``."""
    import simplejpeg

    c, h, w = stream.shape
    try:
        a = simplejpeg.decode_jpeg(stream.data, colorspace="GRAY" if c == 1 else "RGB", strict=True)
    except Exception as e:  # corrupt entropy data (strict: libjpeg warnings are errors too)
        raise CodecError(f"Corrupt {NAME} data: the JPEG decoder failed: {e}") from e
    if a.dtype != np.uint8 or a.shape != (h, w, c):
        raise CodecError(f"Corrupt {NAME} data: the JPEG decoded to {a.dtype} {a.shape}, expected {h}x{w}x{c}.")
    return a


_NVJPEG: list[Any] = []


def _gpu_jpeg_decoder() -> Any | None:
    """``torchvision.io.decode_jpeg`` when torchvision is installed (nvJPEG on CUDA), else None."""
    if not _NVJPEG:
        try:
            from torchvision.io import decode_jpeg
        except Exception:  # torchvision is optional
            decode_jpeg = None
        _NVJPEG.append(decode_jpeg)
    return _NVJPEG[0]


def _gpu_jpeg_decode(dec: Any, streams: JfifStream | Sequence[JfifStream], dev: torch.device) -> Any:
    """``dec`` (``torchvision.io.decode_jpeg``) on one stream or a list of them (one batched
    call), each result's shape checked against its chunk's."""
    one = isinstance(streams, JfifStream)
    todo: list[JfifStream] = [streams] if isinstance(streams, JfifStream) else list(streams)
    data = [torch.frombuffer(bytearray(s.data), dtype=torch.uint8) for s in todo]
    out = [dec(data[0], device=dev)] if one else list(dec(data, device=dev))
    for t, s in zip(out, todo, strict=True):
        if tuple(t.shape) != s.shape:
            raise CodecError(f"Corrupt {NAME} data: nvJPEG decoded {tuple(t.shape)}, expected {s.shape}.")
    return out[0] if one else out


def _jfif_reconstruct(stream: JfifStream, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    dec = _gpu_jpeg_decoder() if dev.type == "cuda" else None
    if dec is not None:
        t = _gpu_jpeg_decode(dec, stream, dev)
    else:
        # [C, H, W] as a view of the decoder's interleaved [H, W, C] memory (channels-last
        # strides), as torchvision.io.decode_jpeg returns it: leaving the interleaved layout costs
        # one strided pass (~0.2 ms for 512x512) wherever it happens, so it happens once, inside
        # the consumer's own first pass (dequantisation into a contiguous float tensor, the
        # copy into a staging buffer or a batch), not as an extra uint8 transpose here
        t = torch.from_numpy(_jfif_pixels(stream)).permute(2, 0, 1).to(dev)
    return t if dtype == torch.uint8 else t.to(dtype)
