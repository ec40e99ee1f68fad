"""The pack task: the engine-agnostic, pure function that packs one task's items.

Packing is split into *tasks* of up to ``slots_per_task`` consecutive items. A task
(:func:`pack_task`) loads its items, builds their pyramids, lets the policy choose encodings,
quantizes and encodes every chunk, and writes whole shards — it owns a fixed, shard-aligned
slot range in every bucket, so tasks never touch the same object. It ends by writing a
*receipt* (:func:`~qpyr.write.journal.receipt_key`) with the catalog rows of its items.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from qpyr.codecs.encoding import Encoding
from qpyr.errors import FormatError, InputError
from qpyr.format import manifest as fmt
from qpyr.format import plan as plan_mod
from qpyr.format.documents import encode_plain_chunk
from qpyr.format.layout import BucketSpec
from qpyr.format.shard import encode_shard
from qpyr.io.inputs import InputRef, load
from qpyr.io.pyramid import build_pyramid
from qpyr.io.storage import ObjectStore
from qpyr.policies.encode import EncodedLevel, encode_level
from qpyr.policies.threads import single_threaded
from qpyr.write.journal import receipt_key
from qpyr.write.options import PackOptions
from qpyr.write.records import LevelHeap, record_of

__all__ = ["pack_task"]


class _BucketAcc:
    """Encoded chunks of a bucket's current shard row, written when the row is full."""

    def __init__(self, spec: BucketSpec, enc: Encoding, dtype: np.dtype[Any], pshape: tuple[int, ...] | None):
        self.spec = spec
        self.enc = enc
        self.dtype = dtype
        self.pshape = pshape
        self.count = 0
        self.shards: dict[str, dict[int, bytes]] = {}
        self.params: np.ndarray | None = None
        self.row = -1
        self.objects: dict[str, int] = {}

    def add(self, slot: int, e: EncodedLevel) -> None:
        b = self.spec
        k = b.items_per_shard
        self.row = slot // k
        for ty, tx, data in e.chunks:
            key, inner = b.chunk_location(slot, ty, tx)
            self.shards.setdefault(key, {})[inner] = data
        if self.pshape is not None and e.params is not None:
            if self.params is None:
                self.params = np.zeros((k,) + self.pshape, np.float32)
            sl = (slot % k, slice(None)) + tuple(slice(0, n) for n in e.params.shape[1:])
            self.params[sl] = e.params

    def shard_full(self, slot: int) -> bool:
        return slot % self.spec.items_per_shard == self.spec.items_per_shard - 1

    def flush(self, ostore: ObjectStore) -> None:
        b = self.spec
        for key, chunks in self.shards.items():
            data = encode_shard(chunks, b.n_inner)
            ostore.write(f"{b.path}/data/{key}", data)
            self.objects[f"{b.path}/data/{key}"] = len(data)
        if self.params is not None:
            key = f"{b.path}/qparams/c/{self.row}" + "/0" * len(self.pshape or ())
            data = encode_plain_chunk(self.params)
            ostore.write(key, data)
            self.objects[key] = len(data)
        self.shards = {}
        self.params = None


def pack_task(
    url: str,
    storage_options: dict[str, Any] | None,
    task: int,
    refs: list[InputRef],
    options: PackOptions,
    on_item: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Pack ``refs`` as task number ``task``; write its shards and receipt; return the receipt.

    Engine-agnostic and pure given its arguments: the same call always writes the same
    objects, so a re-run after a crash overwrites them with identical bytes. Task ``t`` owns
    slots ``[t * task_slots, (t + 1) * task_slots)`` of every bucket it writes (whole shard
    rows), so no two tasks ever write the same object. The receipt is written last, after
    every shard: a task without a receipt is re-run. Its numerics run on one thread
    (:func:`~qpyr.policies.threads.single_threaded`), so its bytes do not depend on the process.
    """
    with single_threaded():
        return _pack_task(url, storage_options, task, refs, options, on_item)


def _pack_task(url: str, storage_options: dict[str, Any] | None, task: int, refs: list[InputRef],
               options: PackOptions, on_item: Callable[[str], None] | None) -> dict[str, Any]:
    ostore = ObjectStore(url, storage_options)
    base_policy = options.make_policy()
    fixed = dict(options.bucket_slots)
    accs: dict[str, _BucketAcc] = {}
    heaps: dict[int, LevelHeap] = {}  # format 2.0: one record heap per level
    counts: dict[str, tuple[int, int]] = {}  # format 2.0: (records, bytes) per bucket
    rbuckets: dict[str, Any] = {}
    prev_levels: list[np.ndarray] | None = None
    plan_stats: dict[str, Any] = {}
    encodings: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    for ref in refs:
        arr = load(ref, pixel_limit=options.pixel_limit, nonfinite=options.nonfinite)
        src_dt = arr.dtype
        levels = build_pyramid(arr, options.levels, filter=options.filter, min_side=options.min_side)
        policy = options.policy_for(base_policy, src_dt)
        if hasattr(policy, "plan_encoded"):
            # side information: the previous item's levels (frame sequences)
            kw = {"previous": prev_levels} if getattr(policy, "uses_previous", False) else {}
            encoded = policy.plan_encoded(levels, src_dt, slots_per_task=options.slots_per_task, **kw)
        else:
            encoded = [encode_level(lv, src_dt, enc, li=li, slots_per_task=options.slots_per_task,
                                    quality=options.measure_quality)
                       for li, (lv, enc) in enumerate(zip(levels, policy.plan(levels, src_dt), strict=True))]
        rec: dict[str, Any] = {"name": ref.name, "dtype": src_dt.name, "shape": list(arr.shape), "levels": []}
        for li, e in enumerate(encoded):
            spec, enc = e.spec, e.encoding
            if spec.channels * spec.height * spec.width > fmt.LIMITS["max_slot_samples"] or \
                    max(spec.height, spec.width) > fmt.LIMITS["max_side"]:
                raise InputError(f"{ref.name!r}: a level of {spec.channels} x {spec.height} x {spec.width} samples "
                                 "exceeds what readers accept (format.LIMITS max_side / max_slot_samples).")
            if options.layout >= 2:
                rec["levels"].append(_place_record(heaps, ostore, task, li, e, options, encodings, rbuckets, counts))
                continue
            acc = accs.get(spec.path)
            if acc is None:
                if spec.path in fixed:  # an existing bucket of the store keeps its own geometry
                    spec = replace(spec, slots_per_task=fixed[spec.path])
                pshape = enc.quantizer.param_shape(spec.channels, spec.height, spec.width)
                acc = accs[spec.path] = _BucketAcc(spec, enc, np.dtype(spec.dtype), pshape)
                encodings[enc.id] = enc.to_dict()
            spec = acc.spec
            if acc.count >= spec.task_slots:  # never spill into the next task's slots
                raise FormatError(f"Task {task} has more items for {spec.path} than the {spec.task_slots} slots it "
                                  "owns there (slots_per_task larger than the bucket's).")
            slot = task * spec.task_slots + acc.count
            acc.count += 1
            acc.add(slot, e)
            if acc.shard_full(slot):
                acc.flush(ostore)
            rec["levels"].append({
                "bucket": spec.path, "slot": slot, "h": e.height, "w": e.width, "bytes": e.nbytes,
                "psnr": fmt.json_float(e.psnr), "ssim": fmt.json_float(e.ssim), "decision": e.decision,
            })
        items.append(rec)
        plan_mod.accumulate(plan_stats, encoded)
        prev_levels = levels
        if on_item is not None:
            on_item(ref.name)
    objects: dict[str, int] = {}
    buckets: dict[str, Any] = {}
    for path, acc in accs.items():
        acc.flush(ostore)
        objects.update(acc.objects)
        d = acc.spec.to_dict()
        d["params_shape"] = list(acc.pshape) if acc.pshape is not None else None
        buckets[path] = d
    records: dict[str, Any] = {}
    for li, h in sorted(heaps.items()):
        records[str(li)] = h.close()
        objects.update(h.objects)
    buckets.update(rbuckets)
    receipt = {"task": task, "items": items, "buckets": buckets, "encodings": encodings, "objects": objects,
               "plan_stats": plan_stats}
    if options.layout >= 2:
        receipt["records"] = records
        receipt["counts"] = counts
    ostore.write(receipt_key(task), json.dumps(receipt, allow_nan=False).encode())
    return receipt


def _place_record(heaps: dict[int, LevelHeap], ostore: ObjectStore, task: int, li: int, e: EncodedLevel,
                  options: PackOptions, encodings: dict[str, Any], buckets: dict[str, Any],
                  counts: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Format 2.0: append level ``li`` of an item to the task's record heap of that level, note
    its bucket (the record class: encoding, dtype, channels, size class); its receipt entry."""
    h = heaps.get(li)
    if h is None:
        h = heaps[li] = LevelHeap(ostore, li, task, options.shard_bytes, fmt.TASK_SHARDS)
    spec, enc = e.spec, e.encoding
    encodings[enc.id] = enc.to_dict()
    rc = spec.record_class  # 2.0: the geometry follows from each record's own h x w
    buckets.setdefault(rc["path"], rc)
    if e.params is not None and tuple(e.params.shape) != enc.quantizer.param_shape(spec.channels, e.height, e.width):
        raise FormatError(f"internal: parameters of shape {e.params.shape} for a {e.height}x{e.width} level")
    record = record_of(e)
    off = h.add(record)
    n, nbytes = counts.get(rc["path"], (0, 0))
    counts[rc["path"]] = (n + 1, nbytes + len(record))
    return {"bucket": rc["path"], "task": task, "offset": off, "h": e.height, "w": e.width, "bytes": len(record),
            "psnr": fmt.json_float(e.psnr), "ssim": fmt.json_float(e.ssim), "decision": e.decision}
