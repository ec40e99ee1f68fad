"""Optional abilities of chunk codecs that the reader uses, as runtime-checkable protocols.

A codec states an ability by having the methods (structural typing, as zarr-python's
``SupportsSyncCodec``); the reader asks with ``isinstance`` instead of probing attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["SplitDecoder", "BatchReconstructor", "split_codec"]


@runtime_checkable
class SplitDecoder(Protocol):
    """A decoder in two halves, so the arithmetic can run on the target device.

    ``decode_coefficients(data, shape)`` entropy-decodes one chunk on the CPU (bytes to any
    picklable payload; ``shape`` is the chunk's ``(C, H, W)``). ``reconstruct(payload, device,
    dtype)`` turns the payload into ``Tensor[C, H, W]`` of stored samples of ``dtype`` with torch
    ops on ``device``, rounded exactly as the codec's ``decode`` rounds, so both paths give
    identical samples.
    """

    def decode_coefficients(self, data: bytes, shape: Sequence[int]) -> Any: ...

    def reconstruct(self, payload: Any, device: str | torch.device, dtype: torch.dtype) -> torch.Tensor: ...


@runtime_checkable
class BatchReconstructor(Protocol):
    """A split decoder that may reconstruct many chunks in one call on ``device``.

    ``reconstruct_batch(payloads, device)`` returns one ``Tensor[C, H, W]`` per payload, or None
    where it cannot (the caller then reconstructs chunk by chunk).
    """

    def reconstruct_batch(self, payloads: Sequence[Any], device: str | torch.device) -> list[torch.Tensor] | None: ...


def split_codec(codec: Any) -> SplitDecoder | None:
    """The :class:`SplitDecoder` of chunk codec ``codec`` (the codec or its ``inner`` codec), or None."""
    for c in (codec, getattr(codec, "inner", None)):
        if isinstance(c, SplitDecoder):
            return c
    return None
