"""The manifest's ``plan``: what the policy decided, for ``qpyr info`` and for audits.

``plan`` (optional manifest field, format 1.1+; listed in ``optional`` so 1.0 readers ignore
it; spec/format.md §plan) is::

    {"policy": <spec>, "describe": {<the policy's parameters, thresholds and rules>},
     "levels": [{"level": l, "items": n, "stored_bytes": b,
                 "max_item_bytes": m,                     # largest item's bytes at this level
                 "tile_classes": [prune, int4, int8, fp16, fp32],   # qpyr.tiles levels only
                 "int8_bytes": b8}],                       # same levels as uniform uint8
     "max_item_bytes": M}                                  # largest item's total (budget check)

Stats are accumulated per task (:func:`accumulate`, into the task's receipt) and summed at
commit (:func:`merge`). Only policies with a ``describe()`` method record a plan.
"""

from __future__ import annotations

from typing import Any

from qpyr.errors import FormatError

__all__ = ["accumulate", "merge", "build_plan", "validate_plan"]


def accumulate(stats: dict[str, Any], encoded: list[Any]) -> None:
    """Add one item's encoded levels to a task's plan stats (JSON-ready, in place)."""
    lv = stats.setdefault("levels", [])
    total = 0
    for li, e in enumerate(encoded):
        while len(lv) <= li:
            lv.append({"level": len(lv), "items": 0, "stored_bytes": 0, "max_item_bytes": 0})
        d = lv[li]
        d["items"] += 1
        d["stored_bytes"] += int(e.nbytes)
        d["max_item_bytes"] = max(d["max_item_bytes"], int(e.nbytes))
        total += int(e.nbytes)
        if getattr(e, "tile_counts", None) is not None:
            tc = d.setdefault("tile_classes", [0, 0, 0, 0, 0])
            for k, n in enumerate(e.tile_counts):
                tc[k] += int(n)
        if getattr(e, "int8_bytes", None) is not None:
            d["int8_bytes"] = d.get("int8_bytes", 0) + int(e.int8_bytes)
    stats["max_item_bytes"] = max(int(stats.get("max_item_bytes", 0)), total)


def merge(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    """Sum of two plan stats (either may be None or empty)."""
    out: dict[str, Any] = {"levels": [], "max_item_bytes": 0}
    for s in (a or {}, b or {}):
        out["max_item_bytes"] = max(out["max_item_bytes"], int(s.get("max_item_bytes", 0)))
        for d in s.get("levels", []):
            li = int(d["level"])
            while len(out["levels"]) <= li:
                out["levels"].append({"level": len(out["levels"]), "items": 0, "stored_bytes": 0, "max_item_bytes": 0})
            o = out["levels"][li]
            o["items"] += int(d["items"])
            o["stored_bytes"] += int(d["stored_bytes"])
            o["max_item_bytes"] = max(o["max_item_bytes"], int(d["max_item_bytes"]))
            if "tile_classes" in d:
                tc = o.setdefault("tile_classes", [0, 0, 0, 0, 0])
                for k, n in enumerate(d["tile_classes"]):
                    tc[k] += int(n)
            if "int8_bytes" in d:
                o["int8_bytes"] = o.get("int8_bytes", 0) + int(d["int8_bytes"])
    return out


def build_plan(policy: Any, stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """The manifest ``plan`` of a policy with ``describe()`` (else None)."""
    describe = getattr(policy, "describe", None)
    if describe is None:
        return None
    s = merge(stats, None)
    return {"policy": policy.spec, "describe": describe(), "levels": s["levels"], "max_item_bytes": s["max_item_bytes"]}


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**62


def validate_plan(p: Any, where: str) -> None:
    """Check an untrusted manifest ``plan`` (types and ranges only; it drives no allocation)."""
    w = f"{where}.plan"
    if not isinstance(p, dict) or not isinstance(p.get("policy"), str) or not isinstance(p.get("describe"), dict):
        raise FormatError(f"{w}: expected an object with 'policy' (str) and 'describe' (object).")
    extra = set(p) - {"policy", "describe", "levels", "max_item_bytes"}
    if extra:
        raise FormatError(f"{w}: unknown field(s) {sorted(extra)}.")
    if not _count(p.get("max_item_bytes", 0)):
        raise FormatError(f"{w}.max_item_bytes: expected a count.")
    levels = p.get("levels", [])
    if not isinstance(levels, list) or len(levels) > 32:
        raise FormatError(f"{w}.levels: expected a list of at most 32 levels.")
    for i, d in enumerate(levels):
        lw = f"{w}.levels[{i}]"
        if not isinstance(d, dict) or set(d) - {"level", "items", "stored_bytes", "max_item_bytes", "tile_classes", "int8_bytes"}:
            raise FormatError(f"{lw}: expected an object of level stats.")
        if d.get("level") != i:
            raise FormatError(f"{lw}.level: expected {i}. Got {d.get('level')!r}.")
        for k in ("items", "stored_bytes", "max_item_bytes"):
            if not _count(d.get(k)):
                raise FormatError(f"{lw}.{k}: expected a count. Got {d.get(k)!r}.")
        if "int8_bytes" in d and not _count(d["int8_bytes"]):
            raise FormatError(f"{lw}.int8_bytes: expected a count.")
        tc = d.get("tile_classes")
        if tc is not None and not (isinstance(tc, list) and len(tc) == 5 and all(_count(x) for x in tc)):
            raise FormatError(f"{lw}.tile_classes: expected five counts (prune, int4, int8, fp16, fp32).")
