"""Encode one level of one item: quantize, tile into chunks, encode, and measure quality.

Used by the writer (to store a level) and by quality-target policies (to try candidate
encodings). Quality is measured on exactly what a reader will decode: for lossy chunk codecs the
encoded chunks are decoded again and reassembled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qpyr.codecs import is_lossy
from qpyr.codecs.encoding import Encoding
from qpyr.codecs.quant import pack_nibbles, value_scale_for
from qpyr.errors import CodecError
from qpyr.format.layout import BucketSpec, size_class
from qpyr.format.shard import add_crc, strip_crc

__all__ = ["EncodedLevel", "encode_level", "bucket_for", "measure"]


@dataclass
class EncodedLevel:
    """One item's level, encoded: chunk bytes by tile, parameters, size and quality."""

    encoding: Encoding
    spec: BucketSpec
    height: int
    width: int
    chunks: list[tuple[int, int, bytes]]  # (tile row, tile col, encoded bytes incl. crc32c)
    params: np.ndarray | None
    nbytes: int  # chunk bytes + 16 B index entry per chunk + raw parameter bytes
    psnr: float
    ssim: float
    #: why this encoding was chosen: "planned", "raised" (floor missed, quality/precision
    #: raised), "searched" (cheapest meeting a quality target), "lossless-fallback"
    decision: str = "planned"
    #: the decoded level (float32 ``[C, h, w]``, normalized units) when asked for with
    #: ``keep_recon=True``: exactly what a reader decodes (pruned tiles already filled)
    recon: torch.Tensor | None = None
    #: per-tile class counts of a ``qpyr.tiles`` level (index = class code, see
    #: spec/codecs/tiles.md), else None
    tile_counts: list[int] | None = None
    #: stored bytes of the same level as uniform uint8 (what ``saliency`` reports against)
    int8_bytes: int | None = None
    #: the per-tile class map of a ``qpyr.tiles`` level (uint8 ``[ceil(h/tile), ceil(w/tile)]``)
    tile_map: np.ndarray | None = None


def bucket_for(enc: Encoding, level: np.ndarray, source_dtype: np.dtype[Any], slots_per_task: int, li: int) -> BucketSpec:
    c, h, w = level.shape
    q = enc.quantizer
    return BucketSpec(
        level=li, encoding_id=enc.id, channels=c, height=size_class(h), width=size_class(w),
        packed=q.is_packed, dtype=q.storage_dtype(source_dtype).name, slots_per_task=slots_per_task,
    )


def measure(recon: torch.Tensor, level: np.ndarray, source_dtype: np.dtype[Any],
            reference: torch.Tensor | None = None) -> tuple[float, float]:
    """(PSNR dB, RGB-SSIM) of a decoded level (normalized units) against the canonical level
    (``reference``: the level already normalized, if the caller has it).

    Integer sources are compared in [0, 1] (peak 255 / 65535); float sources with
    ``data_range`` = the reference level's max - min (1 if constant).
    """
    from qpyr.codecs.quant import normalize
    from qpyr.metrics import psnr, ssim

    vs = value_scale_for(source_dtype)
    ref = reference if reference is not None else torch.from_numpy(normalize(level, source_dtype))
    if vs != 1.0:
        data_range = 1.0
    else:  # float sources: the level's own range, in float64 (a float32 span can overflow)
        span = float(ref.max().double() - ref.min().double())
        data_range = span if 0 < span < float("inf") else 1.0
    return float(psnr(recon, ref, data_range=data_range)), float(ssim(recon, ref, data_range=data_range, fast=True))


def encode_level(
    level: np.ndarray,
    source_dtype: np.dtype[Any],
    enc: Encoding,
    *,
    li: int,
    slots_per_task: int,
    quality: bool = True,
    keep_recon: bool = False,
    tile_classes: np.ndarray | None = None,
    coarser: torch.Tensor | None = None,
    simulate: bool = False,
    quantized: tuple[np.ndarray, np.ndarray | None] | None = None,
    reference: torch.Tensor | None = None,
) -> EncodedLevel:
    """Encode ``level`` (``[C, h, w]`` in level units) with ``enc``.

    Chunks cover the item's extent in tiles of the bucket's chunk shape; the padding past the
    extent is the codec's own ``pad`` where it has one (``qpyr.dct``: block-constant fill) and
    edge replication otherwise (cheap for every codec, no ringing).

    ``keep_recon``: also return the decoded level (``EncodedLevel.recon``). ``tile_classes``
    (``qpyr.tiles`` only): uint8 class map of the level on the codec's tile grid; tiles past
    the item's extent are pruned. ``coarser``: the *decoded* next coarser level, used to fill
    pruned tiles exactly as a reader does (spec/codecs/tiles.md); without it they stay NaN
    and quality is not measured.

    ``simulate``: for codecs with a ``simulate`` method (``qpyr.dct``), measure quality on the
    bit-exact round trip without entropy coding and write no chunks (``nbytes = -1``): the
    cheap probe of quality searches, which entropy-code only the encoding they choose.

    ``quantized``: ``enc.quantizer.quantize(level, source_dtype)`` when the caller has it (a
    search encodes one level many times with the same quantizer); ``reference``: the level in
    normalized units (:func:`~qpyr.codecs.quant.normalize`), likewise.
    """
    tiled = getattr(enc.codec, "name", "") == "qpyr.tiles"
    q = enc.quantizer
    spec = bucket_for(enc, level, source_dtype, slots_per_task, li)
    stored, params = quantized if quantized is not None else q.quantize(level, source_dtype)
    c, h, w = level.shape
    th, tw = spec.chunk_hw
    ny, nx = -(-h // th), -(-w // tw)
    pad = getattr(enc.codec, "pad", None)  # a codec may pad in the way that costs it least
    if pad is not None:
        padded = pad(stored, ny * th, nx * tw)
    else:
        padded = np.pad(stored, ((0, 0), (0, ny * th - h), (0, nx * tw - w)), mode="edge")
    if spec.packed:
        padded = pack_nibbles(padded)
    sdt = np.dtype(spec.dtype)
    padded = padded.astype(sdt, copy=False)
    tws = spec.stored_chunk_w
    lossy = is_lossy(enc.codec)
    want_recon = quality or keep_recon
    recon_stored = np.empty_like(padded) if lossy and want_recon else None
    if tiled:
        from qpyr.codecs.tiles import chunk_classes

        tcodec: Any = enc.codec
        T = tcodec.tile
        if tile_classes is None:
            tile_classes = np.full((-(-h // T), -(-w // T)), 4, np.uint8)  # all fp32
        counts = np.bincount(tile_classes.ravel(), minlength=5)[:5].tolist()
    chunks: list[tuple[int, int, bytes]] = []
    nbytes = 0
    for ty in range(ny):
        for tx in range(nx):
            tile = np.ascontiguousarray(padded[None, :, ty * th:(ty + 1) * th, tx * tws:(tx + 1) * tws])
            if simulate and hasattr(enc.codec, "simulate"):
                if recon_stored is not None:
                    recon_stored[:, ty * th:(ty + 1) * th, tx * tws:(tx + 1) * tws] = enc.codec.simulate(tile)[0]
                nbytes = -1
                continue
            if tiled:
                cls = chunk_classes(tile_classes, ty * th, tx * tws, th, tws, h, w, T)  # type: ignore[arg-type]
                data = add_crc(tcodec.encode_classes(tile, cls))
            else:
                data = add_crc(enc.codec.encode(tile))
            chunks.append((ty, tx, data))
            nbytes += len(data) + 16
            if recon_stored is not None:
                dec = enc.codec.decode(strip_crc(data, "encode"), tile.shape, sdt)
                recon_stored[:, ty * th:(ty + 1) * th, tx * tws:(tx + 1) * tws] = dec[0]
    if params is not None and nbytes >= 0:
        nbytes += params.nbytes
    p = s = math.nan
    recon_t: torch.Tensor | None = None
    if want_recon:
        if q.is_lossless and not keep_recon:
            p, s = math.inf, 1.0
        else:
            from qpyr.codecs.quant import StoredType, unpack_nibbles

            src = (recon_stored if recon_stored is not None else padded)
            if spec.packed:
                t = unpack_nibbles(torch.from_numpy(np.ascontiguousarray(src)), nx * tw, signed=q.dtype is StoredType.INT4)
            else:
                t = torch.from_numpy(src.astype(np.int32) if src.dtype == np.uint16 else np.ascontiguousarray(src))
            t = t[:, :h, :w]
            pt = torch.from_numpy(params) if params is not None else None
            recon = q.dequantize(t, pt, value_scale=value_scale_for(source_dtype))
            if lossy and recon.shape != level.shape:  # defensive: never compare misaligned arrays
                raise CodecError(f"Expected the decoded level in shape {level.shape}. Got {tuple(recon.shape)}.")
            if tiled and coarser is not None:
                from qpyr.codecs.tiles import fill_pruned

                recon = fill_pruned(recon, coarser)
            recon_t = recon
            if q.is_lossless:
                p, s = math.inf, 1.0
            elif quality and not bool(torch.isnan(recon).any()):
                p, s = measure(recon, level, source_dtype, reference)
    out = EncodedLevel(enc, spec, h, w, chunks, params, nbytes, p, s)
    if keep_recon:
        out.recon = recon_t
    if tiled:
        out.tile_counts = counts
        out.tile_map = tile_classes
    return out
