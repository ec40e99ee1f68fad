"""The transform half of ``qpyr.dct``: padding, forward DCT and quantisation (numpy), and the
torch reconstruction (dequantisation + IDCT as one GEMM, chroma upsampling, YCbCr -> RGB) on
any device (spec/codecs/dct.md §4, §5; colour in spec/codecs/ycbcr420.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from qpyr.codecs import color
from qpyr.codecs.dct._jfif import _jfif_reconstruct
from qpyr.codecs.dct._payload import DctCoefficients, JfifStream
from qpyr.codecs.dct._tables import _MAXC
from qpyr.errors import CodecError

_RDO_T = 0.62  # |coef|/step below which a lone +-1 is zeroed (RDO)


def _dct_matrix() -> np.ndarray:
    n = np.arange(8)
    d = np.cos((2 * n[None, :] + 1) * n[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    return np.kron(d, d)  # [64 freq, 64 pixel]: coef = M @ block


_DCT64 = _dct_matrix()


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
        raise CodecError(f"pad_for_dct: target {height}x{width} is smaller than {h}x{w}")
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


def _plane_coefficients(arr: np.ndarray, tables: np.ndarray, sub: bool,
                        rdo: bool) -> tuple[list[np.ndarray], list[int]]:
    """``uint8 [C, H, W]`` -> quantised ``int16 [by, bx, 64]`` planes (natural order) and their
    context classes: edge-padded to whole blocks (macroblocks with ``sub``), YCbCr for three
    channels, chroma halved with ``sub``; plane tables ``tables[0]`` (luma) / ``tables[1]``."""
    c, h, w = arr.shape
    ycbcr = c == 3
    m = 16 if sub else 8
    hp, wp = -(-h // m) * m, -(-w // m) * m
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32)[None]
    x = torch.nn.functional.pad(x, (0, wp - w, 0, hp - h), mode="replicate") if (hp != h or wp != w) else x
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
        coefs.append(_forward_quantise(img, tables[ti], rdo))
    classes = [0 if (not ycbcr or i == 0) else 1 for i in range(len(coefs))]
    return coefs, classes


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
    """Same-shape planes sharing one table -> block-major ``float32 [P, by, bx, 8, 8]``:
    pixels - 128 + offset (:func:`_raster` views them as ``[P, 8by, 8bx]``)."""
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
    return torch.mm(q, _dequant_idct(table, offset, device)).view(npl, by, bx, 8, 8)


def _raster(blocks: torch.Tensor) -> torch.Tensor:
    """``[P, by, bx, 8, 8]`` block-major samples as a (strided) ``[P, 8by, 8bx]`` raster view."""
    npl, by, bx = blocks.shape[:3]
    return blocks.permute(0, 1, 3, 2, 4).reshape(npl, by * 8, bx * 8)


def _finish(blocks: torch.Tensor, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """Block-major samples ``[P, by, bx, 8, 8]`` -> ``[P, h, w]`` raster of ``dtype``, clamped to
    [0, 255]: one pass that de-blocks, clamps (and, for uint8, truncates the +0.5-shifted
    samples: the floor) straight into the output, no staging raster."""
    npl, by, bx = blocks.shape[:3]
    src = blocks.permute(0, 1, 3, 2, 4)  # [P, by, 8, bx, 8]: raster order, strided
    if dtype != torch.uint8:
        out = torch.empty((npl, by, 8, bx, 8), dtype=blocks.dtype, device=blocks.device)
        torch.clamp(src, 0.0, 255.0, out=out)
        return out.view(npl, by * 8, bx * 8)[:, :h, :w]
    blocks.clamp_(0.0, 255.0)  # contiguous, in place
    if blocks.device.type == "cpu":
        # numpy's float32 -> uint8 cast is vectorised (~2x torch's on CPU) and takes the
        # strided source: de-blocking and rounding are one pass
        u = np.empty((npl, by, 8, bx, 8), np.uint8)
        np.copyto(u, src.numpy(), casting="unsafe")
        r = u.reshape(npl, by * 8, bx * 8)
        return torch.from_numpy(r if (h, w) == r.shape[1:] else np.ascontiguousarray(r[:, :h, :w]))
    return src.to(torch.uint8).reshape(npl, by * 8, bx * 8)[:, :h, :w]


def _reconstruct_cpu(payload: DctCoefficients, u8: bool) -> np.ndarray:
    """The compiled CPU reconstruction (:mod:`qpyr._kernels.idct`, imported on first use):
    C-contiguous ``[C, H, W]``, ``uint8`` (``u8``) or unrounded ``float32``, in [0, 255]."""
    from qpyr._kernels import idct

    c, h, w = payload.shape
    out = np.empty((c, h, w), np.uint8 if u8 else np.float32)
    shift = np.float32(128.5 if u8 else 128.0)
    d = idct.basis()
    tabs = [np.ascontiguousarray(payload.tables[i], dtype=np.float32) for i in payload.plane_table]
    # Frequency-major planes (entropy="fast": views of [64, by, bx] arrays) go in as those
    # arrays, anything else as C-contiguous [by, bx, 64].
    planes = payload.planes
    fm = all(p.transpose(2, 0, 1).flags.c_contiguous and not p.flags.c_contiguous for p in planes)
    ps = [p.transpose(2, 0, 1) if fm else np.ascontiguousarray(p, dtype=np.int16) for p in planes]
    if fm and any(p.dtype != np.int16 for p in ps):
        ps = [p.astype(np.int16) for p in ps]
    if not payload.ycbcr:
        for i, p in enumerate(ps):
            idct.reconstruct_plane(p, fm, tabs[i], shift, d, out[i])
    elif payload.chroma420:
        idct.reconstruct_ycbcr420(ps[0], ps[1], ps[2], fm, tabs[0], tabs[1], shift, d, out)
    else:
        idct.reconstruct_ycbcr444(ps[0], ps[1], ps[2], fm, tabs[0], tabs[1], shift, d, out)
    return out


def reconstruct(
    payload: DctCoefficients | JfifStream, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Torch half of decoding: :class:`DctCoefficients` -> ``Tensor[C, H, W]`` in [0, 255].

    ``dtype=torch.float32`` gives unrounded samples; ``torch.uint8`` rounds half up
    (``floor(x + 0.5)``: the 0.5 is folded into the level shift) after clamping. A
    :class:`JfifStream` is decoded by a JPEG decoder instead (integer samples either way).
    """
    if dtype not in (torch.float32, torch.uint8):
        raise CodecError(f"dtype: expected torch.float32 or torch.uint8. Got {dtype}.")
    dev = torch.device(device)
    if isinstance(payload, JfifStream):
        return _jfif_reconstruct(payload, dev, dtype)
    if dev.type == "cpu":
        return torch.from_numpy(_reconstruct_cpu(payload, dtype == torch.uint8))
    return _reconstruct_torch(payload, dev, dtype)


def _reconstruct_torch(payload: DctCoefficients, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The torch reconstruction, any device (one GEMM per table, spec §5): what
    :func:`reconstruct` runs off the CPU; on the CPU, the compiled kernel's cross-check."""
    c, h, w = payload.shape
    shift = 128.5 if dtype == torch.uint8 else 128.0
    tabs, pt = payload.tables, payload.plane_table
    if not payload.ycbcr:
        return _finish(_idct(payload.planes, tabs[pt[0]], shift, dev), h, w, dtype)  # every plane uses table 0
    y = _idct(payload.planes[:1], tabs[pt[0]], shift, dev)
    ch = _idct(payload.planes[1:], tabs[pt[1]], 0.0, dev)
    _, by, bx = y.shape[:3]
    rgb = _CHROMA_RGB.to(dev)
    if not payload.chroma420:
        # 4:4:4: chroma and luma blocks line up, so the colour matrix runs on block-major
        # samples (it is per sample) and the raster is written once, by _finish. Per sample
        # the arithmetic is the raster path's (the chroma product, then + luma).
        out = torch.mm(rgb, ch.view(2, -1)).view(3, by, bx, 8, 8)
        out += y
        return _finish(out, h, w, dtype)
    hp, wp = by * 8, bx * 8
    # bilinear 2x == libjpeg fancy upsampling; measured faster on CPU than separable
    # slicing, conv_transpose or pixel-shuffle forms, and than upsampling 3 RGB
    # contributions after a low-resolution colour matrix.
    chr_ = color.upsample_420(_raster(ch)[None], hp, wp)[0]
    out = torch.mm(rgb, chr_.reshape(2, -1)).view(3, hp, wp)
    out += _raster(y)  # luma (carrying the +128 level shift) added to all three channels
    out = out[:, :h, :w].clamp_(0.0, 255.0)
    if dtype != torch.uint8:
        return out
    if out.device.type == "cpu":
        # numpy's float32 -> uint8 cast is vectorised (~4x torch's on CPU); both truncate,
        # which on samples clamped to [0, 255] (carrying the +0.5) is the same floor.
        return torch.from_numpy(out.numpy().astype(np.uint8))
    return out.to(dtype)
