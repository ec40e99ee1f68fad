"""Pruned tiles of ``qpyr.tiles`` levels: filled from the next coarser level, one mechanism.

A ``qpyr.tiles`` level (the ``saliency`` policy) may store some tiles as nothing at all; they
decode as NaN and take the next coarser level's values, upsampled bilinearly
(:func:`qpyr.codecs.tiles.fill_pruned`, as the writer measured them). A pruned payload carries
its coarser level's payload in :attr:`LevelPayload.coarser` (itself with its own coarser level
if it is pruned too), attached here by :func:`with_coarser`, so
:meth:`LevelPayload.decode` fills the tiles wherever it runs: in ``Store.read``, in a
DataLoader worker, or on the training device from a collated batch.

A region read fills from the whole level: the window is cut from the whole level read and
filled, so it holds the same values as the whole level does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from qpyr.read.payload import LevelPayload, decode_payloads, to_uint8
from qpyr.read.selection import Region

__all__ = ["PayloadSource", "with_coarser", "decode_levels", "decode_batch"]


class PayloadSource(Protocol):
    """What the fill needs of a store (:class:`qpyr.read.store.Store` is one)."""

    def item_levels(self, item: int | str) -> int: ...

    def fetch_batch(self, items: Sequence[int | str], level: int | str, *,
                    coefficients: bool = False) -> list[LevelPayload]: ...


def with_coarser(source: PayloadSource, items: Sequence[int], level: int, payloads: Sequence[LevelPayload], *,
                 coefficients: bool = True, known: Mapping[int, LevelPayload] | None = None) -> list[LevelPayload]:
    """``payloads`` (level ``level`` of ``items``) with the coarser levels their pruned tiles
    fill from attached: one batched fetch per coarser level, like the batch itself.

    ``known`` maps an item's position in ``items`` to a payload of its level ``level + 1``
    that is at hand already (it is used instead of a fetch). ``coefficients`` is passed to the
    fetch. Payloads without pruned tiles, and those of an item's coarsest level, are returned
    as they are.
    """
    known = known or {}
    need = [k for k, p in enumerate(payloads) if p.pruned and level + 1 < source.item_levels(items[k])]
    out = list(payloads)
    fetch = [k for k in need if k not in known]
    coarse = dict(known)
    if fetch:
        sub = [items[k] for k in fetch]
        got = with_coarser(source, sub, level + 1, source.fetch_batch(sub, level + 1, coefficients=coefficients),
                           coefficients=coefficients)
        coarse.update(zip(fetch, got, strict=True))
    for k in need:
        out[k] = dataclasses.replace(out[k], coarser=coarse[k])
    return out


def _whole(source: PayloadSource, i: int, level: int, dev: torch.device) -> torch.Tensor:
    """Item ``i``'s whole level ``level``, filled, float32 on ``dev``."""
    coefficients = dev.type != "cpu"
    p = with_coarser(source, [i], level, source.fetch_batch([i], level, coefficients=coefficients),
                     coefficients=coefficients)[0]
    return p.decode(dev, torch.float32)


def _fill_window(source: PayloadSource, i: int, level: int, p: LevelPayload, t: torch.Tensor,
                 dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Window ``t`` (payload ``p`` decoded) with its pruned samples filled: cut from the whole
    level where it holds any."""
    if not (p.pruned and level + 1 < source.item_levels(i) and t.is_floating_point() and bool(torch.isnan(t).any())):
        return to_uint8(t) if dtype == torch.uint8 and t.is_floating_point() else t
    y0, x0 = p.origin
    w = _whole(source, i, level, dev)[:, y0:y0 + t.shape[1], x0:x0 + t.shape[2]]
    return to_uint8(w) if dtype == torch.uint8 else w.to(dtype)


def _window_dtype(p: LevelPayload, dtype: torch.dtype) -> torch.dtype:
    """Pruned windows decode as float32 (their NaN mark the samples to fill) when uint8 is
    asked for; :func:`_fill_window` rounds them after the fill."""
    return torch.float32 if dtype == torch.uint8 and p.pruned else dtype


def decode_levels(source: PayloadSource, i: int, payloads: Mapping[int, LevelPayload], region: Region | None,
                  dev: torch.device, dtype: torch.dtype) -> dict[int, torch.Tensor]:
    """``{level: Tensor[C, h, w]}`` of item ``i``'s fetched ``payloads`` decoded on ``dev``,
    pruned tiles filled (a requested coarser level is the one filled from)."""
    if region is not None:
        return {li: _fill_window(source, i, li, p, p.decode(dev, _window_dtype(p, dtype)), dev, dtype)
                for li, p in payloads.items()}
    coefficients = dev.type != "cpu"
    done: dict[int, LevelPayload] = {}
    for li in sorted(payloads, reverse=True):  # coarsest first: a finer level fills from it
        known = {0: done[li + 1]} if li + 1 in done else None
        done[li] = with_coarser(source, [i], li, [payloads[li]], coefficients=coefficients, known=known)[0]
    return {li: done[li].decode(dev, dtype) for li in payloads}


def decode_batch(source: PayloadSource, items: Sequence[int], levels: Sequence[int], payloads: Sequence[LevelPayload],
                 region: Region | None, dev: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    """Payloads of level ``levels[k]`` of ``items[k]`` decoded on ``dev`` (equal-shaped ones
    together, see :func:`~qpyr.read.payload.decode_payloads`), pruned tiles filled."""
    if region is not None:
        pruned = dtype == torch.uint8 and any(p.pruned for p in payloads)
        outs = decode_payloads(payloads, dev, torch.float32 if pruned else dtype)
        return [_fill_window(source, i, li, p, t, dev, dtype)
                for i, li, p, t in zip(items, levels, payloads, outs, strict=True)]
    out = list(payloads)
    by_level: dict[int, list[int]] = {}
    for k, p in enumerate(payloads):
        if p.pruned:
            by_level.setdefault(levels[k], []).append(k)
    for li, ks in by_level.items():
        got = with_coarser(source, [items[k] for k in ks], li, [payloads[k] for k in ks], coefficients=dev.type != "cpu")
        for k, p in zip(ks, got, strict=True):
            out[k] = p
    return decode_payloads(out, dev, dtype)
