"""Quantization-aware training: :func:`fake_quantize`, the store round trip as a torch op.

The forward value is *bit-identical* to what packing a level with ``encoding`` and reading it
back gives (it runs the writer's own encode path, :func:`qpyr.policies.encode.encode_level` with
``keep_recon=True``: quantize, tile into chunks, encode, decode, dequantize); the backward pass
is the straight-through estimator (gradient 1 everywhere), so a model can be trained against
the artefacts it will see in deployment.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from qpyr.codecs.encoding import Encoding
from qpyr.errors import InputError

__all__ = ["fake_quantize", "round_trip"]


def round_trip(x: torch.Tensor, encoding: Encoding, *, level: int = 0) -> torch.Tensor:
    """What storing ``x`` ``[C, H, W]`` (float, normalized units) with ``encoding`` and decoding
    it gives, float32 on ``x``'s device. No gradient. Encodes on one thread, as pack tasks do
    (:func:`~qpyr.policies.threads.single_threaded`), so the values are the store's."""
    from qpyr.policies.encode import encode_level
    from qpyr.policies.threads import single_threaded

    if x.dim() != 3:
        raise InputError(f"Expected x of shape [C, H, W]. Got {tuple(x.shape)}.")
    a = x.detach().to("cpu", torch.float32).contiguous().numpy()
    if encoding.quantizer.is_lossless:
        return x.detach().to(torch.float32).clone()  # lossless: the stored values are the input's
    with single_threaded():
        e = encode_level(a, np.dtype(np.float32), encoding, li=level, slots_per_task=1, quality=False, keep_recon=True)
    if e.recon is None:  # pragma: no cover - keep_recon always sets it
        raise RuntimeError("internal: no reconstruction")
    return e.recon.to(device=x.device, dtype=torch.float32)


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, encoding: Encoding, level: int) -> torch.Tensor:  # type: ignore[override]
        if x.dim() == 3:
            return round_trip(x, encoding, level=level).to(x.dtype)
        return torch.stack([round_trip(xi, encoding, level=level) for xi in x]).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        return grad, None, None


def fake_quantize(x: torch.Tensor, encoding: Encoding | dict[str, Any], *, level: int = 0) -> torch.Tensor:
    """Simulate storing ``x`` with ``encoding``: differentiable (straight-through).

    Args:
        x: ``Tensor[C, H, W]`` or ``Tensor[N, C, H, W]``, float, in normalized units (values in
            [0, 1] for images from 8/16-bit sources: what ``Store.read`` returns). Each image is
            one stored item (its own per-level / per-channel / per-block parameters).
        encoding: an :class:`~qpyr.codecs.encoding.Encoding` (or its JSON dict), e.g. one of a store's
            ``manifest["encodings"]`` or a policy's ``plan(...)`` output. ``qpyr.tiles``
            encodings store every tile fp32 here (the class map is per item side information).
        level: the level index the encoding is applied at (chunking follows the writer's).

    Returns:
        Tensor like ``x``: forward values bit-identical to the reader's decode of the stored
        level (float32 maths, cast to ``x.dtype``); gradient w.r.t. ``x`` is the identity.
    """
    enc = encoding if isinstance(encoding, Encoding) else Encoding.from_dict(encoding)
    if x.dim() not in (3, 4):
        raise InputError(f"Expected x of shape [C, H, W] or [N, C, H, W]. Got {tuple(x.shape)}.")
    out: torch.Tensor = _FakeQuant.apply(x, enc, level)
    return out
