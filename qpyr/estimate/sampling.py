"""Drawing the samples: a seeded uniform reservoir over the streamed listing, and the
stratified choice of the images to pack among the probed ones."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

from qpyr.io.inputs import InputRef

__all__ = ["reservoir", "stratified_choice"]


def _uniform(rng: random.Random) -> float:
    u = rng.random()
    while u == 0.0:
        u = rng.random()
    return u


def reservoir(stream: Iterable[InputRef], k: int, rng: random.Random) -> tuple[int, list[tuple[int, InputRef]]]:
    """Count ``stream`` and keep a uniform sample of ``k`` items (Li's algorithm L: O(k) memory,
    O(k log(N/k)) random draws). Returns (count, [(stream index, ref)] in stream order)."""
    res: list[tuple[int, InputRef]] = []
    w = min(math.exp(math.log(_uniform(rng)) / k), 1 - 1e-16)
    nxt = k - 1 + int(math.log(_uniform(rng)) / math.log1p(-w)) + 1
    count = 0
    for i, ref in enumerate(stream):
        count = i + 1
        if i < k:
            res.append((i, ref))
        elif i == nxt:
            res[rng.randrange(k)] = (i, ref)
            w = min(w * math.exp(math.log(_uniform(rng)) / k), 1 - 1e-16)
            nxt += int(math.log(_uniform(rng)) / math.log1p(-w)) + 1
    res.sort(key=lambda t: t[0])
    return count, res


def stratified_choice(keys: Sequence[float], n: int, rng: random.Random) -> list[int]:
    """Indices of ``n`` of the ``len(keys)`` items (``n`` < that), one drawn uniformly from each
    of ``n`` strata of (nearly) equal size after sorting by ``keys``: small and large items are
    all represented, and every item has the same inclusion probability. Sorted ascending."""
    m = len(keys)
    order = sorted(range(m), key=lambda j: (keys[j], j))
    edges = [round(i * m / n) for i in range(n + 1)]
    return sorted(order[rng.randrange(edges[i], edges[i + 1])] for i in range(n))
