"""Pack options: everything a pack task needs besides its inputs (JSON-serializable, sent to workers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qpyr.errors import InputError, PolicyError
from qpyr.format import manifest as fmt
from qpyr.io.inputs import DEFAULT_PIXEL_LIMIT
from qpyr.io.pyramid import DEFAULT_MIN_SIDE, Filter, default_levels
from qpyr.policies import parse_floors, parse_policy, with_floors

__all__ = ["PackOptions", "DEFAULT_SLOTS_PER_TASK"]

#: Consecutive items per pack task (and slots each task owns in a bucket it writes).
DEFAULT_SLOTS_PER_TASK = 256


@dataclass(frozen=True)
class PackOptions:
    """Everything a task needs besides its inputs (JSON-serializable, sent to workers)."""

    policy: str
    levels: int | None = None
    filter: str = Filter.AREA.value
    min_side: int = DEFAULT_MIN_SIDE
    pixel_limit: int = DEFAULT_PIXEL_LIMIT
    nonfinite: str = "error"
    slots_per_task: int = DEFAULT_SLOTS_PER_TASK
    measure_quality: bool = True
    #: quality floors: "X" (every level) or "L:X" (level L), see policy.parse_floors
    min_ssim: tuple[str, ...] = ()
    min_psnr: tuple[str, ...] = ()
    #: ``(path, slots_per_task)`` of existing buckets (an append) created with another
    #: ``slots_per_task``: their geometry (items per shard, task slot ranges) is fixed
    bucket_slots: tuple[tuple[str, int], ...] = ()
    #: store sources deeper than 8 bits (uint16, int16, float, ...) with the ``lossless`` policy
    #: whatever ``policy`` says: what the default policy does (``qpyr.pack`` without
    #: ``policy=``, ``qpyr pack`` without ``--policy``), so it never drops bit depth silently
    deep_lossless: bool = False
    #: format major the pack writes: 2 (records in shards filled to ``shard_bytes``, the
    #: default) or 1 (padded slots in size-class buckets; appends to a 1.x store stay 1)
    layout: int = 2
    #: format 2.0: bytes of one shard of a level's record heap (16-64 MiB suits object stores)
    shard_bytes: int = fmt.SHARD_BYTES

    def make_policy(self) -> Any:
        """The policy with the floors applied."""
        return with_floors(parse_policy(self.policy), parse_floors(list(self.min_ssim) or None, list(self.min_psnr) or None))

    def policy_for(self, policy: Any, source_dtype: Any) -> Any:
        """The policy an item of ``source_dtype`` is packed with (see ``deep_lossless``)."""
        if self.deep_lossless and is_deep(source_dtype):
            return parse_policy("lossless")
        return policy

    def __post_init__(self) -> None:
        if self.levels is not None and not 1 <= self.levels <= 32:
            raise InputError(f"Expected levels in 1..32. Got {self.levels}.")
        if self.nonfinite not in ("error", "replace"):
            raise InputError(f"Expected nonfinite 'error' or 'replace'. Got {self.nonfinite!r}.")
        if not 1 <= self.slots_per_task <= 2**20:
            raise InputError(f"Expected slots_per_task in 1..{2**20}. Got {self.slots_per_task}.")
        if any(not 1 <= s <= 2**20 for _, s in self.bucket_slots):
            raise InputError(f"Expected bucket slots_per_task in 1..{2**20}. Got {self.bucket_slots}.")
        if self.layout not in (1, 2):
            raise InputError(f"Expected layout 1 or 2 (the format major to write). Got {self.layout!r}.")
        lo, hi = fmt.SHARD_BYTES_RANGE
        if not lo <= self.shard_bytes <= hi:
            raise InputError(f"Expected shard_bytes in {lo}..{hi} (16-64 MiB suits object stores). Got {self.shard_bytes}.")
        if self.pixel_limit < 1:
            raise InputError(f"Expected a positive pixel limit. Got {self.pixel_limit}.")
        Filter(self.filter)
        self.make_policy()  # validate the policy and floors early
        deepest = default_levels(fmt.LIMITS["max_side"], fmt.LIMITS["max_side"], self.min_side) - 1
        for key, li in self.floor_levels():
            if self.levels is not None and li >= self.levels:
                raise PolicyError(f"{key} names level {li}, but the pack has {self.levels} level(s) "
                                  f"(0..{self.levels - 1}); drop the floor or raise --levels.")
            if self.levels is None and li > deepest:
                raise PolicyError(f"{key} names level {li}, but no image can have it: with --min-side "
                                  f"{self.min_side} even a {fmt.LIMITS['max_side']:,}-px image has levels "
                                  f"0..{deepest}; drop the floor or lower --min-side.")

    def floor_levels(self) -> list[tuple[str, int]]:
        """``(flag, level)`` of every per-level quality floor, sorted."""
        floors = parse_floors(list(self.min_ssim) or None, list(self.min_psnr) or None)
        return sorted({(key, li) for key, fl in (("--min-ssim", floors.ssim), ("--min-psnr", floors.psnr))
                       for li, _ in fl if li >= 0})


def is_deep(source_dtype: Any) -> bool:
    """Whether a source dtype holds more than 8 bits per sample (8-bit ints and bool do not)."""
    import numpy as np

    dt = np.dtype(source_dtype)
    return not (dt.kind == "b" or (dt.kind in "iu" and dt.itemsize == 1))
