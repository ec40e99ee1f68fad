"""``qpyr.dct``: 8x8 block-DCT lossy image codec with context-modelled ANS entropy coding.

Encoded layout, algorithms and constants are specified in ``spec/codecs/dct.md`` (colour and
chroma resampling in ``spec/codecs/ycbcr420.md``). Decoding is split in two so that the two
halves can run in different places:

* :meth:`DctCodec.decode_coefficients` -- CPU, numpy + ``constriction`` (rANS): bytes ->
  :class:`DctCoefficients` (quantised int16 coefficients and quantisation tables);
* :meth:`DctCodec.reconstruct` -- torch, any device: dequantise, IDCT as one matmul with a
  64x64 matrix, fancy chroma upsampling, YCbCr -> RGB, crop.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from qpyr.codecs import color
from qpyr.errors import CodecError

__all__ = ["DctCodec", "DctCoefficients", "ijg_tables", "ZIGZAG"]

NAME = "qpyr.dct"
MAGIC = b"QDCT"
VERSION = 1

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


def ijg_tables(quality: int) -> np.ndarray:
    """Annex K tables scaled the IJG way: ``uint16 [2, 64]`` (luma, chroma), natural order."""
    s = 5000 // quality if quality < 50 else 200 - 2 * quality
    out = [(b * s + 50) // 100 for b in (_LUMA_K, _CHROMA_K)]
    return np.clip(np.stack(out), 1, 255).astype(np.uint16)


# --------------------------------------------------------------------------------------------
# Codec configuration


@dataclasses.dataclass(frozen=True)
class DctCoefficients:
    """Entropy-decoded payload: what :meth:`DctCodec.reconstruct` turns into pixels.

    ``planes[i]`` is ``int16 [by, bx, 64]`` quantised coefficients in natural order;
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
class DctCodec:
    """8x8 DCT codec for ``uint8 [C, H, W]`` chunks.

    Parameters (keyword only)
        quality: 1..100, IJG scaling of the Annex K tables (ignored when ``tables`` is given).
        tables: 1 or 2 tables of 64 ints in 1..65535, **natural (row-major) order**; the
            second (chroma) table defaults to the first.
        chroma: ``"420"`` (YCbCr with half-resolution chroma; 3-channel input only -- other
            channel counts are coded plane by plane with the luma table) or ``"444"``.
        rdo: zero isolated +-1 coefficients whose rate outweighs their distortion.
    """

    quality: int = 90
    tables: tuple[tuple[int, ...], ...] | None = None
    chroma: Literal["420", "444"] = "420"
    rdo: bool = True

    def __init__(
        self,
        *,
        quality: int = 90,
        tables: Sequence[Sequence[int]] | np.ndarray | None = None,
        chroma: str = "420",
        rdo: bool = True,
    ) -> None:
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
            raise ValueError(f"quality: expected an int in 1..100. Got {quality!r}.")
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"quality: expected an int in 1..100. Got {quality}.")
        if chroma not in ("420", "444"):
            raise ValueError(f"chroma: expected '420' or '444'. Got {chroma!r}.")
        if not isinstance(rdo, bool):
            raise ValueError(f"rdo: expected a bool. Got {rdo!r}.")
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
            norm = tuple(tuple(int(v) for v in row) for row in arr)
        object.__setattr__(self, "quality", int(quality))
        object.__setattr__(self, "tables", norm)
        object.__setattr__(self, "chroma", chroma)
        object.__setattr__(self, "rdo", rdo)

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
        unknown = set(cfg) - {"quality", "tables", "chroma", "rdo"}
        if unknown:
            raise ValueError(f"Unknown {NAME} configuration keys: {sorted(unknown)}.")
        return cls(**cfg)

    def table_array(self) -> np.ndarray:
        """The two quantisation tables in use, ``uint16 [2, 64]`` natural order."""
        if self.tables is None:
            return ijg_tables(self.quality)
        t = np.array(self.tables, dtype=np.uint16)
        return np.concatenate([t, t]) if len(t) == 1 else t

    # -- encode -----------------------------------------------------------------------------

    def encode(self, chunk: np.ndarray) -> bytes:
        """Encode ``uint8 [C, H, W]`` (C in 1..255, H, W >= 1) to bytes."""
        arr = np.asarray(chunk)
        if arr.dtype != np.uint8 or arr.ndim != 3 or min(arr.shape) < 1 or arr.shape[0] > 255:
            raise ValueError(f"Expected a uint8 array [C, H, W] with C in 1..255. Got {arr.dtype} {arr.shape}.")
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
        flags = (1 if sub else 0) | (2 if ycbcr else 0) | (4 if self.tables is not None else 0)
        head = MAGIC + struct.pack("<BBIIH", VERSION, flags, h, w, c)
        if self.tables is None:
            head += struct.pack("<B", self.quality)
        else:
            head += struct.pack("<B", len(self.tables))
            head += np.array(self.tables, dtype="<u2").tobytes()
        classes = [0 if (not ycbcr or i == 0) else 1 for i in range(len(coefs))]
        return head + _entropy_encode(coefs, classes)

    # -- decode -----------------------------------------------------------------------------

    def decode_coefficients(self, data: bytes, shape: Sequence[int]) -> DctCoefficients:
        """Entropy-decode ``data`` (CPU only). ``shape`` is the expected ``(C, H, W)``."""
        try:
            return _decode_coefficients(bytes(data), tuple(int(s) for s in shape))
        except CodecError:
            raise
        except Exception as e:  # anything a corrupt stream provokes deeper down
            raise CodecError(f"Corrupt {NAME} data: {e}") from e

    def reconstruct(self, payload: DctCoefficients, device: str | torch.device = "cpu") -> torch.Tensor:
        """Pixels ``float32 Tensor[C, H, W]`` in [0, 255] (unrounded) on ``device``."""
        return reconstruct(payload, device)

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        """Decode to ``uint8 [C, H, W]`` (entropy decode + reconstruct on CPU + round)."""
        out = self.reconstruct(self.decode_coefficients(data, shape), "cpu")
        return out.round_().to(torch.uint8).numpy()


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


def _plane_pixels(coef: np.ndarray, table: np.ndarray, device: torch.device) -> torch.Tensor:
    by, bx, _ = coef.shape
    q = torch.from_numpy(coef).to(device=device, dtype=torch.float32).reshape(-1, 64)
    tab = torch.from_numpy(table.astype(np.float32)).to(device)
    pix = (q * tab) @ _IDCT64.to(device)
    pix = pix.reshape(by, bx, 8, 8).permute(0, 2, 1, 3).reshape(by * 8, bx * 8)
    return pix + 128.0


def reconstruct(payload: DctCoefficients, device: str | torch.device = "cpu") -> torch.Tensor:
    """Torch half of decoding: :class:`DctCoefficients` -> ``float32 Tensor[C, H, W]`` in [0, 255]."""
    dev = torch.device(device)
    c, h, w = payload.shape
    planes = [
        _plane_pixels(p, payload.tables[t], dev) for p, t in zip(payload.planes, payload.plane_table, strict=False)
    ]
    if payload.ycbcr:
        y = planes[0]
        hp, wp = y.shape
        chroma = torch.stack(planes[1:])[None]
        if payload.chroma420:
            chroma = color.upsample_420(chroma, hp, wp)
        out = color.ycbcr_to_rgb(torch.cat([y[None, None], chroma], dim=1))[0]
    else:
        out = torch.stack(planes)
    return out[:, :h, :w].clamp_(0.0, 255.0)


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
    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        self.pos = 0

    def read(self, widths: np.ndarray | int, count: int | None = None) -> np.ndarray:
        if count is not None:
            w = np.full(count, int(widths), dtype=np.int64)
        else:
            w = np.asarray(widths, dtype=np.int64)
        total = int(w.sum())
        if self.pos + total > self.bits.size:
            raise CodecError("Corrupt qpyr.dct data: raw bit stream is truncated.")
        start = self.pos + np.cumsum(w) - w
        out = np.zeros(w.size, dtype=np.int64)
        if w.size and w.min() == w.max():
            for j in range(int(w[0])):
                out = (out << 1) | self.bits[start + j]
        else:
            for j in range(int(w.max(initial=0))):
                sel = w > j
                out[sel] = (out[sel] << 1) | self.bits[start[sel] + j]
        self.pos += total
        return out


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


def _neighbour_sum(e: np.ndarray) -> np.ndarray:
    p = np.pad(e, 1, mode="edge")
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
    p = np.pad(dc.astype(np.int64), 1, mode="edge")
    g = np.abs(p[:-2, 1:-1] - dc) + np.abs(p[2:, 1:-1] - dc) + np.abs(p[1:-1, :-2] - dc) + np.abs(p[1:-1, 2:] - dc)
    return np.minimum(np.frexp(g.astype(np.float64))[1], 7)


def _eob_contexts_white(eob_black_only: np.ndarray, black: np.ndarray) -> np.ndarray:
    s = _neighbour_sum_masked(eob_black_only, black)
    return np.searchsorted(_NB_EDGES, s, side="right") - 1


def _neighbour_sum_masked(e: np.ndarray, black: np.ndarray) -> np.ndarray:
    """Rounded mean of the in-bounds black 4-neighbours' eob (for white blocks)."""
    ep = np.pad(e.astype(np.int64) * black, 1)
    bp = np.pad(black.astype(np.int64), 1)
    s = ep[:-2, 1:-1] + ep[2:, 1:-1] + ep[1:-1, :-2] + ep[1:-1, 2:]
    n = bp[:-2, 1:-1] + bp[2:, 1:-1] + bp[1:-1, :-2] + bp[1:-1, 2:]
    return (2 * s + np.maximum(n, 1)) // (2 * np.maximum(n, 1))


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


class _Plane:
    """Per-plane symbol layout shared by encoder and decoder (decode order)."""

    def __init__(self, by: int, bx: int, cls: int) -> None:
        self.by, self.bx, self.cls = by, bx, cls
        self.black = _black_mask(by, bx)
        self.base = cls * _CTX_PER_CLASS


def _entropy_encode(coefs: list[np.ndarray], classes: list[int]) -> bytes:
    import constriction

    segments: list[tuple[np.ndarray, np.ndarray]] = []  # (global ctx per symbol, tokens)
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
    hist = np.zeros((_NCTX, _NT), dtype=np.int64)
    for ctx, tok in segments:
        np.add.at(hist, (ctx, tok), 1)
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
    hb, rb = hw.getvalue(), raw.getvalue()
    return struct.pack("<III", len(hb), len(rb), len(ans)) + hb + rb + ans


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


def _read_fields(raw: _BitReader, tok: np.ndarray, signed: bool) -> np.ndarray:
    tok = tok.astype(np.int64)
    big = tok >= 8
    nx = np.where(big, tok - 5, 0)
    base = np.where(big, np.int64(1) << np.maximum(tok - 5, 0), tok)
    w = nx + (tok > 0) if signed else nx
    sel = np.flatnonzero(w > 0)
    if sel.size == 0:
        return base
    f = raw.read(w[sel])
    mag = base.copy()
    if signed:
        s = (tok[sel] > 0).astype(np.int64)
        mag[sel] = base[sel] + (f >> s)
        neg = np.zeros(tok.size, dtype=bool)
        neg[sel] = (f & s) == 1
        return np.where(neg, -mag, mag)
    mag[sel] = base[sel] + f
    return mag


def _parse_header(data: bytes) -> tuple[int, int, int, int, np.ndarray, int]:
    if len(data) < 17 or data[:4] != MAGIC:
        raise CodecError(f"Expected {NAME} data starting with {MAGIC!r}. Got {data[:4]!r}.")
    version, flags, h, w, c = struct.unpack_from("<BBIIH", data, 4)
    if version != VERSION:
        raise CodecError(f"Expected {NAME} format version {VERSION}. Got {version}.")
    if flags & ~7:
        raise CodecError(f"Corrupt {NAME} header: unknown flags {flags:#x}.")
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
        tables = ijg_tables(q)
    return flags, c, h, w, tables.astype(np.uint16), pos


def _decode_coefficients(data: bytes, shape: tuple[int, ...]) -> DctCoefficients:
    import constriction

    if len(shape) != 3:
        raise CodecError(f"Expected shape (C, H, W). Got {shape}.")
    flags, c, h, w, tables, pos = _parse_header(data)
    if (c, h, w) != shape:
        raise CodecError(f"Expected encoded shape {shape}. Got {(c, h, w)} in the {NAME} header.")
    ycbcr, sub = bool(flags & 2), bool(flags & 1)
    if ycbcr != (c == 3) or (sub and not ycbcr) or c < 1 or h < 1 or w < 1:
        raise CodecError(f"Corrupt {NAME} header: flags {flags:#x} do not fit shape {shape}.")
    if len(data) < pos + 12:
        raise CodecError(f"Corrupt {NAME} data: truncated before the entropy section.")
    nh, nr, na = struct.unpack_from("<III", data, pos)
    pos += 12
    if nh + nr + na != len(data) - pos or na % 4:
        raise CodecError(f"Corrupt {NAME} data: section lengths do not add up.")
    hr = _IntBitReader(data[pos : pos + nh])
    raw = _BitReader(data[pos + nh : pos + nh + nr])
    ans = np.frombuffer(data, dtype="<u4", offset=pos + nh + nr).astype(np.uint32)
    models: dict[int, Any] = {}
    for ci in range(_NCTX):
        if hr.read(1):
            t = hr.read(5)
            if t >= _NT:
                raise CodecError(f"Corrupt {NAME} data: token alphabet {t + 1} > {_NT}.")
            lv = np.array([hr.read(5) for _ in range(t + 1)], dtype=np.int64)
            if lv[t] == 0:
                raise CodecError(f"Corrupt {NAME} data: empty model.")
            models[ci] = _model(lv)
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

    m = 16 if sub else 8
    hp, wp = -(-h // m) * m, -(-w // m) * m
    dims = [(hp // 8, wp // 8)]
    if ycbcr:
        cd = (hp // 16, wp // 16) if sub else (hp // 8, wp // 8)
        dims += [cd, cd]
        classes = [0, 1, 1]
    else:
        dims *= c
        classes = [0] * c
    planes = []
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
        v = _read_fields(raw, tokens(pl.base + _CTX_AC + _ac_contexts(eob, blk, k)), True)
        if v.size and np.abs(v).max() > _MAXC:
            raise CodecError(f"Corrupt {NAME} data: AC coefficient out of range.")
        qz = np.zeros((by * bx, 64), dtype=np.int16)
        qz[:, 0] = dc.ravel()
        qz[blk, k] = v
        planes.append(qz[:, _UNZIGZAG].reshape(by, bx, 64))
    ptab = (0, 1, 1) if ycbcr else (0,) * c
    return DctCoefficients(
        shape=(c, h, w),
        ycbcr=ycbcr,
        chroma420=sub,
        tables=tables,
        plane_table=ptab,
        planes=tuple(planes),
    )
