"""One bucket of a store as the reader sees it: its manifest entry and the read-path constants."""

from __future__ import annotations

from typing import Any

import numpy as np

from qpyr.codecs import BloscCodec, ZstdCodec
from qpyr.codecs.encoding import Encoding
from qpyr.format.layout import BucketSpec
from qpyr.format.shard import index_nbytes
from qpyr.read.payload import torch_dtype
from qpyr.read.protocols import SplitDecoder, split_codec

__all__ = ["Bucket"]

#: An encoded chunk is at most this many times its raw size (+ 64 KiB): zstd and blosc add
#: < 1 %, JPEG-LS on noise < 5x (the lossless codec's own output bound), DCT entropy coding < 2x.
_CHUNK_EXPANSION = 8


class Bucket:
    """A manifest bucket (``d``) with encoding ``enc``, and the constants a read derives from it
    once (the hot path must not re-derive them per call)."""

    def __init__(self, d: dict[str, Any], enc: Encoding):
        self.spec = BucketSpec.from_dict(d)
        self.slots = int(d["slots"])
        self.dtype = np.dtype(d["dtype"]).newbyteorder("<") if np.dtype(d["dtype"]).itemsize > 1 else np.dtype(d["dtype"])
        self.enc = enc
        ps = d.get("params_shape")
        self.params_shape: tuple[int, ...] | None = tuple(int(x) for x in ps) if ps else None
        self.stored_bytes = int(d.get("stored_bytes", 0))
        s = self.spec
        self.th, self.tw = s.chunk_hw
        self.tws = s.stored_chunk_w
        self.k, self.ny, self.nx = s.chunks_per_shard
        self.n_inner = self.k * self.ny * self.nx
        self.index_nbytes = index_nbytes(self.n_inner)
        # Largest byte range one chunk may claim (spec/scale.md §9), checked before it is
        # fetched: a hostile shard index must not make the reader allocate gigabytes.
        self.max_chunk_nbytes = _CHUNK_EXPANSION * s.channels * self.th * self.tws * self.dtype.itemsize + 2**16
        self.data_prefix = f"{s.path}/data/c/"
        self.chunk_shape = (1, s.channels, self.th, self.tws)
        self.torch_dtype = torch_dtype(self.dtype)
        self.dtype_name = self.dtype.name
        self.split: SplitDecoder | None = None if s.packed else split_codec(enc.codec)
        # codecs known to decode from any buffer (a memoryview into the fetched range)
        self.takes_buffer = isinstance(enc.codec, (ZstdCodec, BloscCodec))
        self.pruned = enc.codec.name == "qpyr.tiles"  # may decode NaN tiles, filled from the coarser level
        self._params_suffix = "/0" * len(self.params_shape or ())

    def params_key(self, slot: int) -> str:
        """Key of the parameter chunk holding ``slot`` (one chunk per shard row)."""
        return f"{self.spec.path}/qparams/c/{slot // self.k}{self._params_suffix}"
