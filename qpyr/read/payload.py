"""Level payloads: what a read fetches and entropy-decodes on the CPU, and how it becomes values.

A read has two halves. :meth:`qpyr.read.store.Store.fetch` does the I/O and the byte-level
decoding on the CPU and returns one :class:`LevelPayload` per level: the stored samples
(integers, 4-bit codes still packed two per byte, half floats ...) with their quantization
parameters, or, for codecs that split their decoder (see below), the entropy-decoded
coefficients. :meth:`LevelPayload.decode` does the arithmetic with torch ops on the target
device: transfer (pinned, non-blocking on CUDA), nibble unpacking, the codec's reconstruction
(e.g. IDCT), dequantization. ``Store.read`` is exactly ``fetch`` + ``decode``, so the values a
DataLoader gets with device-side decoding are the values ``read`` returns.

Payloads are plain picklable objects holding CPU tensors: DataLoader workers can return them
(tensors travel through shared memory) and the main process decodes a batch on the GPU with
:func:`decode_payloads`.

Split codecs: a chunk codec (or its ``inner`` codec) that is a
:class:`~qpyr.read.protocols.SplitDecoder` is decoded in two halves when asked for
(entropy decoding on the CPU, reconstruction on the device), so both paths give identical
samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

from qpyr.codecs.quant import Granularity, Quantizer, StoredType, unpack_nibbles
from qpyr.errors import FormatError, InputError
from qpyr.read.protocols import BatchReconstructor, SplitDecoder, split_codec

__all__ = ["LevelPayload", "PayloadBatch", "StoredLevel", "check_dtype", "decode_payloads", "split_codec",
           "to_uint8", "torch_dtype"]

_TORCH_DTYPES = {
    "uint8": torch.uint8, "int8": torch.int8, "uint16": torch.uint16, "int16": torch.int16,
    "uint32": torch.uint32, "int32": torch.int32, "uint64": torch.uint64, "int64": torch.int64,
    "float16": torch.float16, "float32": torch.float32, "float64": torch.float64,
}
_WIDE = (torch.float64, torch.int32, torch.int64, torch.uint32, torch.uint64)


def torch_dtype(dt: np.dtype[Any]) -> torch.dtype:
    """torch dtype holding numpy stored samples of dtype ``dt`` (same bits)."""
    return _TORCH_DTYPES[np.dtype(dt).name]


_U8_SCALE = 1.0 / 255.0


def check_dtype(dtype: Any) -> torch.dtype:
    """``dtype`` if reads can produce it (a floating torch dtype, or ``torch.uint8``), else
    :class:`~qpyr.errors.InputError`."""
    if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point or dtype == torch.uint8):
        raise InputError(f"dtype: expected a floating torch dtype or torch.uint8. Got {dtype!r}.")
    return dtype


def check_uint8_source(value_scale: float, what: str = "this item") -> None:
    """uint8 output is defined for 8-bit sources only (values ``k / 255``). A 16-bit source
    would lose 8 of its bits and a float source has no 0..255 range: read those as float."""
    if value_scale != _U8_SCALE:
        src = "16-bit" if value_scale == 1.0 / 65535.0 else "float / wide integer"
        raise InputError(f"dtype=torch.uint8 needs an 8-bit (uint8) source; {what} has a {src} source. "
                         "Read it with a floating dtype.")


def to_uint8(v: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] -> ``uint8`` 0..255: ``floor(255 * v + 0.5)`` in float32, clamped (half
    up, the rounding of the ``qpyr.dct`` codec's uint8 path)."""
    x = v.to(torch.float32).mul(255.0).add_(0.5).clamp_(0.0, 255.0)
    if x.device.type == "cpu":
        # numpy's float32 -> uint8 cast is vectorised (~4x torch's on CPU); both truncate, which
        # on clamped non-negative samples is the floor
        return torch.from_numpy(x.numpy().astype(np.uint8))
    return x.floor_().to(torch.uint8)


def _identity_u8(t: torch.Tensor, q: Quantizer, p: torch.Tensor | None) -> bool:
    """Whether the uint8 codes ``t`` already are the 8-bit values: a lossless uint8 level, or
    an affine one with scale 1/255 and zero-point 0 (how ``qpyr.dct`` levels are stored)."""
    if t.dtype != torch.uint8 or q.is_packed:
        return False
    if q.dtype is StoredType.SOURCE:
        return True
    if not q.is_integer or p is None or q.granularity is Granularity.BLOCK:
        return False
    lead = t.dim() - 3  # as Quantizer.dequantize: [..., 2, *groups] against [..., C, H, W]
    s, z = p.select(lead, 0), p.select(lead, 1)
    return bool((z == 0).all()) and bool(((s.double() * 255.0 - 1.0).abs() < 1e-6).all())


def _to(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    if t.device == dev:
        return t
    if dev.type == "cuda" and t.device.type == "cpu":
        return (t if t.is_pinned() else t.pin_memory()).to(dev, non_blocking=True)
    return t.to(dev)


@dataclasses.dataclass(frozen=True, eq=False)
class StoredLevel:
    """Stored values of one level, undequantized (``read(..., dequantize=False)``).

    ``values`` is ``Tensor[C, h, w]`` in the stored type: ``uint8`` / ``int8`` codes (4-bit
    codes unpacked: uint4 as ``uint8`` 0..15, int4 as ``int8`` -8..7), ``float16`` /
    ``bfloat16`` / ``float32`` for float levels, the source dtype for lossless levels.
    ``scale`` and ``zero_point`` are float32 tensors that broadcast against ``values``
    (``[1, 1, 1]`` per level, ``[C, 1, 1]`` per channel, ``[C, h, w]`` per block); the value of
    a sample is ``(values - zero_point) * scale`` — in [0, 1] for 8/16-bit sources. Float and
    lossless levels have ``zero_point = 0`` and ``scale`` = the source's normalization
    (``1/255``, ``1/65535`` or 1).
    """

    values: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    stored_type: str
    granularity: str
    quantizer: Quantizer | None = None

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The level's values as ``dtype``: exactly what ``read(..., dequantize=True)`` returns."""
        v = self.values
        if self.stored_type in ("float16", "bfloat16", "float32"):
            return v.to(torch.float32).to(dtype)
        if self.stored_type == "source" and self.quantizer is not None:
            # 8/16-bit sources divide by 255 / 65535 (correctly rounded), as the quantizer does
            vs = float(self.scale.reshape(-1)[0])
            return self.quantizer.dequantize(v, None, value_scale=vs).to(dtype)
        x = v.to(torch.float64 if v.dtype in _WIDE else torch.float32)
        return ((x - self.zero_point.to(x.dtype)) * self.scale.to(x.dtype)).to(dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class LevelPayload:
    """One level of one item after fetch and entropy decoding, before the device arithmetic.

    Attributes:
        quantizer: the level's quantizer (decides the maths of :meth:`decode`).
        value_scale: the item's normalization factor (lossless levels).
        height, width: logical size of the result (the level, or the requested region of it).
        origin: ``(y, x)`` of the result's top-left sample in level coordinates.
        samples: CPU ``Tensor[C, height, W']`` of stored samples (4-bit codes still packed two
            per byte: ``W' = ceil((col + width) / 2)``), or None for coefficient payloads.
        col: first logical column of the result in ``samples`` after unpacking (0 or 1).
        params: float32 ``Tensor[2, *groups]`` (scale, zero-point) of the item, or None.
        codec: for coefficient payloads, the split codec; ``tiles`` then holds
            ``(y, x, coefficients)`` of each chunk, in sample coordinates relative to the
            result, and ``tile_shape`` the chunks' ``(C, H, W)``.
        stored_dtype: numpy name of the stored sample type.
        pruned: the level's codec (``qpyr.tiles``) may leave pruned tiles as NaN, to be
            filled from the next coarser level (:mod:`qpyr.read.pruned`).
        coarser: for a pruned whole-level payload, the next coarser level's payload (with its
            own ``coarser`` if it is pruned too), attached by :func:`qpyr.read.pruned.with_coarser`:
            :meth:`decode` fills the pruned tiles from it, wherever it runs.
    """

    quantizer: Quantizer
    value_scale: float
    height: int
    width: int
    origin: tuple[int, int]
    stored_dtype: str
    channels: int
    samples: torch.Tensor | None = None
    col: int = 0
    params: torch.Tensor | None = None
    codec: SplitDecoder | None = None
    tiles: tuple[tuple[int, int, Any], ...] = ()
    tile_shape: tuple[int, int, int] = (0, 0, 0)
    pruned: bool = False
    coarser: LevelPayload | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, height, width)`` of the decoded result."""
        return (self.channels, self.height, self.width)

    @property
    def nbytes(self) -> int:
        """Bytes of CPU tensors/arrays carried (what a worker ships to the main process)."""
        n = self.samples.nbytes if self.samples is not None else 0
        n += self.params.nbytes if self.params is not None else 0
        for _, _, co in self.tiles:
            for v in (getattr(co, "__dict__", None) or {f.name: getattr(co, f.name) for f in dataclasses.fields(co)}
                      if dataclasses.is_dataclass(co) else {}).values():
                for a in (v if isinstance(v, tuple) else (v,)):
                    n += a.nbytes if isinstance(a, np.ndarray | torch.Tensor) else len(a) if isinstance(a, bytes) else 0
        if self.coarser is not None:
            n += self.coarser.nbytes
        return int(n)

    def pin_memory(self) -> LevelPayload:
        """A copy with samples in pinned memory (called by ``DataLoader(pin_memory=True)``);
        ``self`` where there is no CUDA device (pinning needs the CUDA runtime)."""
        if self.samples is None or not torch.cuda.is_available() or self.samples.is_pinned():
            return self
        return dataclasses.replace(self, samples=self.samples.pin_memory())

    # -------------------------------------------------------------- device half
    def codes(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """Stored samples of the result on ``device``: ``Tensor[C, height, width]``, 4-bit
        codes unpacked (uint8 / int8), coefficient payloads reconstructed and rounded."""
        dev = torch.device(device)
        q = self.quantizer
        if self.samples is None:
            t = self._reconstruct(dev)
        else:
            t = _to(self.samples, dev)
            if q.is_packed:
                t = unpack_nibbles(t, self.col + self.width, signed=q.dtype is StoredType.INT4)
                t = t[:, :, self.col:].to(torch.int8 if q.dtype is StoredType.INT4 else torch.uint8)
        return t

    def _reconstruct(self, dev: torch.device) -> torch.Tensor:
        sdt = torch_dtype(np.dtype(self.stored_dtype))
        codec = self.codec
        if codec is None:  # pragma: no cover - fetch sets the codec of every coefficient payload
            raise FormatError("internal: a coefficient payload without its codec")
        if len(self.tiles) == 1 and self.tiles[0][:2] == (0, 0):
            return codec.reconstruct(self.tiles[0][2], dev, sdt)[:, :self.height, :self.width]
        t = torch.empty((self.channels, self.height, self.width), dtype=sdt, device=dev)
        for y, x, co in self.tiles:
            r = codec.reconstruct(co, dev, sdt)
            ys, xs = max(0, -y), max(0, -x)
            ye, xe = min(r.shape[1], self.height - y), min(r.shape[2], self.width - x)
            t[:, y + ys:y + ye, x + xs:x + xe] = r[:, ys:ye, xs:xe]
        return t

    def _params(self, dev: torch.device) -> tuple[torch.Tensor | None, int, int]:
        """Params on ``dev`` cut to the result's blocks, and the result's offset in its first
        block (block granularity; 0 otherwise)."""
        p = self.params
        if p is None:
            return None, 0, 0
        q = self.quantizer
        if q.granularity is Granularity.BLOCK:
            b = q.block
            oy, ox = self.origin
            by0, bx0 = oy // b, ox // b
            p = p[:, :, by0:-(-(oy + self.height) // b), bx0:-(-(ox + self.width) // b)]
            return _to(p, dev), oy - by0 * b, ox - bx0 * b
        return _to(p, dev), 0, 0

    def decode(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Values ``Tensor[C, height, width]`` of ``dtype`` on ``device``: in [0, 1] for 8/16-bit
        sources, source units otherwise; ``torch.uint8`` gives 0..255 (8-bit sources only:
        :func:`to_uint8` of the float32 values, the stored codes themselves where they are the
        values). The arithmetic runs on ``device``."""
        dev = torch.device(device)
        return self._values(self.codes(dev), dev, dtype)

    def _values(self, t: torch.Tensor, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """:meth:`decode` from the result's stored samples ``t`` (what :meth:`codes` gives)."""
        p, py, px = self._params(dev)
        q = self.quantizer
        u8 = dtype == torch.uint8
        if u8:
            check_uint8_source(self.value_scale)
            if self.coarser is None and not (py or px) and _identity_u8(t, q, p):
                return t  # the codes are the values (for qpyr.dct, the codec's own uint8 rounding)
        if py or px:
            # Quantizer.dequantize aligns block parameters at sample (0, 0): pad the result
            # to the start of its first block instead of restating the maths here.
            t = torch.nn.functional.pad(t, (px, 0, py, 0))
            out = q.dequantize(t, p, value_scale=self.value_scale)[:, py:, px:]
        else:
            out = q.dequantize(t, p, value_scale=self.value_scale)
        if self.coarser is not None and out.is_floating_point() and bool(torch.isnan(out).any()):
            from qpyr.codecs.tiles import fill_pruned

            out = fill_pruned(out.to(torch.float32), self.coarser.decode(dev, torch.float32))
        return to_uint8(out) if u8 else out.to(dtype)

    def stored(self, device: str | torch.device = "cpu") -> StoredLevel:
        """The stored values with their scale and zero-point (no dequantization)."""
        dev = torch.device(device)
        q = self.quantizer
        t = self.codes(dev)
        one = torch.ones((1, 1, 1), dtype=torch.float32, device=dev)
        if q.dtype is StoredType.BFLOAT16:
            t = t.view(torch.bfloat16) if t.dtype in (torch.uint16, torch.int16) else t
        if not q.is_integer:
            s = one * (self.value_scale if q.is_lossless else 1.0)
            return StoredLevel(t, s, torch.zeros_like(one), q.dtype.value if not q.is_lossless else "source", "level", q)
        p, py, px = self._params(dev)
        if p is None:
            raise ValueError(f"Expected quantization parameters for a {q.dtype.value} level. Got none.")
        c, h, w = t.shape
        if q.granularity is Granularity.LEVEL:
            s, z = p[0].reshape(1, 1, 1), p[1].reshape(1, 1, 1)
        elif q.granularity is Granularity.CHANNEL:
            s, z = p[0].reshape(c, 1, 1), p[1].reshape(c, 1, 1)
        else:
            b = q.block
            s = p[0].repeat_interleave(b, -2).repeat_interleave(b, -1)[:, py:py + h, px:px + w]
            z = p[1].repeat_interleave(b, -2).repeat_interleave(b, -1)[:, py:py + h, px:px + w]
        return StoredLevel(t, s.contiguous(), z.contiguous(), q.dtype.value, q.granularity.value, q)


def _group_key(p: LevelPayload) -> Any:
    """Payloads with equal keys decode as one stacked batch (None: decode alone; a payload with
    a ``coarser`` level fills its pruned tiles in its own :meth:`LevelPayload.decode`)."""
    q = p.quantizer
    if (p.samples is None or p.coarser is not None or q.is_packed or q.granularity is Granularity.BLOCK
            or (q.is_integer and p.params is None)):
        return None
    return (q, p.value_scale, p.samples.dtype, tuple(p.samples.shape),
            None if p.params is None else tuple(p.params.shape))


class PayloadBatch(Sequence[LevelPayload]):
    """The payloads of one level of a batch, packed for the trip from a DataLoader worker.

    Sample payloads that share shape, stored type and per-level/per-channel quantizer (a batch
    of a bucketed corpus) keep their samples and parameters in one stacked tensor each, so a
    worker ships one shared-memory block per group instead of one per image, and
    :meth:`decode` runs one transfer and one dequantization per group. Indexing gives the
    individual :class:`LevelPayload` s back.
    """

    def __init__(self, payloads: Sequence[LevelPayload]):
        items = list(payloads)
        by_key: dict[Any, list[int]] = {}
        for i, p in enumerate(items):
            k = _group_key(p)
            if k is not None:
                by_key.setdefault(k, []).append(i)
        self._groups: list[tuple[list[int], torch.Tensor, torch.Tensor | None]] = []
        self._where: dict[int, tuple[int, int]] = {}
        for idx in by_key.values():
            if len(idx) < 2:
                continue
            st = torch.stack([items[i].samples for i in idx])  # type: ignore[misc]
            pp = None if items[idx[0]].params is None else torch.stack([items[i].params for i in idx])  # type: ignore[misc]
            g = len(self._groups)
            self._groups.append((idx, st, pp))
            for j, i in enumerate(idx):
                self._where[i] = (g, j)
                items[i] = dataclasses.replace(items[i], samples=None, params=None)  # metadata only
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> LevelPayload:  # type: ignore[override]
        i = range(len(self._items))[i]
        if i not in self._where:
            return self._items[i]
        g, j = self._where[i]
        _, st, pp = self._groups[g]
        return dataclasses.replace(self._items[i], samples=st[j], params=None if pp is None else pp[j])

    def pin_memory(self) -> PayloadBatch:
        """A copy in pinned memory (called by ``DataLoader(pin_memory=True)``); ``self`` where
        there is no CUDA device."""
        if not torch.cuda.is_available():
            return self
        out = PayloadBatch.__new__(PayloadBatch)
        out._where = self._where
        out._groups = [(idx, st.pin_memory(), pp) for idx, st, pp in self._groups]
        out._items = [p if i in self._where else p.pin_memory() for i, p in enumerate(self._items)]
        return out

    def _decode_group(self, g: int, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
        idx, st, pp = self._groups[g]
        p0 = self._items[idx[0]]
        x = _to(st.pin_memory() if dev.type == "cuda" and not st.is_pinned() else st, dev)
        params = None if pp is None else _to(pp, dev)
        if dtype == torch.uint8:
            check_uint8_source(p0.value_scale)
            if _identity_u8(x, p0.quantizer, params):
                return x
            return to_uint8(p0.quantizer.dequantize(x, params, value_scale=p0.value_scale))
        vals = p0.quantizer.dequantize(x, params, value_scale=p0.value_scale)
        return vals.to(dtype)

    def decode(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               *, stack: bool = False) -> Any:
        """Values of every payload on ``device``, in order: a list of ``Tensor[C, h, w]``, or
        with ``stack=True`` one ``Tensor[N, C, h, w]`` when all share a shape."""
        dev = torch.device(device)
        if stack and len(self._groups) == 1 and len(self._groups[0][0]) == len(self._items):
            return self._decode_group(0, dev, dtype)  # already stacked in item order
        out: list[torch.Tensor | None] = [None] * len(self._items)
        for g, (idx, _, _) in enumerate(self._groups):
            vals = self._decode_group(g, dev, dtype)
            for j, i in enumerate(idx):
                out[i] = vals[j]
        for i, t in _batched_codes(self._items, self._where, dev).items():
            out[i] = self._items[i]._values(t, dev, dtype)
        for i, p in enumerate(self._items):
            if out[i] is None:
                out[i] = p.decode(dev, dtype)
        if stack and all(t.shape == out[0].shape for t in out):  # type: ignore[union-attr]
            return torch.stack(out)  # type: ignore[arg-type]
        return out


def _batched_codes(items: Sequence[LevelPayload], skip: Mapping[int, Any], dev: torch.device) -> dict[int, torch.Tensor]:
    """Stored samples of the single-chunk payloads whose split codec decodes a whole batch in
    one call on ``dev`` (``qpyr.dct`` JPEG streams on CUDA: one batched nvJPEG call), by index;
    the rest decode one by one."""
    if dev.type == "cpu":
        return {}
    idx = [i for i, p in enumerate(items) if i not in skip and p.samples is None and len(p.tiles) == 1
           and p.tiles[0][:2] == (0, 0) and isinstance(p.codec, BatchReconstructor)]
    if len(idx) < 2:
        return {}
    codec = cast(BatchReconstructor, items[idx[0]].codec)  # idx holds only those
    idx = [i for i in idx if items[i].codec == codec]
    decoded = codec.reconstruct_batch([items[i].tiles[0][2] for i in idx], dev)
    if decoded is None:
        return {}
    return {i: t[:, :items[i].height, :items[i].width] for i, t in zip(idx, decoded, strict=True)}


def decode_payloads(payloads: Sequence[LevelPayload], device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Decode many payloads on ``device`` (see :class:`PayloadBatch`: equal-shaped sample
    payloads are decoded with one transfer and one dequantization)."""
    batch = payloads if isinstance(payloads, PayloadBatch) else PayloadBatch(payloads)
    out: list[torch.Tensor] = batch.decode(device, dtype)
    return out
