"""The writer: pack inputs into a store, one shard-owning task at a time, then commit.

Packing is split into *tasks* of up to ``slots_per_task`` consecutive items. A task
(:func:`pack_task`) is a pure function of its inputs and options: it loads its items, builds
their pyramids, lets the policy choose encodings, quantizes and encodes every chunk, and
writes whole shards — it owns a fixed, shard-aligned slot range in every bucket, so tasks never
touch the same object. It ends by writing a *receipt* (``.qpyr/receipts/task-N.json``) with the
catalog rows of its items. :func:`commit` turns receipts into the catalog and array metadata
and writes the root ``zarr.json`` with the manifest **last**: a store without it is incomplete,
and re-running the same pack skips tasks whose receipts exist.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import format as fmt
from ._version import FORMAT_VERSION, __version__
from .encode import EncodedLevel, encode_level
from .encoding import Encoding
from .errors import FormatError, InputError, InputNotFoundError, QpyrError, StoreExistsError
from .inputs import DEFAULT_PIXEL_LIMIT, InputRef, discover, load
from .layout import BucketSpec
from .policy import parse_floors, parse_policy, with_floors
from .pyramid import DEFAULT_MIN_SIDE, Filter, build_pyramid
from .quant import StoredType
from .shard import encode_shard
from .storage import ObjectStore

__all__ = ["PackOptions", "pack_task", "commit", "run_pack", "JOURNAL", "receipt_key"]

JOURNAL = ".qpyr/pack.json"
DEFAULT_SLOTS_PER_TASK = 256


def receipt_key(task: int) -> str:
    return f".qpyr/receipts/task-{task:08d}.json"


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

    def make_policy(self) -> Any:
        """The policy with the floors applied."""
        return with_floors(parse_policy(self.policy), parse_floors(list(self.min_ssim) or None, list(self.min_psnr) or None))

    def __post_init__(self) -> None:
        if self.levels is not None and not 1 <= self.levels <= 32:
            raise InputError(f"Expected levels in 1..32. Got {self.levels}.")
        if self.nonfinite not in ("error", "replace"):
            raise InputError(f"Expected nonfinite 'error' or 'replace'. Got {self.nonfinite!r}.")
        if not 1 <= self.slots_per_task <= 2**20:
            raise InputError(f"Expected slots_per_task in 1..{2**20}. Got {self.slots_per_task}.")
        if self.pixel_limit < 1:
            raise InputError(f"Expected a positive pixel limit. Got {self.pixel_limit}.")
        Filter(self.filter)
        self.make_policy()  # validate the policy and floors early


# ------------------------------------------------------------------------------ task
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
            data = fmt.encode_plain_chunk(self.params)
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
    objects, so a re-run after a crash overwrites them with identical bytes.
    """
    ostore = ObjectStore(url, storage_options)
    policy = options.make_policy()
    accs: dict[str, _BucketAcc] = {}
    encodings: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    for ref in refs:
        arr = load(ref, pixel_limit=options.pixel_limit, nonfinite=options.nonfinite)
        src_dt = arr.dtype
        levels = build_pyramid(arr, options.levels, filter=options.filter, min_side=options.min_side)
        if hasattr(policy, "plan_encoded"):
            encoded = policy.plan_encoded(levels, src_dt, slots_per_task=options.slots_per_task)
        else:
            encoded = [encode_level(lv, src_dt, enc, li=li, slots_per_task=options.slots_per_task,
                                    quality=options.measure_quality)
                       for li, (lv, enc) in enumerate(zip(levels, policy.plan(levels, src_dt)))]
        rec: dict[str, Any] = {"name": ref.name, "dtype": src_dt.name, "shape": list(arr.shape), "levels": []}
        for e in encoded:
            spec, enc = e.spec, e.encoding
            acc = accs.get(spec.path)
            if acc is None:
                pshape = enc.quantizer.param_shape(spec.channels, spec.height, spec.width)
                acc = accs[spec.path] = _BucketAcc(spec, enc, np.dtype(spec.dtype), pshape)
                encodings[enc.id] = enc.to_dict()
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
    receipt = {"task": task, "items": items, "buckets": buckets, "encodings": encodings, "objects": objects}
    ostore.write(receipt_key(task), json.dumps(receipt, allow_nan=False).encode())
    return receipt


# ------------------------------------------------------------------------------ commit
def _write_plain(ostore: ObjectStore, key: str, a: np.ndarray, chunk_rows: int, dims: list[str]) -> None:
    ostore.write(f"{key}/zarr.json", fmt.plain_array_doc(list(a.shape), [chunk_rows] + list(a.shape[1:]), a.dtype, dims))
    for k, data in fmt.encode_plain_chunks(a, chunk_rows).items():
        ostore.write(f"{key}/{k}", data)


def _load_previous_catalog(ostore: ObjectStore) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Catalog rows of an already committed store (for appends), as receipt-style items."""
    if not ostore.exists("zarr.json"):
        return None, []
    from .store import Store

    st = Store._open(ostore)
    items = []
    for i in range(len(st)):
        info = st.item_info(i)
        levels = []
        for lv in info["levels"]:
            levels.append({"bucket": lv["bucket"], "slot": lv["slot"], "h": lv["shape"][1], "w": lv["shape"][2],
                           "bytes": lv["stored_bytes"], "psnr": fmt.json_float(lv["psnr"]), "ssim": fmt.json_float(lv["ssim"]),
                           "decision": lv["decision"]})
        items.append({"name": info["name"], "dtype": info["dtype"], "shape": info["shape"], "levels": levels})
    return st.manifest, items


def commit(ostore: ObjectStore, options: PackOptions, task_range: range, *, previous: dict[str, Any] | None = None,
           previous_items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Gather receipts of ``task_range`` (after ``previous_items``), write catalog, metadata and,
    last, the root manifest. Returns the manifest."""
    items: list[dict[str, Any]] = list(previous_items or [])
    buckets: dict[str, dict[str, Any]] = {}
    encodings: dict[str, Any] = {}
    slots: dict[str, int] = {}
    if previous is not None:
        encodings.update(previous["encodings"])
        for b in previous["buckets"]:
            buckets[b["path"]] = {k: v for k, v in b.items() if k not in ("slots", "stored_bytes")}
            slots[b["path"]] = b["slots"]
    for t in task_range:
        try:
            r = json.loads(ostore.read(receipt_key(t)))
        except FileNotFoundError:
            raise FormatError(f"Cannot commit: task {t} has no receipt (it did not finish).") from None
        items.extend(r["items"])
        encodings.update(r["encodings"])
        for path, b in r["buckets"].items():
            buckets[path] = b
            spec = BucketSpec.from_dict(b)
            slots[path] = max(slots.get(path, 0), (t + 1) * spec.task_slots)
    names = [it["name"] for it in items]
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
        raise InputError(f"Duplicate item name {dup!r}; item names must be unique within a store.")
    bpaths = sorted(buckets)
    bindex = {p: i for i, p in enumerate(bpaths)}
    n = len(items)
    nlev = max((len(it["levels"]) for it in items), default=0)

    # catalog
    rows = fmt.CATALOG_CHUNK_ROWS
    name_bytes = [it["name"].encode("utf-8") for it in items]
    offsets = np.zeros(n + 1, np.uint64)
    offsets[1:] = np.cumsum([len(b) for b in name_bytes]) if n else []
    blob = np.frombuffer(b"".join(name_bytes), np.uint8)
    _write_plain(ostore, "catalog/names", blob, 2**20, ["byte"])
    _write_plain(ostore, "catalog/name_offsets", offsets, rows, ["item"])
    sources = np.zeros((n, 5), np.int64)
    for i, it in enumerate(items):
        sources[i] = [fmt.DTYPE_CODES.index(it["dtype"]), *it["shape"], len(it["levels"])]
    _write_plain(ostore, "catalog/sources", sources, rows, ["item", "field"])
    level_summary = []
    for li in range(nlev):
        tab = np.full((n, 6), -1, np.int64)
        qual = np.full((n, 2), np.nan, np.float32)
        for i, it in enumerate(items):
            if li < len(it["levels"]):
                lv = it["levels"][li]
                tab[i] = [bindex[lv["bucket"]], lv["slot"], lv["h"], lv["w"], lv["bytes"],
                          fmt.DECISIONS.index(lv.get("decision", "planned"))]
                qual[i] = [math.inf if lv["psnr"] is None and lv["ssim"] == 1.0 else (lv["psnr"] if lv["psnr"] is not None else math.nan),
                           lv["ssim"] if lv["ssim"] is not None else math.nan]
        _write_plain(ostore, f"catalog/level_{li}", tab, rows, ["item", "field"])
        _write_plain(ostore, f"catalog/quality_{li}", qual, rows, ["item", "metric"])

    # array metadata
    written_groups: set[str] = set()

    def group(path: str, attrs: dict[str, Any] | None = None) -> None:
        if path not in written_groups:
            ostore.write(f"{path}/zarr.json", fmt.group_doc(attrs))
            written_groups.add(path)

    group("catalog", {"qpyr": {"role": "catalog"}})
    group("levels")
    bucket_list = []
    for p in bpaths:
        b = buckets[p]
        spec = BucketSpec.from_dict(b)
        enc = Encoding.from_dict(encodings[spec.encoding_id])
        dt = np.dtype(b["dtype"])
        group(f"levels/{spec.level}")
        group(f"levels/{spec.level}/{spec.encoding_id}", {"qpyr": {"encoding": encodings[spec.encoding_id]}})
        group(p, {"qpyr": {"role": "bucket"}})
        attrs = {"qpyr": {"role": "data", "encoding": spec.encoding_id, "packed_int4": spec.packed}}
        ostore.write(f"{p}/data/zarr.json", fmt.bucket_data_doc(spec, slots[p], dt, enc.codec.zarr_chain(dt), attrs))
        if b.get("params_shape"):
            ps = list(b["params_shape"])
            dims = ["slot", "param"] + (["channel"] if len(ps) == 2 else ["channel", "by", "bx"])
            ostore.write(f"{p}/qparams/zarr.json", fmt.plain_array_doc(
                [slots[p]] + ps, [spec.items_per_shard] + ps, np.dtype(np.float32), dims,
                {"qpyr": {"role": "qparams", "params": ["scale", "zero_point"]}}))
        bucket_list.append(dict(b, slots=slots[p]))

    sizes = {k: v for k, v in ostore.list_sizes().items() if not k.startswith(".qpyr/") and k != "zarr.json"}
    for bd in bucket_list:
        pre = bd["path"] + "/"
        bd["stored_bytes"] = sum(v for k, v in sizes.items() if k.startswith(pre))
    for li in range(nlev):
        present = [it["levels"][li] for it in items if li < len(it["levels"])]
        shapes = [(it["shape"][0], lv["h"], lv["w"]) for it in items for j, lv in enumerate(it["levels"]) if j == li]
        ps = [lv["psnr"] for lv in present if lv["psnr"] is not None]
        ss = [lv["ssim"] for lv in present if lv["ssim"] is not None]
        pre = f"levels/{li}/"
        enc_count: dict[str, int] = {}
        decisions: dict[str, int] = {}
        for lv in present:
            eid = buckets[lv["bucket"]]["encoding"]
            enc_count[eid] = enc_count.get(eid, 0) + 1
            dk = lv.get("decision", "planned")
            decisions[dk] = decisions.get(dk, 0) + 1
        level_summary.append({
            "level": li,
            "items": len(present),
            "stored_bytes": sum(v for k, v in sizes.items() if k.startswith(pre)),
            "fp32_bytes": int(sum(c * h * w * 4 for c, h, w in shapes)),
            "uint8_bytes": int(sum(c * h * w for c, h, w in shapes)),
            "psnr_mean": float(np.mean(ps)) if ps else None,
            "psnr_min": float(np.min(ps)) if ps else None,
            "ssim_mean": float(np.mean(ss)) if ss else None,
            "ssim_min": float(np.min(ss)) if ss else None,
            "shape_min": [int(x) for x in np.min(shapes, axis=0)] if shapes else None,
            "shape_max": [int(x) for x in np.max(shapes, axis=0)] if shapes else None,
            "encodings": enc_count,
            "decisions": decisions,
        })
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "writer": f"qpyr {__version__}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "generation": (previous or {}).get("generation", 0) + 1,
        "items": n,
        "levels": nlev,
        "policy": options.make_policy().spec,
        "filter": options.filter,
        "tasks": task_range.stop,
        "slots_per_task": options.slots_per_task,
        "encodings": encodings,
        "buckets": bucket_list,
        "level_summary": level_summary,
        "catalog": {"chunk_rows": rows, "name_bytes": int(blob.size), "dtypes": fmt.DTYPE_CODES},
        "total_bytes": 0,
    }
    base = sum(sizes.values())
    doc = b""
    for _ in range(3):  # the root document counts itself; iterate to a fixed point
        manifest["total_bytes"] = base + len(doc)
        doc = fmt.group_doc({fmt.MANIFEST_KEY: manifest})
        if base + len(doc) == manifest["total_bytes"]:
            break
    ostore.write("zarr.json", doc)
    ostore.delete(".qpyr")
    return manifest


# ------------------------------------------------------------------------------ driver
def _fingerprint(options: PackOptions, refs: list[InputRef]) -> str:
    h = hashlib.sha256(json.dumps(asdict(options), sort_keys=True).encode())
    for r in refs:
        h.update(r.name.encode() + b"\0" + (r.source.encode() if isinstance(r.source, str) else
                                            hashlib.sha256(np.ascontiguousarray(r.source).tobytes()).digest()) + b"\0")
    return h.hexdigest()


def run_pack(
    inputs: Iterable[Any],
    url: str,
    options: PackOptions,
    *,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    append: bool = False,
    progress: bool = False,
    client: Any = None,
) -> dict[str, Any]:
    """Pack ``inputs`` into the store at ``url``; returns the committed manifest."""
    parse_policy(options.policy)  # fail fast on a bad policy, before touching storage
    ostore = ObjectStore(url, storage_options)
    refs = list(discover(inputs, storage_options=storage_options))
    if not refs:
        raise InputNotFoundError("No inputs given.")
    names: set[str] = set()
    for r in refs:
        if r.name in names:
            raise InputError(f"Duplicate item name {r.name!r} (from {r.source!r}); item names must be unique.")
        names.add(r.name)
    fp = _fingerprint(options, refs)
    committed = ostore.exists("zarr.json")
    journal = None
    if ostore.exists(JOURNAL):
        try:
            journal = json.loads(ostore.read(JOURNAL))
        except (ValueError, FileNotFoundError):
            journal = None
    previous, previous_items = None, []
    created_here = False
    if append:
        if journal is not None and journal.get("fingerprint") != fp:
            raise StoreExistsError(f"{url!r} holds an unfinished pack of other inputs; re-run that pack or pass --overwrite.")
        previous, previous_items = _load_previous_catalog(ostore)
        dup = names & {it["name"] for it in previous_items}
        if dup:
            raise InputError(f"Item name(s) already in {url!r}: {sorted(dup)[:5]}; rename the inputs.")
        first_task = previous["tasks"] if previous else 0
    else:
        if committed or (journal is not None and journal.get("fingerprint") != fp):
            if not overwrite:
                what = "a qpyr store" if committed else "an unfinished pack of other inputs"
                raise StoreExistsError(f"{url!r} already holds {what}; pass --overwrite (overwrite=True) to replace it.")
            ostore.clear()
            journal = None
        elif journal is None and ostore.list_sizes():
            if not overwrite:
                raise StoreExistsError(f"{url!r} exists and is not empty; pass --overwrite (overwrite=True) to replace it.")
            ostore.clear()
        first_task = 0
        created_here = journal is None
    if journal is None:
        journal = {"fingerprint": fp, "first_task": first_task, "format_version": FORMAT_VERSION}
        ostore.write(JOURNAL, json.dumps(journal).encode())
    first_task = int(journal["first_task"])
    spt = options.slots_per_task
    tasks = [refs[i:i + spt] for i in range(0, len(refs), spt)]
    task_ids = range(first_task, first_task + len(tasks))
    todo = [(t, chunk) for t, chunk in zip(task_ids, tasks) if not ostore.exists(receipt_key(t))]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(refs), unit="img", desc="packing", initial=len(refs) - sum(len(c) for _, c in todo))
    try:
        if client is not None:
            futures = client.map(pack_task, [url] * len(todo), [storage_options] * len(todo), [t for t, _ in todo],
                                 [c for _, c in todo], [options] * len(todo), pure=False)
            from distributed import as_completed

            for fut in as_completed(futures):
                r = fut.result()
                if bar is not None:
                    bar.update(len(r["items"]))
        else:
            for t, chunk in todo:
                pack_task(url, storage_options, t, chunk, options, on_item=(lambda _n: bar.update(1)) if bar else None)
        return commit(ostore, options, task_ids, previous=previous, previous_items=previous_items)
    except QpyrError:
        if created_here and not append:
            ostore.clear()  # a bad input: leave nothing half-written behind
        raise
    finally:
        if bar is not None:
            bar.close()


__all__ += ["DEFAULT_SLOTS_PER_TASK", "StoredType"]
