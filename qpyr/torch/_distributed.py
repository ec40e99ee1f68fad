"""The process's rank and world size, from arguments or torch.distributed."""

from __future__ import annotations

import torch

from qpyr.errors import InputError


def dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the given values, else torch.distributed's when initialised, else ``(0, 1)``."""
    if rank is None or world_size is None:
        d = torch.distributed
        if d.is_available() and d.is_initialized():
            rank = d.get_rank() if rank is None else rank
            world_size = d.get_world_size() if world_size is None else world_size
    rank = 0 if rank is None else int(rank)
    world_size = 1 if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise InputError(f"Expected 0 <= rank < world_size. Got rank={rank}, world_size={world_size}.")
    return rank, world_size
