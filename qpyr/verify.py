"""``verify``: check every checksum, the manifest against the arrays, and item counts.

Streams shard by shard (memory is bounded by one shard), and names every problem by item,
level and chunk. ``decode=True`` additionally decodes every item's levels.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import QpyrError
from .shard import MISSING, index_nbytes, parse_index, strip_crc
from .store import Store

__all__ = ["VerifyReport", "verify"]


@dataclass
class VerifyReport:
    """Result of :func:`verify`: ``ok`` is True only when ``problems`` is empty."""

    items: int = 0
    shards: int = 0
    chunks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(store: Store, *, decode: bool = False, on_progress: Callable[[int], None] | None = None) -> VerifyReport:
    rep = VerifyReport(items=len(store))
    os_ = store._os
    m = store.manifest
    # owner of every (bucket, slot), and the tiles each item must have
    owners: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for li, tab in enumerate(store._levels):
        for i in np.nonzero(tab[:, 0] >= 0)[0]:
            bi, slot, h, w = (int(x) for x in tab[i, :4])
            if (bi, slot) in owners:
                j = owners[(bi, slot)][0]
                rep.problems.append(f"items {store._names[j]!r} and {store._names[i]!r} share slot {slot} of {m['buckets'][bi]['path']}")
            owners[(bi, slot)] = (int(i), li, h, w)
    for li in range(m["levels"]):
        n_level = int((store._levels[li][:, 0] >= 0).sum())
        expect = m["level_summary"][li]["items"] if li < len(m["level_summary"]) else None
        if expect != n_level:
            rep.problems.append(f"level {li}: manifest says {expect} items, catalog holds {n_level}")
    sizes = os_.list_sizes()
    total = sum(v for k, v in sizes.items() if not k.startswith(".qpyr/"))
    if total != store.total_bytes:
        rep.problems.append(f"store holds {total} bytes; manifest total_bytes says {store.total_bytes}")
    for bi, b in enumerate(store._buckets):
        spec = b.spec
        if f"{spec.path}/data/zarr.json" not in sizes:
            rep.problems.append(f"bucket {spec.path}: data/zarr.json is missing")
        else:
            try:
                doc = json.loads(os_.read(f"{spec.path}/data/zarr.json"))
                if doc.get("shape", [None])[0] != b.slots:
                    rep.problems.append(f"bucket {spec.path}: zarr.json shape {doc.get('shape')} disagrees with the manifest ({b.slots} slots)")
            except ValueError as e:
                rep.problems.append(f"bucket {spec.path}: data/zarr.json is malformed ({e})")
        k, ny, nx = spec.chunks_per_shard
        th, tw = spec.chunk_hw
        prefix = f"{spec.path}/data/c/"
        keys = sorted(key for key in sizes if key.startswith(prefix))
        seen_tiles: set[tuple[int, int, int]] = set()
        for key in keys:
            rep.shards += 1
            rel = key[len(f"{spec.path}/data/"):]
            try:
                _, srow, _, sgy, sgx = rel.split("/")
                srow_i, sgy_i, sgx_i = int(srow), int(sgy), int(sgx)
            except ValueError:
                rep.problems.append(f"{key}: unexpected object in a data array")
                continue
            data = os_.read(key)
            n = spec.n_inner
            try:
                idx = parse_index(data[-index_nbytes(n):], n, len(data), key)
            except QpyrError as e:
                rep.problems.append(f"{key}: {e} (items of slots {srow_i * k}..{srow_i * k + k - 1})")
                continue
            for inner in np.nonzero(idx[:, 0] != MISSING)[0]:
                off, nb = (int(x) for x in idx[inner])
                s_in, rem = divmod(int(inner), ny * nx)
                ty, tx = sgy_i * ny + rem // nx, sgx_i * nx + rem % nx
                slot = srow_i * k + s_in
                owner = owners.get((bi, slot))
                who = f"item {store._names[owner[0]]!r} level {owner[1]}" if owner else f"unowned slot {slot}"
                rep.chunks += 1
                try:
                    strip_crc(data[off:off + nb], "")
                except QpyrError:
                    rep.problems.append(f"{who}: chunk ({ty}, {tx}) in {key} fails its crc32c checksum")
                seen_tiles.add((slot, ty, tx))
            if on_progress:
                on_progress(1)
        for (obi, slot), (i, li, h, w) in owners.items():
            if obi != bi:
                continue
            for ty in range(-(-h // th)):
                for tx in range(-(-w // tw)):
                    if (slot, ty, tx) not in seen_tiles:
                        rep.problems.append(f"item {store._names[i]!r} level {li}: chunk ({ty}, {tx}) is missing")
    if decode:
        for i in range(len(store)):
            for li in range(store.item_levels(i)):
                try:
                    store.read(i, [li])
                except QpyrError as e:
                    rep.problems.append(f"item {store._names[i]!r} level {li}: does not decode ({e})")
    return rep

