"""The ``jfif`` entropy mode of ``qpyr.dct``: the chunk body is a baseline JPEG stream
(spec/codecs/dct.md §6.6), written by libjpeg-turbo through Pillow, abbreviated and completed
here, decoded by libjpeg-turbo (simplejpeg) on CPU and nvJPEG (torchvision) on CUDA."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from qpyr.codecs.dct._header import NAME
from qpyr.codecs.dct._payload import JfifStream
from qpyr.codecs.dct._tables import ZIGZAG
from qpyr.errors import CodecError

_JFIF_MAX_SIDE = 65500  # libjpeg's JPEG_MAX_DIMENSION


def _jfif_check_shape(c: int, h: int, w: int) -> None:
    if c not in (1, 3):
        raise CodecError(f"entropy='jfif' codes 1- or 3-channel chunks (a JPEG stream). Got C={c}; "
                         "use entropy='ctx' or 'fast' for other channel counts.")
    if max(h, w) > _JFIF_MAX_SIDE:
        raise CodecError(f"entropy='jfif' codes chunks up to {_JFIF_MAX_SIDE} samples a side. Got {h}x{w}.")


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
    """libjpeg-turbo decode (through simplejpeg's TurboJPEG binding; ``tools/bench_decode.py``
    compares the CPU JPEG decoders): ``uint8 [H, W, C]``."""
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
