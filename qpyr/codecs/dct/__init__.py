"""``qpyr.dct``: 8x8 block-DCT lossy image codec with context-modelled ANS entropy coding.

Encoded layout, algorithms and constants are specified in ``spec/codecs/dct.md`` (colour and
chroma resampling in ``spec/codecs/ycbcr420.md``). Decoding is split in two so that the two
halves can run in different places:

* :meth:`DctCodec.decode_coefficients` -- CPU: bytes -> :class:`DctCoefficients` (quantised
  int16 coefficients and quantisation tables); ``ctx`` streams of version 4 with the compiled
  rANS decoder (:mod:`qpyr._kernels.rans`), of versions 1 and 2 with ``constriction``;
* :meth:`DctCodec.reconstruct` -- torch, any device: dequantisation + IDCT + level shift as
  one ``[blocks, 65] @ [65, 64]`` GEMM, fancy chroma upsampling, YCbCr -> RGB as one small
  GEMM plus the luma add, crop, clamp (and ``uint8`` rounding half up).

Three entropy modes (``entropy=``): ``"ctx"`` (default; context-modelled rANS, smallest),
``"fast"`` (zstd over frequency-major int8 planes; larger, several times faster to decode) and
``"jfif"`` (the chunk body is a baseline JPEG stream -- ITU-T T.81 Huffman coding with the
codec's tables: larger than ``ctx``, decoded by libjpeg-turbo on CPU and by nvJPEG through
``torchvision.io.decode_jpeg`` on CUDA; 1- and 3-channel chunks only). Small ``ctx`` chunks may
use built-in default token models instead of a per-chunk model header.

The package holds one module per job: ``_codec`` (:class:`DctCodec`), ``_header`` (the chunk
header), ``_tables`` (quantisation tables, zigzag order), ``_transform`` (padding, forward DCT,
torch reconstruction), ``_payload`` (what entropy decoding gives), and per entropy mode
``_ctx`` (with ``_tokens``, ``_bitio``, ``_contexts``, ``_models``, ``_sections``, and
``_ctx_v2`` for streams of versions 1 and 2), ``_fast`` and ``_jfif``.
"""

from __future__ import annotations

# The private names below are the ones tests and tools/train_dct_models.py read from here.
from qpyr.codecs.dct._bitio import _BitReader as _BitReader
from qpyr.codecs.dct._bitio import _BitWriter as _BitWriter
from qpyr.codecs.dct._codec import DctCodec
from qpyr.codecs.dct._contexts import _NB_EDGES as _NB_EDGES
from qpyr.codecs.dct._contexts import _NCTX as _NCTX
from qpyr.codecs.dct._contexts import _ac_contexts as _ac_contexts
from qpyr.codecs.dct._contexts import _ac_contexts_lut as _ac_contexts_lut
from qpyr.codecs.dct._contexts import _ac_positions as _ac_positions
from qpyr.codecs.dct._contexts import _black_mask as _black_mask
from qpyr.codecs.dct._contexts import _eob_contexts_black as _eob_contexts_black
from qpyr.codecs.dct._contexts import _eob_contexts_white as _eob_contexts_white
from qpyr.codecs.dct._contexts import _neighbour_sum as _neighbour_sum
from qpyr.codecs.dct._contexts import _pad1 as _pad1
from qpyr.codecs.dct._ctx import _symbols as _symbols
from qpyr.codecs.dct._header import MAGIC, NAME, VERSION, VERSION_CTX, VERSION_JFIF, chunk_quality
from qpyr.codecs.dct._jfif import _STD_DHT as _STD_DHT
from qpyr.codecs.dct._jfif import _segments as _segments
from qpyr.codecs.dct._models import _histogram as _histogram
from qpyr.codecs.dct._models import _quantise_histogram as _quantise_histogram
from qpyr.codecs.dct._payload import DctCoefficients, JfifStream
from qpyr.codecs.dct._tables import ZIGZAG, ijg_tables
from qpyr.codecs.dct._tokens import _NT as _NT
from qpyr.codecs.dct._tokens import _read_fields as _read_fields
from qpyr.codecs.dct._transform import pad_for_dct, reconstruct

__all__ = ["DctCodec", "DctCoefficients", "JfifStream", "ijg_tables", "ZIGZAG", "pad_for_dct", "reconstruct",
           "chunk_quality", "NAME", "MAGIC", "VERSION", "VERSION_JFIF",
           "VERSION_CTX"]
