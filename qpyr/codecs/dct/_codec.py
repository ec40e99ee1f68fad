"""``DctCodec``: the configuration of ``qpyr.dct`` and its encode / decode entry points, which
hand each entropy mode its part (spec/codecs/dct.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from qpyr.codecs.dct._ctx import _ctx_decode, _entropy_encode
from qpyr.codecs.dct._fast import _fast_decode, _fast_encode
from qpyr.codecs.dct._header import _FLAG_ABBREV, _FLAG_JFIF, NAME, _pack_header, _parse_header
from qpyr.codecs.dct._jfif import (
    _JFIF_ABBREV_BELOW,
    _gpu_jpeg_decode,
    _gpu_jpeg_decoder,
    _jfif_abbreviate,
    _jfif_check_shape,
    _jfif_complete,
    _jfif_encode,
    _jfif_reconstruct,
    _jfif_validate,
)
from qpyr.codecs.dct._payload import DctCoefficients, JfifStream
from qpyr.codecs.dct._tables import ijg_tables
from qpyr.codecs.dct._transform import _plane_coefficients, reconstruct
from qpyr.errors import CodecError


def _chunk_array(chunk: np.ndarray) -> np.ndarray:
    """``chunk`` as the ``uint8 [C, H, W]`` array the encoder takes (C in 1..255, H, W >= 1)."""
    arr = np.asarray(chunk)
    if arr.dtype != np.uint8 or arr.ndim != 3 or min(arr.shape) < 1 or arr.shape[0] > 255:
        raise CodecError(f"Expected a uint8 array [C, H, W] with C in 1..255. Got {arr.dtype} {arr.shape}.")
    return arr


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
            frequency-major int8 coefficient planes: larger, several times faster to decode)
            or ``"jfif"`` (a baseline JPEG stream with these tables, Huffman tables optimised
            per chunk: larger than ``ctx``, decoded by libjpeg-turbo / nvJPEG, the fastest to
            decode; 1- or 3-channel chunks, tables <= 255, H, W <= 65500).
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
                raise CodecError(f"quality: expected an int in 1..100 or 'chunk'. Got {quality!r}.")
            if not 1 <= int(quality) <= 100:
                raise CodecError(f"quality: expected an int in 1..100 or 'chunk'. Got {quality}.")
        if chroma not in ("420", "444"):
            raise CodecError(f"chroma: expected '420' or '444'. Got {chroma!r}.")
        if not isinstance(rdo, bool):
            raise CodecError(f"rdo: expected a bool. Got {rdo!r}.")
        if entropy not in ("ctx", "fast", "jfif"):
            raise CodecError(f"entropy: expected 'ctx', 'fast' or 'jfif'. Got {entropy!r}.")
        if family not in ("annexk", "ssim"):
            raise CodecError(f"family: expected 'annexk' or 'ssim'. Got {family!r}.")
        norm: tuple[tuple[int, ...], ...] | None = None
        if tables is not None:
            try:
                arr = np.asarray(tables)
            except Exception as e:  # ragged nested sequences
                raise CodecError(f"tables: expected 1 or 2 lists of 64 ints. Got {tables!r}.") from e
            if arr.ndim == 1:
                arr = arr[None]
            if arr.ndim != 2 or arr.shape[0] not in (1, 2) or arr.shape[1] != 64:
                raise CodecError(f"tables: expected 1 or 2 tables of 64 ints. Got shape {arr.shape}.")
            if arr.dtype.kind not in "iu" or arr.min() < 1 or arr.max() > 65535:
                raise CodecError("tables: expected integers in 1..65535 (natural order).")
            if entropy == "jfif" and arr.max() > 255:
                raise CodecError("tables: entropy='jfif' writes 8-bit baseline JPEG tables; expected integers in "
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
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`~qpyr.errors.CodecError`."""
        if not isinstance(data, Mapping) or data.get("name") != NAME:
            raise CodecError(f"Expected a mapping with name {NAME!r}. Got {data!r}.")
        extra = set(data) - {"name", "configuration"}
        if extra:
            raise CodecError(f"Expected keys 'name' and 'configuration'. Got extra {sorted(extra)}.")
        cfg = data.get("configuration", {}) or {}
        unknown = set(cfg) - {"quality", "tables", "chroma", "rdo", "entropy", "family"}
        if unknown:
            raise CodecError(f"Unknown {NAME} configuration keys: {sorted(unknown)}.")
        return cls(**cfg)

    def table_array(self) -> np.ndarray:
        """The two quantisation tables in use, ``uint16 [2, 64]`` natural order."""
        if self.tables is None:
            if self.quality == "chunk":
                raise CodecError("quality 'chunk' describes stored chunks (each header holds its quality); "
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
        head = _pack_header(flags, c, h, w, self.quality, self.tables)
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
        sub = arr.shape[0] == 3 and self.chroma == "420"
        return _plane_coefficients(arr, self.table_array(), sub, self.rdo)

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


def _decode_coefficients(data: bytes, shape: tuple[int, ...]) -> DctCoefficients | JfifStream:
    """The header checked against ``shape``, then the body handed to its entropy mode's decoder."""
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
    planes = _ctx_decode(data, pos, bool(flags & 16), dims, [0, 1, 1] if ycbcr else [0] * c, data[4])
    return DctCoefficients(
        shape=(c, h, w),
        ycbcr=ycbcr,
        chroma420=sub,
        tables=tables,
        plane_table=ptab,
        planes=planes,
    )
