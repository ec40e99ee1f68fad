"""``qpyr.tiles``: per-tile precision inside one chunk (the ``saliency`` policy's storage).

A chunk ``[1, C, H, W]`` of float32 values (normalized units) is cut into ``tile x tile``
tiles (the last row/column of tiles may be smaller). Every tile gets a *class*:

====  ========  ==========================================================================
code  class     stored as
====  ========  ==========================================================================
0     prune     nothing: decoded as NaN, filled by the reader from the next coarser level
1     int4      uint4 codes, affine, one (scale, zero_point) per channel of the tile
2     int8      uint8 codes, affine, one (scale, zero_point) per channel of the tile
3     fp16      float16 values
4     fp32      float32 values
====  ========  ==========================================================================

The integer maths is :class:`~qpyr.quant.Quantizer`'s (``granularity=channel`` applied to one
tile), so the reconstruction is bit-identical to that quantizer's. The byte layout is in
``spec/codecs/tiles.md``. Lossy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from qpyr.errors import CodecError

__all__ = ["TilesChunkCodec", "CLASSES", "chunk_classes", "fill_pruned", "MAGIC"]

MAGIC = b"QTL1"
#: class code → name (index = code)
CLASSES = ("prune", "int4", "int8", "fp16", "fp32")
_HEADER = struct.Struct("<4sHHII")  # magic, tile, channels, height, width
_TILES = (8, 16, 32, 64, 128, 256)


def _tile_quantizer(code: int) -> Any:
    from qpyr.codecs.quant import Granularity, Quantizer, StoredType

    return Quantizer(dtype=StoredType.UINT4 if code == 1 else StoredType.UINT8, granularity=Granularity.CHANNEL)


def _tiles(h: int, w: int, t: int) -> list[tuple[int, int, int, int]]:
    """Tile rectangles ``(y0, y1, x0, x1)`` in raster order."""
    return [(y, min(y + t, h), x, min(x + t, w)) for y in range(0, h, t) for x in range(0, w, t)]


def chunk_classes(level_classes: np.ndarray, y0: int, x0: int, th: int, tw: int, h: int, w: int, t: int) -> np.ndarray:
    """Class map of the chunk at level pixel ``(y0, x0)`` of size ``th x tw`` from the level's
    map (tile grid anchored at the level's origin; ``t`` divides the chunk origin). Tiles that
    start past the item's extent ``h x w`` (chunk padding) are pruned."""
    ny, nx = -(-th // t), -(-tw // t)
    out = np.zeros((ny, nx), np.uint8)
    gy, gx = y0 // t, x0 // t
    for i in range(ny):
        for j in range(nx):
            yy, xx = gy + i, gx + j
            if (y0 + i * t) < h and (x0 + j * t) < w and yy < level_classes.shape[0] and xx < level_classes.shape[1]:
                out[i, j] = level_classes[yy, xx]
    return out


def fill_pruned(recon: torch.Tensor, coarser: torch.Tensor) -> torch.Tensor:
    """Replace NaN samples of ``recon`` ``[C, h, w]`` by the next coarser level ``[C, h', w']``
    upsampled to ``h x w`` (bilinear, ``align_corners=False``, as torch ops on recon's device)."""
    mask = torch.isnan(recon)
    if not bool(mask.any()):
        return recon
    c = coarser.to(device=recon.device, dtype=torch.float32)
    up = torch.nn.functional.interpolate(c[None], size=tuple(recon.shape[-2:]), mode="bilinear",
                                         align_corners=False)[0].to(recon.dtype)
    return torch.where(mask, up, recon)


@dataclass(frozen=True)
class TilesChunkCodec:
    """``qpyr.tiles`` on float32 chunks ``[1, C, H, W]``. ``tile`` in 8, 16, ..., 256 (default 64)."""

    tile: int = 64
    lossy: ClassVar[bool] = True
    name: ClassVar[str] = "qpyr.tiles"
    level: ClassVar[int] = 9  # zstd level of the body

    def __post_init__(self) -> None:
        if isinstance(self.tile, bool) or self.tile not in _TILES:
            raise CodecError(f"Expected qpyr.tiles tile in {list(_TILES)}. Got {self.tile!r}.")

    @classmethod
    def create(cls, **config: Any) -> TilesChunkCodec:
        return cls(**config)

    @classmethod
    def from_dict(cls, d: Any) -> TilesChunkCodec:
        from qpyr.codecs._config import parse_config

        return cls(**parse_config(d, cls.name, {"tile"}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name} if self.tile == 64 else {"name": self.name, "configuration": {"tile": self.tile}}

    def zarr_chain(self, dtype: np.dtype[Any]) -> list[dict[str, Any]]:
        return [self.to_dict()]

    # ------------------------------------------------------------------ encode
    def encode(self, chunk: np.ndarray) -> bytes:
        """Encode with every tile fp32, except tiles holding NaN (pruned)."""
        c, h, w = chunk.shape[1:]
        t = self.tile
        cls = np.full((-(-h // t), -(-w // t)), 4, np.uint8)
        for k, (y0, y1, x0, x1) in enumerate(_tiles(h, w, t)):
            if np.isnan(chunk[0, :, y0:y1, x0:x1]).any():
                cls.flat[k] = 0
        return self.encode_classes(chunk, cls)

    def encode_classes(self, chunk: np.ndarray, classes: np.ndarray) -> bytes:
        """Encode ``chunk`` ``[1, C, H, W]`` float32 with the tile class map ``classes``
        ``[ceil(H/tile), ceil(W/tile)]`` (codes 0..4)."""
        from qpyr.codecs.quant import pack_nibbles

        if chunk.ndim != 4 or chunk.shape[0] != 1 or chunk.dtype != np.float32:
            raise CodecError(f"qpyr.tiles encodes [1, C, H, W] float32 chunks. Got {chunk.shape} {chunk.dtype}.")
        _, c, h, w = chunk.shape
        t = self.tile
        cmap = np.ascontiguousarray(classes, dtype=np.uint8)
        if cmap.shape != (-(-h // t), -(-w // t)) or (cmap.size and int(cmap.max()) > 4):
            raise CodecError(f"Expected a class map of shape {(-(-h // t), -(-w // t))} with codes 0..4. "
                             f"Got {cmap.shape}.")
        rects = _tiles(h, w, t)
        x = chunk[0]
        body = [cmap.tobytes()]
        for code in (1, 2, 3, 4):
            sel = [r for k, r in enumerate(rects) if cmap.flat[k] == code]
            if code in (1, 2):
                q = _tile_quantizer(code)
                params, codes = [], []
                for y0, y1, x0, x1 in sel:
                    stored, p = q.quantize(np.ascontiguousarray(x[:, y0:y1, x0:x1]), np.dtype(np.float32))
                    params.append(np.ascontiguousarray(p, dtype="<f4").tobytes())
                    s = stored.astype(np.uint8).ravel()
                    codes.append(pack_nibbles(s).tobytes() if code == 1 else s.tobytes())
                body += params + codes
            else:
                dt = "<f2" if code == 3 else "<f4"
                body += [np.ascontiguousarray(x[:, y0:y1, x0:x1], dtype=dt).tobytes() for y0, y1, x0, x1 in sel]
        import zstandard

        return _HEADER.pack(MAGIC, t, c, h, w) + zstandard.ZstdCompressor(level=self.level).compress(b"".join(body))

    # ------------------------------------------------------------------ decode
    def decode(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """``[1, C, H, W]`` float32; pruned tiles are NaN."""
        import zstandard

        from qpyr.codecs.quant import unpack_nibbles

        if np.dtype(dtype) != np.float32 or len(shape) != 4 or shape[0] != 1:
            raise CodecError(f"qpyr.tiles decodes [1, C, H, W] float32 chunks. Got {shape} {dtype}.")
        _, c, h, w = (int(v) for v in shape)
        if len(data) < _HEADER.size:
            raise CodecError("qpyr.tiles chunk shorter than its header.")
        magic, t, hc, hh, hw = _HEADER.unpack_from(data)
        if magic != MAGIC or t != self.tile or (hc, hh, hw) != (c, h, w):
            raise CodecError(f"qpyr.tiles header {magic!r} tile={t} shape={(hc, hh, hw)} does not match "
                             f"tile={self.tile} shape={(c, h, w)}.")
        rects = _tiles(h, w, t)
        n_cls = len(rects)
        # the body can never exceed the all-fp32 size plus the class map: bound the allocation
        limit = n_cls + c * h * w * 4 + n_cls * c * 8
        try:
            # one frame that declares its size (bounded before anything is allocated) and ends the chunk
            size = zstandard.get_frame_parameters(data[_HEADER.size:]).content_size
            if size == zstandard.CONTENTSIZE_UNKNOWN or size > limit:
                raise CodecError(f"qpyr.tiles body declares {size} bytes; expected a known size <= {limit}.")
            dobj = zstandard.ZstdDecompressor().decompressobj()
            body = dobj.decompress(data[_HEADER.size:])
            if dobj.unused_data or len(body) != size:
                raise CodecError("qpyr.tiles chunk has bytes after its zstd frame (or a short frame).")
        except zstandard.ZstdError as e:
            raise CodecError(f"Corrupt qpyr.tiles chunk: {e}.") from e
        if len(body) < n_cls:
            raise CodecError("qpyr.tiles body shorter than its class map.")
        cmap = np.frombuffer(body, np.uint8, n_cls)
        if n_cls and int(cmap.max()) > 4:
            raise CodecError(f"qpyr.tiles class code {int(cmap.max())} is not in 0..4.")
        out = np.full((1, c, h, w), np.nan, np.float32)
        pos = n_cls

        def take(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(body):
                raise CodecError("qpyr.tiles body is truncated.")
            b = body[pos:pos + n]
            pos += n
            return b

        for code in (1, 2, 3, 4):
            sel = [r for k, r in enumerate(rects) if cmap[k] == code]
            if code in (1, 2):
                q = _tile_quantizer(code)
                params = [np.frombuffer(take(8 * c), "<f4").reshape(2, c) for _ in sel]
                for (y0, y1, x0, x1), p in zip(sel, params, strict=True):
                    n = c * (y1 - y0) * (x1 - x0)
                    if code == 1:
                        raw = torch.from_numpy(np.frombuffer(take((n + 1) // 2), np.uint8).copy())
                        codes = unpack_nibbles(raw, n, signed=False)
                    else:
                        codes = torch.from_numpy(np.frombuffer(take(n), np.uint8).copy())
                    v = q.dequantize(codes.reshape(c, y1 - y0, x1 - x0), torch.from_numpy(p.astype(np.float32)),
                                     value_scale=1.0)
                    out[0, :, y0:y1, x0:x1] = v.numpy()
            else:
                dt, size = ("<f2", 2) if code == 3 else ("<f4", 4)
                for y0, y1, x0, x1 in sel:
                    n = c * (y1 - y0) * (x1 - x0)
                    out[0, :, y0:y1, x0:x1] = np.frombuffer(take(n * size), dt).reshape(c, y1 - y0, x1 - x0)
        if pos != len(body):
            raise CodecError(f"qpyr.tiles body has {len(body) - pos} trailing bytes.")
        return out
