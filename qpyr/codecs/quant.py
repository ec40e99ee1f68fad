"""Quantizers: how a level's real values become stored samples, and back.

A quantizer maps a level in *normalized units* ``x`` to stored samples ``q`` and back:

- integer sources (uint8, uint16, bool) are normalized to [0, 1] by ``value_scale``
  (``1/255``, ``1/65535``, ``1``); float and other integer sources keep source units
  (``value_scale = 1``);
- ``source`` (lossless): ``q`` is the level in the source dtype, ``x̂ = q * value_scale``;
- ``float32`` / ``float16`` / ``bfloat16``: ``q = cast(x)``; bfloat16 is stored as the upper
  16 bits of the float32 pattern in a ``uint16`` array, rounded to nearest, ties to even;
- ``uint8`` / ``int8`` / ``uint4`` / ``int4``: ``q = clip(rint(x / scale + zero_point))`` and
  ``x̂ = (q - zero_point) * scale`` in float32, with ``scale``/``zero_point`` per level, per
  channel or per ``block x block`` tile (side array ``qparams[2, *groups]``). 4-bit samples
  are packed two per byte along the last axis, element ``2j`` in the low nibble and ``2j+1``
  in the high nibble (ONNX Int4x2 order); signed nibbles are two's complement.

The decode maths is written once, in torch (:meth:`Quantizer.dequantize`), and used by the
reader on any device, by quality measurement at pack time, and by fake quantization.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qpyr.errors import CodecError, PolicyError, RangeError

__all__ = [
    "normalize",
    "StoredType",
    "Scheme",
    "Granularity",
    "Quantizer",
    "value_scale_for",
    "pack_nibbles",
    "unpack_nibbles",
    "bf16_encode",
    "bf16_decode",
]


class StoredType(str, enum.Enum):
    """Stored sample type of a level."""

    SOURCE = "source"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    UINT8 = "uint8"
    INT8 = "int8"
    UINT4 = "uint4"
    INT4 = "int4"


class Scheme(str, enum.Enum):
    """Integer quantization scheme: affine (scale + zero point) or symmetric (zero point 0)."""

    AFFINE = "affine"
    SYMMETRIC = "symmetric"


class Granularity(str, enum.Enum):
    """Which samples share one scale/zero-point pair."""

    LEVEL = "level"
    CHANNEL = "channel"
    BLOCK = "block"


_INT_RANGES: dict[StoredType, tuple[int, int]] = {
    StoredType.UINT8: (0, 255),
    StoredType.INT8: (-128, 127),
    StoredType.UINT4: (0, 15),
    StoredType.INT4: (-8, 7),
}
_FLOAT_TYPES = (StoredType.FLOAT32, StoredType.FLOAT16, StoredType.BFLOAT16)
_FP16_MAX = 65504.0


def normalize(level: np.ndarray, source_dtype: np.dtype[Any]) -> np.ndarray:
    """Level values in normalized units, float32: ``float32(q / M)`` correctly rounded
    (computed in float64) with ``M`` = 255 / 65535 for uint8 / uint16 sources, else the values
    themselves. The single definition used by every encoder and by quality measurement."""
    vs = value_scale_for(np.dtype(source_dtype))
    if vs == 1.0:
        return np.asarray(level, dtype=np.float32)
    return (np.asarray(level, dtype=np.float64) / round(1.0 / vs)).astype(np.float32)


def value_scale_for(source_dtype: np.dtype[Any]) -> float:
    """Normalization factor of a source dtype: uint8 → 1/255, uint16 → 1/65535, bool → 1, else 1."""
    if source_dtype == np.uint8:
        return 1.0 / 255.0
    if source_dtype == np.uint16:
        return 1.0 / 65535.0
    return 1.0


@dataclass(frozen=True, kw_only=True)
class Quantizer:
    """One level's quantization. Immutable; build with keywords; round-trips through dicts.

    Attributes:
        dtype: stored sample type.
        scheme: integer types only; ``symmetric`` needs a signed type (int8, int4).
        granularity: integer types only; ``level``, ``channel`` or ``block``.
        block: tile side for ``block`` granularity (2..256).
        range: fixed ``(lo, hi)`` in normalized units instead of the data's min/max. Values
            outside it are a :class:`~qpyr.errors.RangeError` unless ``clamp``.
        clamp: clip out-of-range values instead of failing (also fp16 overflow).
    """

    dtype: StoredType
    scheme: Scheme = Scheme.AFFINE
    granularity: Granularity = Granularity.LEVEL
    block: int = 8
    range: tuple[float, float] | None = None
    clamp: bool = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "dtype", StoredType(self.dtype))
            object.__setattr__(self, "scheme", Scheme(self.scheme))
            object.__setattr__(self, "granularity", Granularity(self.granularity))
        except ValueError as e:
            raise PolicyError(f"Invalid quantizer parameter: {e}.") from e
        if not self.is_integer:
            if (self.scheme, self.granularity, self.block, self.range) != (
                Scheme.AFFINE, Granularity.LEVEL, 8, None,
            ):
                raise PolicyError(
                    f"Expected no scheme/granularity/block/range for dtype {self.dtype.value}. "
                    "They apply to integer dtypes (uint8, int8, uint4, int4) only."
                )
            return
        if self.scheme is Scheme.SYMMETRIC and self.dtype in (StoredType.UINT8, StoredType.UINT4):
            raise PolicyError(
                f"Expected a signed dtype (int8 or int4) for scheme=symmetric. Got {self.dtype.value}."
            )
        if not 2 <= int(self.block) <= 256:
            raise PolicyError(f"Expected block in 2..256. Got {self.block}.")
        if self.range is not None:
            lo, hi = (float(v) for v in self.range)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise PolicyError(f"Expected a finite range lo < hi. Got {self.range}.")
            object.__setattr__(self, "range", (lo, hi))

    # ------------------------------------------------------------------ properties
    @property
    def is_integer(self) -> bool:
        return self.dtype in _INT_RANGES

    @property
    def is_packed(self) -> bool:
        return self.dtype in (StoredType.UINT4, StoredType.INT4)

    @property
    def is_lossless(self) -> bool:
        return self.dtype is StoredType.SOURCE

    @property
    def qrange(self) -> tuple[int, int]:
        lo, hi = _INT_RANGES[self.dtype]
        if self.scheme is Scheme.SYMMETRIC:
            lo = -hi  # keep the grid symmetric: -127..127, -7..7
        return lo, hi

    @property
    def bits(self) -> int:
        return {"float32": 32, "float16": 16, "bfloat16": 16, "uint8": 8, "int8": 8,
                "uint4": 4, "int4": 4}.get(self.dtype.value, 0)

    def storage_dtype(self, source_dtype: np.dtype[Any]) -> np.dtype[Any]:
        """numpy dtype of the Zarr array that holds this level (little-endian)."""
        if self.dtype is StoredType.SOURCE:
            dt = np.dtype(source_dtype)
            return np.dtype(np.uint8) if dt == np.bool_ else dt.newbyteorder("<")
        return np.dtype({
            "float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "uint8": "u1",
            "int8": "i1", "uint4": "u1", "int4": "u1",
        }[self.dtype.value])

    def stored_width(self, width: int) -> int:
        """Stored extent of the last axis for a logical width (halved, rounded up, when packed)."""
        return (width + 1) // 2 if self.is_packed else width

    def param_shape(self, channels: int, height: int, width: int) -> tuple[int, ...] | None:
        """Shape of the ``qparams`` side array entry of one item (None: no parameters)."""
        if not self.is_integer:
            return None
        if self.granularity is Granularity.LEVEL:
            return (2, 1)
        if self.granularity is Granularity.CHANNEL:
            return (2, channels)
        b = self.block
        return (2, channels, -(-height // b), -(-width // b))

    # ------------------------------------------------------------------ config
    def to_dict(self) -> dict[str, Any]:
        """JSON config; defaults are left out."""
        d: dict[str, Any] = {"dtype": self.dtype.value}
        if self.is_integer:
            if self.scheme is not Scheme.AFFINE:
                d["scheme"] = self.scheme.value
            if self.granularity is not Granularity.LEVEL:
                d["granularity"] = self.granularity.value
            if self.granularity is Granularity.BLOCK and self.block != 8:
                d["block"] = self.block
            if self.range is not None:
                d["range"] = list(self.range)
        if self.clamp:
            d["clamp"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Quantizer:
        allowed = {"dtype", "scheme", "granularity", "block", "range", "clamp"}
        if not isinstance(d, dict) or "dtype" not in d:
            raise PolicyError(f"Expected a quantizer object with a 'dtype'. Got {d!r}.")
        unknown = set(d) - allowed
        if unknown:
            raise PolicyError(
                f"Unknown quantizer field(s) {sorted(unknown)}; expected some of {sorted(allowed)}."
            )
        kw = dict(d)
        if "range" in kw:
            r = kw["range"]
            if not (isinstance(r, (list, tuple)) and len(r) == 2):
                raise PolicyError(f"Expected range [lo, hi]. Got {r!r}.")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r):
                raise PolicyError(f"Expected range [lo, hi] of two numbers. Got {r!r}.")
            kw["range"] = (float(r[0]), float(r[1]))
        if "block" in kw and (not isinstance(kw["block"], int) or isinstance(kw["block"], bool)):
            raise PolicyError(f"Expected an integer block. Got {kw['block']!r}.")
        if "clamp" in kw and not isinstance(kw["clamp"], bool):
            raise PolicyError(f"Expected clamp true/false. Got {kw['clamp']!r}.")
        return cls(**kw)

    # ------------------------------------------------------------------ encode
    def quantize(
        self, level: np.ndarray, source_dtype: np.dtype[Any]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Quantize one level.

        Args:
            level: ``[C, H, W]`` level in level units (source units; integer-valued for
                integer sources), finite.
            source_dtype: dtype of the item's source array.

        Returns:
            ``(stored, params)``: ``stored`` is ``[C, H, W]`` in :meth:`storage_dtype` *before*
            nibble packing (4-bit codes held in uint8/int8 arrays); ``params`` is float32
            ``[2, *groups]`` (scale, zero_point) or None.
        """
        if self.dtype is StoredType.SOURCE:
            return level.astype(self.storage_dtype(source_dtype), copy=False), None
        x = normalize(level, source_dtype)
        if self.dtype is StoredType.FLOAT32:
            return np.ascontiguousarray(x, dtype="<f4"), None
        if self.dtype is StoredType.FLOAT16:
            m = float(np.abs(x).max()) if x.size else 0.0
            if m > _FP16_MAX:
                if not self.clamp:
                    raise RangeError(
                        f"Values up to {m:g} overflow float16 (max 65504); use clamp=true or "
                        "another dtype (bfloat16, float32)."
                    )
                x = np.clip(x, -_FP16_MAX, _FP16_MAX)
            return x.astype("<f2"), None
        if self.dtype is StoredType.BFLOAT16:
            return bf16_encode(x), None
        return self._quantize_int(x)

    def _groups(self, x: np.ndarray) -> np.ndarray:
        """View ``x`` [C,H,W] as [G..., n] groups for min/max (block: padded with edge values)."""
        c, h, w = x.shape
        if self.granularity is Granularity.LEVEL:
            return x.reshape(1, -1)
        if self.granularity is Granularity.CHANNEL:
            return x.reshape(c, -1)
        b = self.block
        nby, nbx = -(-h // b), -(-w // b)
        xp = np.pad(x, ((0, 0), (0, nby * b - h), (0, nbx * b - w)), mode="edge")
        return xp.reshape(c, nby, b, nbx, b).transpose(0, 1, 3, 2, 4).reshape(c, nby, nbx, b * b)

    def _expand(self, p: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        c, h, w = shape
        if self.granularity is Granularity.LEVEL:
            return p.reshape(1, 1, 1)
        if self.granularity is Granularity.CHANNEL:
            return p.reshape(c, 1, 1)
        b = self.block
        return np.repeat(np.repeat(p, b, axis=1), b, axis=2)[:, :h, :w]

    def _quantize_int(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        qmin, qmax = self.qrange
        if self.range is not None:
            lo_r, hi_r = self.range
            if x.size and (float(x.min()) < lo_r or float(x.max()) > hi_r):
                if not self.clamp:
                    raise RangeError(
                        f"Values in [{float(x.min()):g}, {float(x.max()):g}] fall outside the "
                        f"quantizer range [{lo_r:g}, {hi_r:g}]; widen range= or set clamp=true."
                    )
                x = np.clip(x, lo_r, hi_r)
        g = self._groups(x)
        gshape = g.shape[:-1]
        if self.range is not None:
            lo = np.full(gshape, self.range[0], np.float32)
            hi = np.full(gshape, self.range[1], np.float32)
        else:
            lo = g.min(axis=-1).astype(np.float32)
            hi = g.max(axis=-1).astype(np.float32)
        # Scale floor: at least max(|lo|, |hi|) * 2**-15 (and the smallest normal float32),
        # so |zero_point| stays below 2**16 and float32 decode keeps sub-step precision even
        # for data with a large offset and a tiny range (images in [0, 1] never hit it).
        amax = np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64)
        floor = np.maximum(amax * 2.0**-15, np.finfo(np.float32).tiny)
        if self.scheme is Scheme.SYMMETRIC:
            scale = np.maximum(amax / qmax, floor).astype(np.float32)
            zp = np.zeros_like(scale)
        else:
            span = hi.astype(np.float64) - lo.astype(np.float64)
            scale = np.maximum(span / (qmax - qmin), floor).astype(np.float32)
            zp = (qmin - lo.astype(np.float64) / scale.astype(np.float64)).astype(np.float32)
        s_full = self._expand(scale, x.shape).astype(np.float64)
        z_full = self._expand(zp, x.shape).astype(np.float64)
        q = np.clip(np.rint(x.astype(np.float64) / s_full + z_full), qmin, qmax)
        store_dt = np.int8 if self.dtype in (StoredType.INT8, StoredType.INT4) else np.uint8
        params = np.stack([scale, zp]).astype(np.float32)
        if self.granularity is Granularity.LEVEL:
            params = params.reshape(2, 1)
        return q.astype(store_dt), params

    # ------------------------------------------------------------------ decode
    def dequantize(
        self,
        stored: torch.Tensor,
        params: torch.Tensor | None,
        *,
        value_scale: float,
    ) -> torch.Tensor:
        """Stored samples → float32 normalized values, as torch ops on ``stored``'s device.

        Args:
            stored: ``[..., C, H, W]`` stored samples, unpacked (4-bit codes as int8/uint8
                tensors; bfloat16 as int32 holding the uint16 bit pattern; others as stored).
            params: ``[..., 2, *groups]`` float32 (integer dtypes) or None.
            value_scale: the item's normalization factor (lossless only).

        Returns:
            float32 tensor ``[..., C, H, W]``: values in [0, 1] for uint8/uint16 sources,
            source units otherwise.
        """
        if self.dtype is StoredType.SOURCE:
            if value_scale != 1.0:  # 8/16-bit: float32(q / M), correctly rounded (see normalize)
                if stored.dtype in (torch.uint8, torch.uint16, torch.int32):
                    # IEEE float32 division of exact operands is correctly rounded, so this is
                    # bit-identical to the float64 route below (checked for every uint8/uint16
                    # value) and ~10x faster: no float64 temporaries (or true_divide's).
                    return stored.to(torch.float32).div_(round(1.0 / value_scale))
                return (stored.to(torch.float64) / round(1.0 / value_scale)).to(torch.float32)
            # float64 and wide integer sources decode in float64 so read(dtype=float64) is exact
            wide = stored.dtype in (torch.float64, torch.int32, torch.int64)
            return stored.to(torch.float64 if wide else torch.float32)
        if self.dtype is StoredType.BFLOAT16:
            return bf16_decode(stored)
        if not self.is_integer:
            return stored.to(torch.float32)
        if params is None:
            raise CodecError(f"Expected qparams for dtype {self.dtype.value}. Got None.")
        lead = stored.dim() - 3
        s = params.select(lead, 0)
        z = params.select(lead, 1)
        h, w = stored.shape[-2], stored.shape[-1]
        if self.granularity is Granularity.LEVEL:
            s = s.reshape(*s.shape[:lead], 1, 1, 1)
            z = z.reshape(*z.shape[:lead], 1, 1, 1)
        elif self.granularity is Granularity.CHANNEL:
            s = s.unsqueeze(-1).unsqueeze(-1)
            z = z.unsqueeze(-1).unsqueeze(-1)
        else:
            b = self.block
            s = s.repeat_interleave(b, dim=-2).repeat_interleave(b, dim=-1)[..., :h, :w]
            z = z.repeat_interleave(b, dim=-2).repeat_interleave(b, dim=-1)[..., :h, :w]
        if (stored.device.type == "cpu" and not stored.dtype.is_floating_point and z.numel() <= 64
                and not bool(z.any())):
            # zero point 0 (every 8-bit source level): (x - 0) * s is x * s exactly; skip the
            # subtraction pass. CPU only: the check would cost an accelerator a device sync
            # per call, for a pass it barely notices.
            if stored.dtype == torch.uint8 and stored.dim() == 3 and s.numel() == 1 and stored.shape[0] > 1 \
                    and stored.permute(1, 2, 0).is_contiguous():
                # a JPEG decoder's interleaved [H, W, C] memory seen as [C, H, W]: one compiled
                # pass to planar float32 (2-4x torch's strided conversion), the same products
                from qpyr._kernels.convert import planar_float32

                return torch.from_numpy(planar_float32(stored.permute(1, 2, 0).numpy(), float(s.reshape(()))))
            out = stored.to(torch.float32, memory_format=torch.contiguous_format)
            if out.shape == torch.broadcast_shapes(out.shape, s.shape):
                # conversion then an in-place multiply: 2x faster than one promoting multiply
                # into a new tensor (and 1.5x on a strided view such as a JPEG's [H, W, C]
                # pixels seen as [C, H, W]); the same float32 products
                return out.mul_(s)
            return out * s
        out = stored.to(torch.float32, memory_format=torch.contiguous_format)  # integer codes: a fresh tensor
        if out.shape != torch.broadcast_shapes(out.shape, s.shape, z.shape):
            return (out - z) * s
        return out.sub_(z).mul_(s)  # same arithmetic as (x - z) * s, without two temporaries


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """Pack 4-bit codes (int8 in -8..7 or uint8 in 0..15) two per byte along the last axis.

    Element ``2j`` goes to the low nibble of byte ``j``, ``2j+1`` to the high nibble; an odd
    width is padded with a zero nibble.
    """
    u = (q.astype(np.int16) & 0xF).astype(np.uint8)
    if u.shape[-1] % 2:
        u = np.concatenate([u, np.zeros(u.shape[:-1] + (1,), np.uint8)], axis=-1)
    return np.ascontiguousarray(u[..., 0::2] | (u[..., 1::2] << 4))


def unpack_nibbles(packed: torch.Tensor, width: int, *, signed: bool) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles` as torch ops: uint8 ``[..., ceil(W/2)]`` → ``[..., W]``
    (int16 codes; signed nibbles sign-extended)."""
    p = packed.to(torch.int16)
    lo = p & 0xF
    hi = (p >> 4) & 0xF
    out = torch.stack([lo, hi], dim=-1).reshape(*p.shape[:-1], -1)[..., :width]
    if signed:
        out = (out ^ 8) - 8
    return out


def bf16_encode(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bit patterns (uint16), round to nearest, ties to even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return r.astype("<u2")


def bf16_decode(bits: torch.Tensor) -> torch.Tensor:
    """bfloat16 bit patterns (any integer tensor holding 0..65535) → float32 tensor."""
    return (bits.to(torch.int32) << 16).view(torch.float32)
