"""Project what a corpus costs as a qpyr store — bytes and dollars — from a packed sample.

The method (``spec/estimate.md`` states it in full):

1. **List.** Stream the sources with :func:`qpyr.inputs.discover`, count them (or stop at
   ``count``) and keep a seeded uniform reservoir of ``header_sample`` references
   (memory O(header_sample), not O(corpus)).
2. **Probe** (cheap). Read each reservoir image's header — channels, size, dtype — and its file
   size. This fixes the corpus's size distribution, pyramid shapes and bucket layout.
3. **Pack** (expensive). Pack ``sample`` of the probed images — one per stratum of file size, so
   small and large files are both represented — into a ``memory://`` store per policy, plus
   JPEG q90 files per level, recording stored bytes and quality per item and level.
4. **Project.** A regression estimator (stored bytes ~ pyramid samples + file bytes, fitted on
   the packed sample, applied to the probed covariates) gives the data bytes; a layout model
   (shards per bucket per pack task, shard indexes, metadata, catalog) adds the store's
   structural bytes; a seeded bootstrap gives the 90 % interval.
5. **Price.** The projected objects and usage go through :mod:`qpyr.estimate.cost`.

All byte figures are stored bytes including metadata (what a bucket bills).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qpyr.errors import InputError, InputNotFoundError, QpyrError
from qpyr.estimate.cost import Layout, ReadPattern, Usage, estimate_cost
from qpyr.estimate.prices import PriceTable, load_prices
from qpyr.inputs import DEFAULT_PIXEL_LIMIT, InputRef

__all__ = [
    "CONFIDENCE",
    "DEFAULT_PROVIDERS",
    "DEFAULT_SAMPLE",
    "BASELINES",
    "JPEG_POLICY",
    "CostEstimate",
    "EstimateInputError",
    "EstimateResult",
    "Interval",
    "LevelEstimate",
    "PolicyEstimate",
    "SampleInfo",
    "estimate",
    "estimate_store",
    "is_store",
]

#: Nominal coverage of the reported intervals.
CONFIDENCE = 0.90
#: Bootstrap replicates of the packed sample.
BOOTSTRAP = 1000
DEFAULT_SAMPLE = 200
#: Images whose header and file size are probed: ``max(HEADER_SAMPLE_MIN, HEADER_SAMPLE_FACTOR * sample)``.
HEADER_SAMPLE_MIN = 2000
HEADER_SAMPLE_FACTOR = 20
#: Packed images whose SSIM/PSNR are measured (measuring costs more than packing).
QUALITY_SAMPLE = 64
#: Storage classes priced when none are asked for (those present in the price table).
DEFAULT_PROVIDERS = (
    "aws-s3:standard",
    "aws-s3:standard-ia",
    "gcs:standard",
    "cloudflare-r2:standard",
    "backblaze-b2:standard",
)
#: qpyr policies always compared (fp32 pyramid, fp16 pyramid, lossless = uint8 for 8-bit photos).
BASELINES = ("fp32", "fp16", "lossless")
#: The JPEG baseline: one JPEG file per pyramid level, Pillow quality 90, optimize=True.
JPEG_POLICY = "jpeg-q90"
JPEG_QUALITY = 90
#: A SOURCE that is an existing local file with one of these suffixes, or any ``@FILE``,
#: is a file list: one path or URL per line; blank lines and ``#`` comments are skipped.
LIST_SUFFIXES = (".txt", ".lst")
_MAX_FAILURES_SHOWN = 5
_LABELS = {"fp32": "fp32 pyramid", "fp16": "fp16 pyramid", "lossless": "lossless (uint8 for 8-bit)",
           JPEG_POLICY: "JPEG q90 files/level"}


class EstimateInputError(QpyrError, ValueError):
    """An argument of :func:`estimate` / :func:`estimate_store` is invalid; ``parameter`` names it."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


# ============================================================================ results
@dataclass(frozen=True)
class Interval:
    """A projection: ``mean`` and the ``low`` .. ``high`` interval (90 % unless stated)."""

    mean: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}

    def scaled(self, factor: float) -> Interval:
        return Interval(self.mean * factor, self.low * factor, self.high * factor)


@dataclass(frozen=True)
class LevelEstimate:
    """One pyramid level of one policy, over the corpus.

    ``items``: corpus images that have this level; ``bytes_per_image``: mean stored data bytes of
    the level per image that has it; ``projected_bytes``: the level's data bytes over the corpus
    (shard indexes and metadata are counted in :attr:`PolicyEstimate.overhead_bytes`).
    ``ssim`` / ``psnr``: means over the packed sample (SSIM Wang 2004 RGB mean; PSNR over all
    channels, peak 255 for 8-bit) — ``psnr`` None with ``exact`` True means lossless.
    """

    level: int
    items: float
    bytes_per_image: float
    projected_bytes: float
    ssim: float | None
    psnr: float | None
    exact: bool

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "items": self.items, "bytes_per_image": self.bytes_per_image,
                "projected_bytes": self.projected_bytes, "ssim": self.ssim, "psnr": self.psnr,
                "exact": self.exact}


@dataclass(frozen=True)
class CostEstimate:
    """Dollars (USD) of one policy in one ``provider:class`` (see :class:`~qpyr.estimate.cost.CostBreakdown`).

    ``storage_per_month`` and ``total_over_months`` carry the byte interval through; the other
    figures are at the mean.
    """

    storage_class: str
    billable_bytes: float
    storage_per_month: Interval
    billed_months: float
    storage_total: float
    write_once: float
    read_requests_per_month: float
    read_bytes_per_month: float
    reads_per_month: float
    egress_per_month: float
    total_over_months: Interval

    def to_dict(self) -> dict[str, Any]:
        return {
            "storage_class": self.storage_class, "billable_bytes": self.billable_bytes,
            "storage_per_month": self.storage_per_month.to_dict(), "billed_months": self.billed_months,
            "storage_total": self.storage_total, "write_once": self.write_once,
            "read_requests_per_month": self.read_requests_per_month,
            "read_bytes_per_month": self.read_bytes_per_month, "reads_per_month": self.reads_per_month,
            "egress_per_month": self.egress_per_month, "total_over_months": self.total_over_months.to_dict(),
        }


@dataclass(frozen=True)
class PolicyEstimate:
    """Projection for one policy (or the JPEG baseline) over the whole corpus."""

    policy: str  # canonical policy spec, or "jpeg-q90"
    label: str
    kind: str  # "qpyr" | "jpeg"
    baseline: bool
    requested: bool
    bytes_per_image: Interval  # projected_bytes / readable images
    projected_bytes: Interval  # whole corpus, data + overhead
    data_bytes: float  # mean, sum of the levels' projected_bytes
    overhead_bytes: float  # shard indexes, array metadata, catalog, manifest
    objects: int
    levels: tuple[LevelEstimate, ...]
    ratio_vs_fp32: float | None  # fp32 pyramid bytes / these bytes
    ratio_vs_jpeg: float | None  # JPEG q90 bytes / these bytes
    costs: tuple[CostEstimate, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "label": self.label, "kind": self.kind, "baseline": self.baseline,
            "requested": self.requested, "bytes_per_image": self.bytes_per_image.to_dict(),
            "projected_bytes": self.projected_bytes.to_dict(), "data_bytes": self.data_bytes,
            "overhead_bytes": self.overhead_bytes, "objects": self.objects,
            "levels": [lv.to_dict() for lv in self.levels], "ratio_vs_fp32": self.ratio_vs_fp32,
            "ratio_vs_jpeg": self.ratio_vs_jpeg, "costs": [c.to_dict() for c in self.costs],
        }


@dataclass(frozen=True)
class SampleInfo:
    """How the sample was drawn and what failed (unreadable images are skipped and counted)."""

    seed: int
    requested: int
    probed: int  # headers read
    probe_failed: int
    packed: int
    load_failed: int
    failures: tuple[str, ...]  # the first few error messages
    stratified_by: str  # "file_bytes" | "pixels" | "none"
    bootstrap: int
    quality_measured: int  # packed images whose SSIM/PSNR were measured

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "requested": self.requested, "probed": self.probed,
                "probe_failed": self.probe_failed, "packed": self.packed, "load_failed": self.load_failed,
                "failures": list(self.failures), "stratified_by": self.stratified_by, "bootstrap": self.bootstrap,
                "quality_measured": self.quality_measured}


@dataclass(frozen=True)
class EstimateResult:
    """What :func:`estimate` / :func:`estimate_store` return; ``to_dict()`` is the ``--json`` document
    (``spec/schemas/estimate.schema.json``)."""

    mode: str  # "sample" | "store"
    sources: tuple[str, ...]
    items: int  # corpus images (listed, given by count, or in the store)
    items_from: str  # "listed" | "count" | "store"
    listed: int | None  # images the listing produced (None when not listed)
    readable_items: float  # items x (1 - unreadable fraction of the sample)
    confidence: float
    sample: SampleInfo | None
    months: float
    reads_per_month: float
    read_levels: tuple[int, ...] | None  # None: every level
    egress_fraction: float
    prices_origin: str
    prices_as_of: str
    policies: tuple[PolicyEstimate, ...]
    notes: tuple[str, ...]

    def policy(self, name: str) -> PolicyEstimate:
        """The estimate of policy ``name`` (a spec as given or canonical, or ``"jpeg-q90"``)."""
        for p in self.policies:
            if p.policy == name:
                return p
        try:
            from qpyr.policy import parse_policy

            canon = parse_policy(name).spec
        except QpyrError:
            canon = name
        for p in self.policies:
            if p.policy == canon:
                return p
        raise KeyError(f"No policy {name!r} in this estimate; have {[p.policy for p in self.policies]}.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "qpyr_estimate": "1.0",
            "mode": self.mode,
            "sources": list(self.sources),
            "corpus": {"items": self.items, "items_from": self.items_from, "listed": self.listed,
                       "readable_items": self.readable_items},
            "sample": self.sample.to_dict() if self.sample is not None else None,
            "confidence": self.confidence,
            "usage": {"months": self.months, "reads_per_month": self.reads_per_month,
                      "read_levels": list(self.read_levels) if self.read_levels is not None else None,
                      "egress_fraction": self.egress_fraction},
            "prices": {"origin": self.prices_origin, "as_of": self.prices_as_of, "currency": "USD"},
            "policies": [p.to_dict() for p in self.policies],
            "notes": list(self.notes),
        }


# ============================================================================ arguments
def _int_arg(name: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise EstimateInputError(name, f"expected an integer >= {lo}, got {value!r}")
    if value < lo:
        raise EstimateInputError(name, f"expected an integer >= {lo}, got {value!r}")
    return int(value)


def _float_arg(name: str, value: object, lo: float, hi: float | None = None, *, open_lo: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EstimateInputError(name, f"expected a number, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v) or (v <= lo if open_lo else v < lo) or (hi is not None and v > hi)
    if bad:
        rng = f"{'>' if open_lo else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
        raise EstimateInputError(name, f"expected a finite number {rng}, got {value!r}")
    return v


def _prices(prices: str | os.PathLike[str] | PriceTable | None) -> PriceTable:
    if isinstance(prices, PriceTable):
        return prices
    return load_prices(prices)


def _provider_keys(table: PriceTable, providers: Sequence[str] | None) -> list[str]:
    """``provider:class`` keys; a bare ``provider`` means all its classes, ``all`` every class."""
    if providers is None:
        keys = [k for k in DEFAULT_PROVIDERS if k in table.keys()]
        return keys or table.keys()
    if isinstance(providers, str):
        providers = [providers]
    out: list[str] = []
    for p in providers:
        p = str(p).strip().lower()
        if p == "all":
            found = table.keys()
        elif ":" not in p and any(pr.key == p for pr in table.providers):
            found = [c.key for pr in table.providers if pr.key == p for c in pr.classes]
        else:
            found = [table.get(p).key]  # raises listing the known names
        out += [k for k in found if k not in out]
    return out


def _read_levels(levels: Iterable[int] | int | None) -> tuple[int, ...] | None:
    if levels is None:
        return None
    if isinstance(levels, int):
        levels = [levels]
    return tuple(sorted({_int_arg("read_levels", lv, 0) for lv in levels}))


# ============================================================================ sources
def _read_list(spec: str, storage_options: dict[str, Any] | None) -> list[str]:
    path = spec[1:] if spec.startswith("@") else spec
    try:
        if "://" in path:
            import fsspec

            with fsspec.open(path, "rt", encoding="utf-8", **(storage_options or {})) as f:
                text = f.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputNotFoundError(f"Cannot read file list {path!r}: {e}.") from e
    lines = [ln.strip() for ln in text.splitlines()]
    out = [ln for ln in lines if ln and not ln.startswith("#")]
    if not out:
        raise InputNotFoundError(f"File list {path!r} names no images.")
    return out


def _expand_sources(sources: Any, storage_options: dict[str, Any] | None) -> list[Any]:
    if isinstance(sources, dict):
        sources = list(sources.items())
    elif isinstance(sources, (str, os.PathLike, np.ndarray)):
        sources = [sources]
    out: list[Any] = []
    for s in sources:
        if isinstance(s, os.PathLike):
            s = os.fspath(s)
        if isinstance(s, str) and (s.startswith("@") or (
                s.lower().endswith(LIST_SUFFIXES) and "://" not in s and os.path.isfile(s))):
            out += _read_list(s, storage_options)
        else:
            out.append(s)
    if not out:
        raise InputNotFoundError("No sources given: pass directories, globs, files, URLs or a file list.")
    return out


def _describe_source(s: Any) -> str:
    if isinstance(s, np.ndarray):
        return f"<array {list(s.shape)}>"
    if isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str):
        return f"<array {s[0]!r}>"
    return str(s)


def is_store(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``url`` (local path or fsspec URL) holds a committed qpyr store (a root ``zarr.json``
    whose attributes carry the qpyr manifest)."""
    if not isinstance(url, (str, os.PathLike)):
        return False
    url = os.fspath(url)
    if "://" not in url and not os.path.isdir(url):
        return False
    from qpyr.format import MANIFEST_KEY
    from qpyr.storage import ObjectStore

    try:
        ostore = ObjectStore(url, storage_options)
        if not ostore.exists("zarr.json"):
            return False
        doc = json.loads(ostore.read("zarr.json"))
    except (QpyrError, OSError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("attributes"), dict) and MANIFEST_KEY in doc["attributes"]


def _uniform(rng: random.Random) -> float:
    u = rng.random()
    while u == 0.0:
        u = rng.random()
    return u


def _reservoir(stream: Iterable[InputRef], k: int, rng: random.Random) -> tuple[int, list[tuple[int, InputRef]]]:
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


# ============================================================================ probe
@dataclass(frozen=True)
class _Geom:
    channels: int
    height: int
    width: int
    dtype: str
    file_bytes: float | None
    format: str = ""  # file format from the header ("PNG", "JPEG", "npy", "tiff", ...)


_MODE_CHANNELS = {"1": 1, "L": 1, "LA": 2, "PA": 4, "RGB": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 3,
                  "YCbCr": 3, "LAB": 3, "HSV": 3, "I": 1, "F": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "La": 2}


def _probe_bytes_head(f: Any, where: str, size: int | None, pixel_limit: int) -> _Geom:
    from PIL import Image

    head = f.read(32)
    f.seek(0)
    if head[:6] == b"\x93NUMPY":
        version = np.lib.format.read_magic(f)
        try:
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(f)
        except ValueError:  # e.g. format 3.0 (utf-8 header): load it
            f.seek(0)
            arr = np.load(io.BytesIO(f.read()), allow_pickle=False)
            shape, dtype = arr.shape, arr.dtype
        shape = tuple(shape)
        if len(shape) == 2:
            shape = shape + (1,)
        if len(shape) != 3:
            raise InputError(f"{where}: expected an H x W or H x W x C array. Got shape {shape}.")
        h, w, c = (int(x) for x in shape)
        dt = np.dtype(dtype)
        return _Geom(c, h, w, "uint8" if dt == np.bool_ else dt.name, size, "npy")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        try:
            import tifffile

            with tifffile.TiffFile(f) as tf:
                s = tf.series[0]
                shape, dt = tuple(int(x) for x in s.shape), np.dtype(s.dtype)
            if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
                shape = (shape[1], shape[2], shape[0])
            if len(shape) == 2:
                shape = shape + (1,)
            if len(shape) == 3:
                return _Geom(shape[2], shape[0], shape[1], dt.name, size, "tiff")
        except Exception:
            f.seek(0)  # let Pillow try
        f.seek(0)
    im = Image.open(f)
    w, h = im.size
    if w * h > pixel_limit:
        raise InputError(f"{where}: {h} x {w} pixels exceeds the limit of {pixel_limit}.")
    mode = im.mode
    c = _MODE_CHANNELS.get(mode) or len(im.getbands())
    if mode == "P":
        c = 4 if "transparency" in im.info else 3
    kind = {"I": "int32", "F": "float32", "I;16": "uint16", "I;16B": "uint16", "I;16L": "uint16"}.get(mode, "uint8")
    if im.format == "PNG" and len(head) > 25 and head[24] == 16 and mode in ("RGB", "RGBA", "I;16", "I"):
        kind = "uint16"
    return _Geom(c, h, w, kind, size, str(im.format or ""))


def _probe(ref: InputRef, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> _Geom:
    """Channels, size, dtype and file size of one input, from its header (no decode)."""
    src = ref.source
    if not isinstance(src, str):
        from qpyr.inputs import check_array

        a = check_array(np.asarray(src), f"array {ref.name!r}", pixel_limit=pixel_limit, nonfinite="replace")
        return _Geom(int(a.shape[0]), int(a.shape[1]), int(a.shape[2]), a.dtype.name, None)
    try:
        if "://" in src:
            import fsspec

            with fsspec.open(src, "rb", **dict(ref.storage_options)) as f:
                size = getattr(f, "size", None)
                return _probe_bytes_head(f, src, int(size) if size is not None else None, pixel_limit)
        size = os.path.getsize(src)
        if size == 0:
            raise InputError(f"{src}: empty file.")
        with open(src, "rb") as f:
            return _probe_bytes_head(f, src, size, pixel_limit)
    except InputError:
        raise
    except FileNotFoundError as e:
        raise InputNotFoundError(f"Input {src!r} does not exist.") from e
    except Exception as e:  # Pillow raises many types for bad headers
        raise InputError(f"{src}: not a readable image ({type(e).__name__}: {e}).") from e


# ============================================================================ sample packing
@contextlib.contextmanager
def _torch_single_thread() -> Iterator[None]:
    """Quality measurement runs many small torch ops; on a shared or busy machine torch's intra-op
    thread pool makes them 10-40x slower than one thread (measured on 2 cores). Restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class _Packed:
    """Per-item per-level measurements of one policy on the sample, plus the sample store's
    structure (for the layout model)."""

    spec: str
    y: np.ndarray  # [n, L] stored bytes (0: no such level)
    ssim: np.ndarray  # [n, L]
    psnr: np.ndarray  # [n, L]
    buckets: list[list[str]]  # per item, per level: bucket path
    manifest: dict[str, Any]
    sizes: dict[str, int]  # every object of the sample store


def _memory_url() -> str:
    return f"memory://qpyr-estimate-{uuid.uuid4().hex}"


def _drop_memory_store(url: str) -> None:
    """Delete an in-memory store. ``MemoryFileSystem.rm(recursive=True)`` re-lists the tree per
    entry (~1 s for one sample store); dropping the keys of its ``store`` dict is O(objects)."""
    import fsspec

    fs = fsspec.filesystem("memory")
    root = "/" + url.split("://", 1)[1].strip("/")
    store = getattr(fs, "store", None)
    dirs = getattr(fs, "pseudo_dirs", None)
    if isinstance(store, dict) and isinstance(dirs, list):
        for key in [k for k in store if k == root or k.startswith(root + "/")]:
            store.pop(key, None)
        dirs[:] = [d for d in dirs if not (d == root or d.startswith(root + "/"))]
        return
    with contextlib.suppress(FileNotFoundError):  # pragma: no cover - other fsspec versions
        fs.rm(root, recursive=True)


def _pack_sample(spec: str, arrays: list[np.ndarray], names: list[str], quality: Sequence[int],
                 tick: Callable[[], None]) -> _Packed:
    """Pack ``arrays`` ([C, H, W]) named ``names`` (unique) with policy ``spec`` into a fresh
    memory:// store and read back per-item bytes; quality (SSIM/PSNR) is measured on the items
    ``quality`` only, in a second small store, because measuring it costs more than packing.
    Both stores are deleted. The real names keep the catalog's size representative."""
    from qpyr.storage import ObjectStore
    from qpyr.store import open_store
    from qpyr.writer import PackOptions, run_pack

    pairs = [(nm, np.moveaxis(a, 0, -1)) for nm, a in zip(names, arrays, strict=True)]
    url, qurl = _memory_url(), _memory_url()
    single = len(quality) == len(pairs)  # small samples: one store, quality measured on all
    try:
        manifest = run_pack(pairs, url, PackOptions(policy=spec, measure_quality=single))
        sizes = ObjectStore(url).list_sizes()
        store = open_store(url)
        nlev = int(manifest["levels"])
        n = len(pairs)
        y = np.zeros((n, nlev))
        ss = np.full((n, nlev), np.nan)
        ps = np.full((n, nlev), np.nan)
        buckets: list[list[str]] = []
        for i in range(n):
            info = store.item_info(names[i])
            buckets.append([lv["bucket"] for lv in info["levels"]])
            for lv in info["levels"]:
                y[i, lv["level"]] = lv["stored_bytes"]
                if single:
                    ss[i, lv["level"]] = lv["ssim"]
                    ps[i, lv["level"]] = lv["psnr"]
            tick()
        if len(quality) and not single:
            run_pack([pairs[i] for i in quality], qurl, PackOptions(policy=spec))
            qstore = open_store(qurl)
            for i in quality:
                for lv in qstore.item_info(names[i])["levels"]:
                    ss[i, lv["level"]] = lv["ssim"]
                    ps[i, lv["level"]] = lv["psnr"]
    except QpyrError as e:
        raise QpyrError(f"packing the sample with policy {spec!r} failed: {e}") from e
    finally:
        _drop_memory_store(url)
        _drop_memory_store(qurl)
    return _Packed(spec, y, ss, ps, buckets, manifest, sizes)


def _to_8bit(lv: np.ndarray, src_dtype: np.dtype[Any], lo: float, hi: float) -> np.ndarray:
    if src_dtype == np.uint8 or src_dtype == np.bool_:
        a = lv * (255.0 if src_dtype == np.bool_ else 1.0)
    elif src_dtype == np.uint16:
        a = lv / 257.0
    else:
        a = (lv - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(lv)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _jpeg_sample(arrays: list[np.ndarray], quality: Sequence[int],
                 tick: Callable[[], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """JPEG q90 (Pillow, optimize=True, default 4:2:0) of every pyramid level of every array;
    SSIM/PSNR for the arrays numbered in ``quality`` (NaN for the others).

    Returns (bytes [n, L], ssim [n, L], psnr [n, L], converted) where ``converted`` counts items
    that are not 8-bit gray/RGB and were mapped to it (alpha/extra channels dropped, 16-bit
    divided by 257, other types scaled by their level-0 range).
    """
    import torch
    from PIL import Image

    from qpyr.metrics import psnr, ssim
    from qpyr.pyramid import DEFAULT_MIN_SIDE, build_pyramid

    per: list[list[tuple[int, float, float]]] = []
    converted = 0
    measure = set(quality)
    for ai, a in enumerate(arrays):
        src_dt = a.dtype
        c = a.shape[0]
        keep = [0] if c in (1, 2) else [0, 1, 2]
        if not (src_dt == np.uint8 and c in (1, 3)):
            converted += 1
        lo, hi = (float(a.min()), float(a.max())) if src_dt.kind in "fi" or src_dt.itemsize > 2 else (0.0, 0.0)
        row = []
        for lv in build_pyramid(a, None, min_side=DEFAULT_MIN_SIDE):
            u8 = _to_8bit(lv[keep].astype(np.float32), src_dt, lo, hi)
            hwc = u8[0] if len(keep) == 1 else np.moveaxis(u8, 0, -1)
            buf = io.BytesIO()
            Image.fromarray(hwc).save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
            if ai not in measure:
                row.append((buf.getbuffer().nbytes, math.nan, math.nan))
                continue
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
            dec = dec[None] if dec.ndim == 2 else np.moveaxis(dec, -1, 0)
            ref_t = torch.from_numpy(u8.astype(np.float32) / 255)
            dec_t = torch.from_numpy(dec.astype(np.float32) / 255)
            row.append((buf.getbuffer().nbytes, float(ssim(dec_t, ref_t)), float(psnr(dec_t, ref_t))))
        per.append(row)
        tick()
    nlev = max(len(r) for r in per)
    out = [np.zeros((len(per), nlev)), np.full((len(per), nlev), np.nan), np.full((len(per), nlev), np.nan)]
    for i, r in enumerate(per):
        for li, vals in enumerate(r):
            for k in range(3):
                out[k][i, li] = vals[k]
    return out[0], out[1], out[2], converted


# ============================================================================ covariates
def _level_shapes(h: int, w: int) -> list[tuple[int, int]]:
    from qpyr.pyramid import DEFAULT_MIN_SIDE, default_levels, level_shape

    return [level_shape(h, w, li) for li in range(default_levels(h, w, DEFAULT_MIN_SIDE))]


def _normalize_file_bytes(geoms: list[_Geom]) -> list[_Geom]:
    """File bytes rescaled per (file format, channels) to the group's mean samples per file byte
    over the probe, so that a JPEG and a PNG (or a gray and an RGB file) of equal complexity weigh
    the same: a corpus of mixed formats would otherwise confound format with content."""
    import dataclasses

    tot: dict[tuple[str, int], list[float]] = {}
    for g in geoms:
        t = tot.setdefault((g.format, g.channels), [0.0, 0.0])
        t[0] += g.channels * g.height * g.width
        t[1] += g.file_bytes or 0.0
    out = []
    for g in geoms:
        samples, nbytes = tot[(g.format, g.channels)]
        out.append(dataclasses.replace(g, file_bytes=(g.file_bytes or 0.0) * samples / nbytes) if nbytes > 0 else g)
    return out


def _covariates(geoms: Sequence[_Geom], nlev: int, use_file: bool) -> np.ndarray:
    """[items, levels, k] covariates: pyramid samples of the level and (``use_file``) the file's
    bytes apportioned to the level by its share of the pyramid's samples."""
    x = np.zeros((len(geoms), nlev, 2 if use_file else 1))
    for i, g in enumerate(geoms):
        s = np.array([g.channels * hh * ww for hh, ww in _level_shapes(g.height, g.width)], float)[:nlev]
        x[i, :len(s), 0] = s
        if use_file:
            x[i, :len(s), 1] = (g.file_bytes or 0) * s / s.sum()
    return x


def _fit(y: np.ndarray, x: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """Non-negative weighted least squares through the origin (k <= 2 covariates): the full fit if
    its coefficients are >= 0, else the better single-covariate fit."""
    sw = np.sqrt(wt)
    a = x * sw[:, None]
    b = y * sw
    if x.shape[1] > 1:
        coef = np.linalg.lstsq(a, b, rcond=None)[0]
        if (coef >= 0).all():
            return np.asarray(coef)
    best, best_rss = None, math.inf
    for j in range(x.shape[1]):
        den = float(a[:, j] @ a[:, j])
        if den <= 0:
            continue
        cj = max(float(a[:, j] @ b) / den, 0.0)
        rss = float(((b - cj * a[:, j]) ** 2).sum())
        if rss < best_rss:
            best_rss = rss
            best = np.zeros(x.shape[1])
            best[j] = cj
    return best if best is not None else np.zeros(x.shape[1])


def _t95(df: int) -> float:
    """Two-sided 90 % Student-t quantile (t_{0.95, df}); Cornish-Fisher above df 2 (< 0.5 % off)."""
    if df <= 1:
        return 6.313751514675043
    if df == 2:
        return 2.919985580353725
    z = 1.6448536269514722
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass
class _DataProjection:
    total: Interval  # data bytes over the corpus
    per_level: np.ndarray  # [L] mean data bytes per level over the corpus
    coef: np.ndarray  # bytes per covariate unit


def _project_data(y: np.ndarray, xs: np.ndarray, xp: np.ndarray, n_readable: float, seed_key: tuple[int, ...]) -> _DataProjection:
    """Two-phase regression estimator of the corpus's data bytes.

    ``y`` [n, L] bytes of the packed sample, ``xs`` [n, L, k] its covariates, ``xp`` [m, L, k]
    the probed sample's covariates (the packed sample is a subset), ``n_readable`` the corpus
    size. Estimate: N (ybar_s + b . (xbar_P - xbar_s)), b from a non-negative WLS fit (weights
    1/samples) over the (item, level) rows. Variance: bootstrap over packed items (refitting b)
    with the finite-population factor (1 - n/m) and a small-sample n/(n-k) correction, plus the
    probe phase's sampling variance b' S b / m (1 - m/N); interval = mean +- t_{0.95, n-k} sd.
    """
    n, m = y.shape[0], xp.shape[0]
    nlev = max(y.shape[1], xs.shape[1], xp.shape[1])  # probe and packed sample may differ in depth
    y = np.pad(y, ((0, 0), (0, nlev - y.shape[1])))
    xs = np.pad(xs, ((0, 0), (0, nlev - xs.shape[1]), (0, 0)))
    xp = np.pad(xp, ((0, 0), (0, nlev - xp.shape[1]), (0, 0)))
    present = xs[:, :, 0] > 0
    item_of = np.nonzero(present)[0]
    rows_y = y[present]
    rows_x = xs[present]
    rows_w = 1.0 / rows_x[:, 0]
    ybar_l = y.mean(axis=0)
    xs_l = xs.mean(axis=0)  # [L, k]
    xp_l = xp.mean(axis=0)
    coef = _fit(rows_y, rows_x, rows_w)
    per_level = np.maximum(n_readable * (ybar_l + (xp_l - xs_l) @ coef), 0.0)
    mean = float(n_readable * (ybar_l.sum() + (xp_l - xs_l).sum(axis=0) @ coef))

    y_item = y.sum(axis=1)
    xs_item = xs.sum(axis=1)  # [n, k]
    xp_item = xp.sum(axis=1)
    xp_bar = xp_item.mean(axis=0)
    var = 0.0
    if n < m and n > 1:
        rng = np.random.default_rng(list(seed_key))
        reps = np.empty(BOOTSTRAP)
        for r in range(BOOTSTRAP):
            cnt = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
            b = _fit(rows_y, rows_x, rows_w * cnt[item_of])
            reps[r] = n_readable * ((cnt @ y_item) / n + (xp_bar - (cnt @ xs_item) / n) @ b)
        used = int((coef > 0).sum()) or 1
        var += float(reps.var(ddof=1)) * (1 - n / m) * n / max(n - used, 1)
    if m < n_readable and m > 1:
        cov = np.atleast_2d(np.cov(xp_item, rowvar=False))
        var += float(coef @ cov @ coef) / m * (1 - m / n_readable) * n_readable**2
    used = int((coef > 0).sum()) or 1
    half = _t95(max(n - used, 1)) * math.sqrt(max(var, 0.0))
    return _DataProjection(Interval(mean, max(mean - half, 0.0), mean + half), per_level, coef)


# ============================================================================ layout model
@dataclass
class _Bucket:
    spec: Any  # BucketSpec
    pshape: tuple[int, ...] | None
    mass: float = 0.0  # probability that a corpus item lands here
    chunks: float = 0.0  # expected inner chunks per corpus item, from this bucket
    cells: int = 1  # shards per slot row (items wider/taller than a shard span several)
    data: float = 0.0  # expected data bytes per corpus item, from this bucket (prediction)


@dataclass
class _Layout:
    overhead: float  # structural bytes beyond the items' own bytes
    objects: int
    histogram: list[tuple[float, float]]  # (size, count) before scaling to the projected total
    level_requests: np.ndarray  # [L] GETs per full read of the level, beyond one per item
    level_extra_bytes: np.ndarray  # [L] index bytes read per full read of the level
    open_bytes: float  # root document + catalog read to open the store
    open_requests: float


def _exp_ceil_div(t: int, p: np.ndarray, k: np.ndarray) -> np.ndarray:
    """E[ceil(M / k)] for M ~ Binomial(t, p), elementwise over buckets."""
    if t <= 0:
        return np.zeros_like(p)
    mvals = np.arange(t + 1, dtype=float)
    lg = np.array([math.lgamma(t + 1) - math.lgamma(v + 1) - math.lgamma(t - v + 1) for v in range(t + 1)])
    pc = np.clip(p, 1e-300, 1 - 1e-16)[:, None]
    logpmf = lg[None, :] + mvals[None, :] * np.log(pc) + (t - mvals)[None, :] * np.log1p(-pc)
    pmf = np.exp(logpmf)
    out = (pmf * np.ceil(mvals[None, :] / k[:, None])).sum(axis=1)
    full = p >= 1
    out[full] = np.ceil(t / k[full])
    out[p <= 0] = 0.0
    return np.asarray(out)


@dataclass(frozen=True)
class _UnseenEncoding:
    """Stands for an encoding the corpus uses but the sample did not: its own buckets, with the
    storage type of a sampled one."""

    id: str
    quantizer: Any


def _encoding_mix(counts: dict[str, int], encs: dict[str, Any]) -> list[tuple[float, Any]]:
    """Encoding shares at one level from the sample's counts: seen encodings scaled by the
    Good-Turing coverage 1 - f1/n, plus Chao1's estimate of unseen ones sharing f1/n (encodings
    chosen per image, e.g. a DCT quality found by search, keep appearing as the corpus grows)."""
    n = sum(counts.values())
    singles = sorted(e for e, c in counts.items() if c == 1)
    f1, f2 = len(singles), sum(1 for c in counts.values() if c == 2)
    unseen = (n - 1) / n * (f1 * f1 / (2 * f2) if f2 else f1 * (f1 - 1) / 2) if f1 and n > 1 else 0.0
    cover = 1 - f1 / n if unseen > 0 else 1.0
    out: list[tuple[float, Any]] = [(cover * c / n, encs[e]) for e, c in sorted(counts.items())]
    k = int(math.ceil(unseen))
    for i in range(k):
        t = encs[singles[i % f1]]
        frac = min(1.0, unseen - i)
        out.append(((1 - cover) * frac / unseen, _UnseenEncoding(f"{t.id}~unseen{i}", t.quantizer)))
    return out


class _Planner:
    """Maps an image geometry to its per-level buckets under a policy, without pixels.

    Uses the policy's own plan on shape-only (broadcast) arrays. A policy whose choice depends on
    pixel content is detected (its plan disagrees with the packed sample) and handled by giving
    each probed image, per level, the encodings seen in the sample at that level, weighted by
    their frequency.
    """

    def __init__(self, spec: str, packed: _Packed, sample_geoms: Sequence[_Geom]):
        from qpyr.encoding import Encoding
        from qpyr.policy import parse_policy
        from qpyr.writer import DEFAULT_SLOTS_PER_TASK

        self.policy = parse_policy(spec)
        self.spt = DEFAULT_SLOTS_PER_TASK
        self._cache: dict[tuple[int, int, int, str], list[list[tuple[float, Any, Any, int, int, str]]]] = {}
        # Policies that search encodings on the pixels (they expose plan_encoded) are content
        # dependent by construction; for the others, check the shape-only plan on the sample.
        self.shape_only = not hasattr(self.policy, "plan_encoded")
        if self.shape_only:
            try:
                for g, actual in zip(sample_geoms, packed.buckets, strict=True):
                    if [opts[0][1].path for opts in self.plan(g)] != actual:
                        self.shape_only = False
                        break
            except Exception:  # a plan that needs pixels fails on shape-only arrays
                self.shape_only = False
        self._by_level: dict[int, list[tuple[float, Any]]] = {}
        if not self.shape_only:
            self._cache.clear()
            encs = {eid: Encoding.from_dict(e) for eid, e in packed.manifest["encodings"].items()}
            bdict = {b["path"]: b for b in packed.manifest["buckets"]}
            counts: dict[int, dict[str, int]] = {}
            for row in packed.buckets:
                for li, path in enumerate(row):
                    eid = bdict[path]["encoding"]
                    counts.setdefault(li, {}).setdefault(eid, 0)
                    counts[li][eid] += 1
            for li, cnt in counts.items():
                self._by_level[li] = _encoding_mix(cnt, encs)

    def plan(self, g: _Geom) -> list[list[tuple[float, Any, Any, int, int, str]]]:
        """Per level: [(weight, BucketSpec, param shape, chunks, shard cells, encoding id)]."""
        key = (g.channels, g.height, g.width, g.dtype)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        from qpyr.layout import BucketSpec, size_class

        shapes = _level_shapes(g.height, g.width)
        src = np.dtype(g.dtype)
        if self.shape_only:
            zero = np.zeros((), np.float32)
            encs = self.policy.plan([np.broadcast_to(zero, (g.channels, hh, ww)) for hh, ww in shapes], src)
            options = [[(1.0, e)] for e in encs]
        else:
            options = [self._by_level.get(li, self._by_level[max(self._by_level)]) for li in range(len(shapes))]
        out = []
        for li, ((hh, ww), opts) in enumerate(zip(shapes, options, strict=True)):
            row = []
            for wgt, enc in opts:
                q = enc.quantizer
                spec = BucketSpec(level=li, encoding_id=enc.id, channels=g.channels, height=size_class(hh),
                                  width=size_class(ww), packed=q.is_packed, dtype=q.storage_dtype(src).name,
                                  slots_per_task=self.spt)
                th, tw = spec.chunk_hw
                sh, sw = spec.shard_hw
                chunks = -(-hh // th) * -(-ww // tw)
                cells = -(-hh // sh) * -(-ww // sw)
                row.append((wgt, spec, q.param_shape(g.channels, spec.height, spec.width), chunks, cells, enc.id))
            out.append(row)
        self._cache[key] = out
        return out


def _storage_factors(planner: _Planner, geoms: Sequence[_Geom], nlev: int) -> np.ndarray:
    """[images, levels] bytes per stored sample of each level's planned encoding (4 fp32, 2 fp16,
    1 int8/uint8 source, 0.5 packed int4): scaling the covariates by it lets one regression
    serve a policy that mixes encodings across levels (``mixed``). 1 where the encoding depends
    on content."""
    out = np.ones((len(geoms), nlev))
    if not planner.shape_only:
        return out
    for i, g in enumerate(geoms):
        for li, row in enumerate(planner.plan(g)[:nlev]):
            spec = row[0][1]
            out[i, li] = np.dtype(spec.dtype).itemsize * (0.5 if spec.packed else 1.0)
    return out


@dataclass
class _StoreCalibration:
    """Structure of the packed sample store, per unit, for scaling to the corpus."""

    meta_per_bucket: float
    docs_per_bucket: float
    meta_per_level_encoding: float
    meta_per_level: float
    meta_fixed: float
    docs_fixed: int
    catalog_bytes: float
    catalog_objects: int
    root_bytes: float
    root_per_bucket: float
    buckets: int


def _calibrate(packed: _Packed, n_items: int) -> _StoreCalibration:
    from qpyr.format import MANIFEST_KEY, group_doc

    m = packed.manifest
    paths = [b["path"] for b in m["buckets"]]
    le = {f"levels/{b['level']}/{b['encoding']}/zarr.json" for b in m["buckets"]}
    lv = {f"levels/{b['level']}/zarr.json" for b in m["buckets"]}
    bucket_meta = 0
    bucket_docs = 0
    le_meta = lv_meta = fixed = 0
    fixed_docs = 0
    cat = cat_n = 0
    for key, size in packed.sizes.items():
        if key == "zarr.json":
            continue
        if key.endswith("zarr.json"):
            if key in le:
                le_meta += size
            elif key in lv:
                lv_meta += size
            elif any(key.startswith(p + "/") for p in paths):
                bucket_meta += size
                bucket_docs += 1
            else:
                fixed += size
                fixed_docs += 1
        elif key.startswith("catalog/"):
            cat += size
            cat_n += 1
    nb = max(len(paths), 1)
    with_b = len(group_doc({MANIFEST_KEY: m}))
    without_b = len(group_doc({MANIFEST_KEY: dict(m, buckets=[])}))
    return _StoreCalibration(
        meta_per_bucket=bucket_meta / nb, docs_per_bucket=bucket_docs / nb,
        meta_per_level_encoding=le_meta / max(len(le), 1), meta_per_level=lv_meta / max(len(lv), 1),
        meta_fixed=float(fixed), docs_fixed=fixed_docs, catalog_bytes=cat / max(n_items, 1) if n_items else 0.0,
        catalog_objects=cat_n, root_bytes=float(packed.sizes.get("zarr.json", with_b)),
        root_per_bucket=(with_b - without_b) / nb, buckets=len(paths),
    )


def _unseen_buckets(blist: list[_Bucket], m: int) -> list[_Bucket]:
    """Buckets the corpus fills but the probe did not see, per (level, encoding): Chao1 for how
    many (f1^2 / 2 f2, bias-corrected), Good-Turing for their share of items (f1 / m). Each is
    modelled on the probe's singleton buckets; the seen buckets give up that share. Without
    this, a probe of m images undercounts a varied corpus's buckets (and its shard indexes and
    metadata) by ~20 % at m = 300."""
    groups: dict[tuple[int, str], list[_Bucket]] = {}
    for b in blist:
        groups.setdefault((b.spec.level, b.spec.encoding_id), []).append(b)
    extra: list[_Bucket] = []
    for group in groups.values():
        counts = [b.mass * m for b in group]
        singles = [b for b, c in zip(group, counts, strict=True) if abs(c - 1) < 1e-6]
        f1 = len(singles)
        f2 = sum(1 for c in counts if abs(c - 2) < 1e-6)
        if f1 == 0 or m < 2:
            continue
        unseen = (m - 1) / m * (f1 * f1 / (2 * f2) if f2 else f1 * (f1 - 1) / 2)
        n_new = int(math.ceil(unseen))
        if n_new == 0:
            continue
        share = f1 / m * sum(b.mass for b in group)  # Good-Turing: unseen share of this group's items
        for b in group:
            f = 1 - f1 / m
            b.mass *= f
            b.chunks *= f
            b.data *= f
        per = share / unseen  # each unseen bucket's item share (the last one takes the fraction)
        for i in range(n_new):
            t = singles[i % f1]
            frac = min(1.0, unseen - i)
            scale = per * frac / (1 / m)  # relative to a singleton's share
            extra.append(_Bucket(t.spec, t.pshape, mass=t.mass / (1 - f1 / m) * scale, chunks=t.chunks / (1 - f1 / m) * scale,
                                 cells=t.cells, data=t.data / (1 - f1 / m) * scale))
    return extra


def _project_layout(planner: _Planner, geoms: Sequence[_Geom], pred: np.ndarray, n_readable: float,
                    cal: _StoreCalibration, nlev: int, *, exact_order: bool) -> _Layout:
    """Shards, objects and structural bytes of packing ``n_readable`` images distributed like
    ``geoms``, with ``pred`` [m, L] predicted data bytes per image-level.

    ``exact_order``: ``geoms`` *is* the corpus, in pack order — tasks are simulated exactly as the
    writer forms them. Otherwise the corpus order is taken as random with respect to size: each
    task's items per bucket are Binomial(task size, bucket share).
    """
    from qpyr.format import CATALOG_CHUNK_ROWS

    m = len(geoms)
    buckets: dict[str, _Bucket] = {}
    member: list[list[tuple[int, float]]] = []  # per image: (bucket number, weight)
    index_of: dict[str, int] = {}
    for j, g in enumerate(geoms):
        mine = []
        for li, row in enumerate(planner.plan(g)):
            for wgt, spec, pshape, n_chunks, n_cells, _eid in row:
                b = buckets.get(spec.path)
                if b is None:
                    b = buckets[spec.path] = _Bucket(spec, pshape)
                    index_of[spec.path] = len(index_of)
                b.mass += wgt / m
                b.chunks += wgt * n_chunks / m
                b.cells = max(b.cells, n_cells)
                b.data += wgt * (pred[j, li] if li < pred.shape[1] else 0.0) / m
                mine.append((index_of[spec.path], wgt))
        member.append(mine)
    blist = list(buckets.values())
    nr = max(int(round(n_readable)), 1)
    if not exact_order:
        blist += _unseen_buckets(blist, m)
    spt = planner.spt
    p = np.array([b.mass for b in blist])
    k = np.array([b.spec.items_per_shard for b in blist], float)
    if exact_order:
        rows = np.zeros(len(blist))
        for t0 in range(0, m, spt):
            cnt = np.zeros(len(blist))
            for mine in member[t0:t0 + spt]:
                for bi, wgt in mine:
                    cnt[bi] += wgt
            size = min(spt, m - t0)
            whole = np.abs(cnt - np.round(cnt)) < 1e-9
            rows[whole] += np.ceil(np.round(cnt[whole]) / k[whole])
            if not whole.all():  # fractional membership (content-dependent policies)
                part = ~whole
                rows[part] += _exp_ceil_div(size, cnt[part] / size, k[part])
        # P(bucket / (level, encoding) holds an image) = 1 - prod over images of (1 - membership).
        log_empty = np.zeros(len(blist))
        le_log: dict[tuple[int, str], float] = {}
        for mine in member:
            le_w: dict[tuple[int, str], float] = {}
            for bi, wgt in mine:
                log_empty[bi] += math.log1p(-wgt) if wgt < 1 - 1e-12 else -math.inf
                key = (blist[bi].spec.level, blist[bi].spec.encoding_id)
                le_w[key] = le_w.get(key, 0.0) + wgt
            for key, wgt in le_w.items():
                le_log[key] = le_log.get(key, 0.0) + (math.log1p(-wgt) if wgt < 1 - 1e-12 else -math.inf)
        nonempty = 1 - np.exp(log_empty)
    else:
        full, rest = divmod(nr, spt)
        rows = full * _exp_ceil_div(spt, p, k) + _exp_ceil_div(rest, p, k)
        nonempty = 1 - np.exp(nr * np.log1p(-np.clip(p, 0, 1 - 1e-16)))
    cells = np.array([b.cells for b in blist], float)
    shards = rows * cells
    n_inner = np.array([b.spec.n_inner for b in blist], float)
    index = shards * (16 * n_inner + 4)
    chunks = nr * np.array([b.chunks for b in blist])
    n_buckets = float(nonempty.sum())
    le_mass: dict[tuple[int, str], float] = {}
    lv_mass: dict[int, float] = {}
    for b in blist:
        key = (b.spec.level, b.spec.encoding_id)
        le_mass[key] = le_mass.get(key, 0.0) + b.mass
        lv_mass[b.spec.level] = lv_mass.get(b.spec.level, 0.0) + b.mass
    if exact_order:
        n_le, n_lv = float(sum(1 - math.exp(v) for v in le_log.values())), float(len(lv_mass))
    else:
        n_le = sum(1 - (1 - min(v, 1.0)) ** nr for v in le_mass.values())
        n_lv = sum(1 - (1 - min(v, 1.0)) ** nr for v in lv_mass.values())
    meta = (n_buckets * cal.meta_per_bucket + n_le * cal.meta_per_level_encoding
            + n_lv * cal.meta_per_level + cal.meta_fixed)
    root = cal.root_bytes + (n_buckets - cal.buckets) * cal.root_per_bucket
    catalog = cal.catalog_bytes * nr
    overhead = float(index.sum() - 16 * chunks.sum() + meta + root + catalog)

    hist: list[tuple[float, float]] = []
    has_q = np.array([b.pshape is not None for b in blist])
    for i, b in enumerate(blist):
        if shards[i] > 0:
            hist.append(((nr * b.data + index[i]) / shards[i], shards[i]))
        if has_q[i] and rows[i] > 0:
            praw = 4 * math.prod(b.pshape or ())
            hist.append((17 + praw * nr * b.mass / rows[i], rows[i]))
    docs = n_buckets * cal.docs_per_bucket + n_le + n_lv + cal.docs_fixed
    if docs > 0:
        hist.append((meta / docs, docs))
    cat_objects = cal.catalog_objects * max(1, math.ceil(nr / CATALOG_CHUNK_ROWS))
    if cat_objects:
        hist.append((catalog / cat_objects, float(cat_objects)))
    hist.append((root, 1.0))
    objects = int(round(sum(c for _, c in hist)))

    level_req = np.zeros(nlev)
    level_idx = np.zeros(nlev)
    for i, b in enumerate(blist):
        li = b.spec.level
        if li < nlev:
            level_req[li] += shards[i] + (rows[i] if has_q[i] else 0.0)
            level_idx[li] += index[i]
    return _Layout(overhead, objects, hist, level_req, level_idx, root + catalog, 1.0 + cat_objects)


def _integer_histogram(hist: Sequence[tuple[float, float]], total: float) -> Layout:
    """Round expected object counts to integers (largest remainder, preserving the total count)
    and scale sizes so that the layout holds exactly ``total`` bytes."""
    hist = [(s, c) for s, c in hist if c > 0]
    want = int(round(sum(c for _, c in hist)))
    floors = [int(math.floor(c)) for _, c in hist]
    order = sorted(range(len(hist)), key=lambda i: hist[i][1] - floors[i], reverse=True)
    for i in order[:max(want - sum(floors), 0)]:
        floors[i] += 1
    pairs = [(s, c) for (s, _), c in zip(hist, floors, strict=True) if c > 0]
    if not pairs:
        return Layout(total_bytes=0.0, objects=0)
    cur = math.fsum(s * c for s, c in pairs)
    f = total / cur if cur > 0 else 0.0
    return Layout.from_histogram([(s * f, c) for s, c in pairs])


# ============================================================================ costs
def _costs(table: PriceTable, keys: Sequence[str], layout: Layout, proj: Interval, months: float,
           reads_per_month: float, read_bytes: float, read_requests: float, egress_fraction: float) -> tuple[CostEstimate, ...]:
    patterns = (ReadPattern(bytes_per_read=read_bytes, requests_per_read=read_requests,
                            reads_per_month=reads_per_month),) if reads_per_month > 0 else ()
    usage = Usage(months=months, read_patterns=patterns, egress_fraction=egress_fraction)
    out = []
    for key in keys:
        sc = table.get(key)
        mid = estimate_cost(sc, layout, usage)
        ends = []
        for b in (proj.low, proj.high):
            f = b / proj.mean if proj.mean > 0 else 1.0
            lay = _scale_layout(layout, f)
            pat = (ReadPattern(read_bytes * f, read_requests, reads_per_month),) if patterns else ()
            ends.append(estimate_cost(sc, lay, Usage(months=months, read_patterns=pat, egress_fraction=egress_fraction)))
        lo, hi = ends
        out.append(CostEstimate(
            storage_class=mid.storage_class, billable_bytes=mid.billable_bytes,
            storage_per_month=Interval(mid.storage_per_month, lo.storage_per_month, hi.storage_per_month),
            billed_months=mid.billed_months, storage_total=mid.storage_total, write_once=mid.write_once,
            read_requests_per_month=mid.read_requests_per_month, read_bytes_per_month=mid.read_bytes_per_month,
            reads_per_month=mid.reads_per_month, egress_per_month=mid.egress_per_month,
            total_over_months=Interval(mid.total_over_months, lo.total_over_months, hi.total_over_months),
        ))
    return tuple(out)


def _scale_layout(layout: Layout, f: float) -> Layout:
    if layout.size_histogram is not None:
        return Layout.from_histogram([(s * f, c) for s, c in layout.size_histogram])
    if layout.object_sizes is not None:
        return Layout.from_sizes([s * f for s in layout.object_sizes])
    return Layout(total_bytes=layout.total_bytes * f, objects=layout.objects)


# ============================================================================ quality
def _level_quality(ss: np.ndarray, ps: np.ndarray, present: np.ndarray) -> list[tuple[float | None, float | None, bool]]:
    """Per level (mean SSIM, mean finite PSNR, exact) over the items whose quality was measured."""
    out = []
    for li in range(ss.shape[1]):
        m = present[:, li] & ~np.isnan(ps[:, li])
        s = ss[m, li]
        p = ps[m, li]
        s = s[np.isfinite(s)]
        exact = bool(m.any()) and bool(np.all(np.isposinf(p)))
        pf = p[np.isfinite(p)]
        out.append((float(s.mean()) if s.size else None, float(pf.mean()) if pf.size else None, exact))
    return out


# ============================================================================ estimate
def _policy_list(policies: Sequence[str] | str | None) -> list[tuple[str, bool, bool]]:
    """[(canonical spec, baseline, requested)]: baselines first, then the requested ones."""
    from qpyr.policy import DEFAULT_POLICY, parse_policy

    if isinstance(policies, str):
        policies = [policies]
    asked = list(policies) if policies is not None else ["mixed", DEFAULT_POLICY]
    canon_asked = []
    for p in asked:
        if not isinstance(p, str):
            raise EstimateInputError("policies", f"expected policy spec strings, got {p!r}")
        if p.strip().lower() in (JPEG_POLICY, "jpeg"):
            continue  # always included
        spec = parse_policy(p).spec
        if spec not in canon_asked:
            canon_asked.append(spec)
    out = [(parse_policy(b).spec, True, parse_policy(b).spec in canon_asked) for b in BASELINES]
    out += [(s, False, True) for s in canon_asked if s not in [o[0] for o in out]]
    return out


@dataclass
class _Proj:
    spec: str
    label: str
    kind: str
    baseline: bool
    requested: bool
    data: _DataProjection
    layout: _Layout | None  # qpyr policies
    ssim: np.ndarray
    psnr: np.ndarray
    present: np.ndarray
    jpeg_sizes: np.ndarray | None  # JPEG baseline: sampled file sizes

    @property
    def overhead(self) -> float:
        return self.layout.overhead if self.layout is not None else 0.0


def _policy_estimate(pr: _Proj, level_items: np.ndarray, n_readable: float, totals: dict[str, float],
                     levels_read: tuple[int, ...] | None, table: PriceTable, keys: Sequence[str], months: float,
                     reads_per_month: float, egress_fraction: float) -> PolicyEstimate:
    dp = pr.data
    ov = pr.overhead
    proj = Interval(dp.total.mean + ov, dp.total.low + ov, dp.total.high + ov)
    nl = max(len(dp.per_level), len(level_items))
    per_level = np.pad(dp.per_level, (0, nl - len(dp.per_level)))
    items_l = np.pad(level_items, (0, nl - len(level_items)))
    qual = _level_quality(pr.ssim, pr.psnr, pr.present)
    levels = []
    for li in range(nl):
        if items_l[li] <= 0:
            continue
        s_, p_, ex = qual[li] if li < len(qual) else (None, None, False)
        levels.append(LevelEstimate(li, float(items_l[li]), float(per_level[li] / items_l[li]),
                                    float(per_level[li]), s_, p_, ex))
    touched = [li for li in range(nl) if levels_read is None or li in levels_read]
    read_bytes = float(sum(per_level[li] for li in touched))
    read_requests = float(sum(items_l[li] for li in touched))
    if pr.layout is not None:
        lay = pr.layout
        layout = _integer_histogram(lay.histogram, proj.mean)
        read_bytes += sum(float(lay.level_extra_bytes[li]) for li in touched if li < len(lay.level_extra_bytes))
        read_bytes += lay.open_bytes
        read_requests += sum(float(lay.level_requests[li]) for li in touched if li < len(lay.level_requests))
        read_requests += lay.open_requests
    else:
        sizes = pr.jpeg_sizes if pr.jpeg_sizes is not None else np.zeros(0)
        nobj = float(items_l.sum())
        layout = _integer_histogram([(float(s), nobj / sizes.size) for s in sizes], proj.mean)
    costs = _costs(table, keys, layout, proj, months, reads_per_month, read_bytes, read_requests, egress_fraction)
    fp32 = totals.get("fp32")
    jpeg = totals.get(JPEG_POLICY)
    return PolicyEstimate(
        policy=pr.spec, label=pr.label, kind=pr.kind, baseline=pr.baseline, requested=pr.requested,
        bytes_per_image=proj.scaled(1 / n_readable), projected_bytes=proj, data_bytes=float(dp.total.mean),
        overhead_bytes=float(ov), objects=int(layout.objects), levels=tuple(levels),
        ratio_vs_fp32=fp32 / proj.mean if fp32 and proj.mean > 0 else None,
        ratio_vs_jpeg=jpeg / proj.mean if jpeg and proj.mean > 0 else None,
        costs=costs,
    )


def estimate(
    sources: Any,
    *,
    policies: Sequence[str] | str | None = None,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    count: int | None = None,
    providers: Sequence[str] | str | None = None,
    months: float = 12,
    reads_per_month: float = 0,
    read_levels: Iterable[int] | int | None = None,
    egress_fraction: float = 0,
    prices: str | os.PathLike[str] | PriceTable | None = None,
    storage_options: dict[str, Any] | None = None,
    header_sample: int | None = None,
    progress: bool = False,
) -> EstimateResult:
    """Project the stored bytes and dollars of packing ``sources`` under each policy.

    Args:
        sources: directories, globs, files, URLs / bucket prefixes, file lists (``@list.txt`` or an
            existing ``.txt``/``.lst`` file: one path or URL per line), arrays — as
            :func:`qpyr.pack` takes them.
        policies: policy specs to compare (default: ``mixed`` and the default policy). The
            baselines fp32, fp16, lossless and JPEG q90 per level are always included.
        sample: images to pack (seeded, stratified by file size).
        seed: seed of every random choice (reservoir, strata, bootstrap): same inputs and seed,
            same result.
        count: corpus size to project to, instead of the listed count (the listing still supplies
            the sample and stops after ``count`` entries).
        providers: ``provider:class`` keys (or a bare provider for all its classes, or ``"all"``);
            default :data:`DEFAULT_PROVIDERS`.
        months: how long the corpus is kept (> 0).
        reads_per_month: full reads of the corpus per month (training epochs), >= 0.
        read_levels: levels each read touches (default all).
        egress_fraction: share (0..1) of the bytes read that leave the provider.
        prices: price file path or :class:`PriceTable` (default: the shipped table).
        storage_options: fsspec options for URL sources.
        header_sample: images whose header and file size are probed (default
            ``max(2000, 20 * sample)``, capped by the corpus).
        progress: show a progress bar on stderr while packing the sample.

    Raises:
        InputNotFoundError: a source matches nothing or lists no images.
        InputError: every sampled image was unreadable.
        EstimateInputError: an argument is out of range.
        PriceTableError / UnknownStorageClassError: bad price file or storage class.
    """
    sample = _int_arg("sample", sample, 1)
    seed = _int_arg("seed", seed, 0)
    if count is not None:
        count = _int_arg("count", count, 1)
    months = _float_arg("months", months, 0.0, open_lo=True)
    reads_per_month = _float_arg("reads_per_month", reads_per_month, 0.0)
    egress_fraction = _float_arg("egress_fraction", egress_fraction, 0.0, 1.0)
    levels_read = _read_levels(read_levels)
    hs = max(HEADER_SAMPLE_MIN, HEADER_SAMPLE_FACTOR * sample) if header_sample is None else \
        _int_arg("header_sample", header_sample, 1)
    hs = max(hs, sample)
    table = _prices(prices)
    keys = _provider_keys(table, providers)
    plist = _policy_list(policies)

    expanded = _expand_sources(sources, storage_options)
    for s in expanded:
        if isinstance(s, str) and is_store(s, storage_options):
            raise EstimateInputError("sources", f"{s!r} is a qpyr store: estimate it alone with "
                                     "estimate_store() (CLI: qpyr estimate STORE).")
    from itertools import islice

    from qpyr.inputs import discover, load

    rng = random.Random(seed)
    stream: Iterable[InputRef] = discover(expanded, storage_options=storage_options)
    if count is not None:
        stream = islice(stream, count)
    listed, reservoir = _reservoir(stream, hs, rng)
    if listed == 0:
        raise InputNotFoundError("The sources hold no images.")
    n_total = count if count is not None else listed

    # -- probe ---------------------------------------------------------------------------
    failures: list[str] = []
    probed: list[tuple[InputRef, _Geom]] = []

    def probe_one(ref: InputRef) -> _Geom | str:
        try:
            return _probe(ref)
        except QpyrError as e:
            return str(e)

    refs = [r for _, r in reservoir]
    if any(isinstance(r.source, str) and "://" in r.source for r in refs):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as ex:
            got = list(ex.map(probe_one, refs))
    else:
        got = [probe_one(r) for r in refs]
    probe_failed = 0
    for r, g in zip(refs, got, strict=True):
        if isinstance(g, str):
            probe_failed += 1
            failures.append(g)
        else:
            probed.append((r, g))
    if not probed:
        raise InputError(f"All {len(refs)} sampled images are unreadable; first error: {failures[0]}")

    # -- stratified packed sample ----------------------------------------------------------
    m = len(probed)
    use_file = all(g.file_bytes for _, g in probed) and len({g.file_bytes for _, g in probed}) > 1
    geoms = _normalize_file_bytes([g for _, g in probed]) if use_file else [g for _, g in probed]
    strat_key = "file_bytes" if use_file else "pixels"
    keyval = [float(g.file_bytes or 0) if use_file else float(g.channels * g.height * g.width) for g in geoms]
    order = sorted(range(m), key=lambda j: (keyval[j], j))
    if sample >= m:
        chosen = list(range(m))
        strat_key = "none"
    else:
        edges = [round(i * m / sample) for i in range(sample + 1)]
        chosen = sorted(order[rng.randrange(edges[i], edges[i + 1])] for i in range(sample))
    arrays: list[np.ndarray] = []
    names: list[str] = []
    sample_geoms: list[_Geom] = []
    load_failed = 0
    for j in chosen:
        ref, g = probed[j][0], geoms[j]
        try:
            a = load(ref)
        except QpyrError as e:
            load_failed += 1
            failures.append(str(e))
            continue
        arrays.append(a)
        names.append(ref.name if ref.name not in names else f"{ref.name}#{len(names)}")
        sample_geoms.append(_Geom(int(a.shape[0]), int(a.shape[1]), int(a.shape[2]), a.dtype.name, g.file_bytes, g.format))
    if not arrays:
        raise InputError(f"All {len(chosen) + probe_failed} sampled images are unreadable; "
                         f"first error: {failures[0]}")
    n = len(arrays)
    unreadable = 1 - (m / len(refs)) * (n / len(chosen))
    n_readable = n_total * (1 - unreadable)
    if n < 3 and n < m:
        raise InputError(f"Only {n} sampled image(s) could be packed; an interval needs at least 3 "
                         f"(first error: {failures[0] if failures else 'none'}).")

    # -- pack ----------------------------------------------------------------------------
    qpolicies = [p for p, _, _ in plist]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n * (len(qpolicies) + 1), unit="img", desc="estimate: packing sample", leave=False)

    def tick() -> None:
        if bar is not None:
            bar.update(1)

    # quality on an evenly spaced subset of the (randomly ordered) packed sample
    qidx = sorted({int(i) for i in np.linspace(0, n - 1, min(n, QUALITY_SAMPLE)).round()})
    packed: dict[str, _Packed] = {}
    try:
        with _torch_single_thread():
            for spec in qpolicies:
                packed[spec] = _pack_sample(spec, arrays, names, qidx, tick)
            jb, js, jp, converted = _jpeg_sample(arrays, qidx, tick)
    finally:
        if bar is not None:
            bar.close()

    # -- project -------------------------------------------------------------------------
    nlev_p = max(len(_level_shapes(g.height, g.width)) for g in geoms)
    xs = _covariates(sample_geoms, nlev_p, use_file)
    xp = _covariates(geoms, nlev_p, use_file)
    level_items = n_readable * (xp[:, :, 0] > 0).mean(axis=0)
    # The probe saw every image of the corpus, in listing (= pack) order: simulate tasks exactly.
    exact = count is None and len(refs) == listed
    notes: list[str] = []
    projs: list[_Proj] = []
    for spec, base, req in plist:
        pk = packed[spec]
        planner = _Planner(spec, pk, sample_geoms)
        if not planner.shape_only:
            notes.append(f"policy {spec}: encodings depend on pixel content; the bucket layout of unsampled "
                         "images is modelled from the sample's encoding frequencies per level.")
        xs_p = xs * _storage_factors(planner, sample_geoms, xs.shape[1])[:, :, None]
        xp_p = xp * _storage_factors(planner, geoms, xp.shape[1])[:, :, None]
        dp = _project_data(pk.y, xs_p, xp_p, n_readable, (seed, zlib.crc32(spec.encode())))
        pred = np.einsum("mlk,k->ml", xp_p, dp.coef)
        lay = _project_layout(planner, geoms, pred, n_readable, _calibrate(pk, n), xp.shape[1], exact_order=exact)
        if len(qidx) < n:
            # The bytes store skipped quality measurement: its catalog's quality table held NaN,
            # which compresses away; a real pack stores two float32 per lossy image-level.
            qual = _level_quality(pk.ssim, pk.psnr, pk.y > 0)
            lay.overhead += 8.0 * sum(level_items[li] for li, q in enumerate(qual)
                                      if li < len(level_items) and not q[2])
        projs.append(_Proj(spec, _LABELS.get(spec, spec), "qpyr", base, req, dp, lay, pk.ssim, pk.psnr, pk.y > 0, None))
    dpj = _project_data(jb, xs, xp, n_readable, (seed, zlib.crc32(JPEG_POLICY.encode())))
    projs.append(_Proj(JPEG_POLICY, _LABELS[JPEG_POLICY], "jpeg", True, False, dpj, None, js, jp, jb > 0, jb[jb > 0]))
    if converted:
        notes.append(f"JPEG baseline: {converted} of {n} sampled images are not 8-bit gray/RGB and were mapped "
                     "to it (alpha/extra channels dropped, 16-bit / 257, other types scaled to their range).")
    totals = {pr.spec: pr.data.total.mean + pr.overhead for pr in projs}
    results = [_policy_estimate(pr, level_items, n_readable, totals, levels_read, table, keys, months,
                                reads_per_month, egress_fraction) for pr in projs]
    if probe_failed or load_failed:
        notes.append(f"{probe_failed + load_failed} sampled image(s) were unreadable and skipped; the projection "
                     f"assumes the same unreadable share ({unreadable:.2%}) of the corpus, which a real pack "
                     "would refuse until they are removed.")
    return EstimateResult(
        mode="sample",
        sources=tuple(_describe_source(s) for s in expanded),
        items=int(n_total), items_from="count" if count is not None else "listed", listed=int(listed),
        readable_items=float(n_readable), confidence=CONFIDENCE,
        sample=SampleInfo(seed=seed, requested=sample, probed=len(refs), probe_failed=probe_failed, packed=n,
                          load_failed=load_failed, failures=tuple(failures[:_MAX_FAILURES_SHOWN]),
                          stratified_by=strat_key, bootstrap=BOOTSTRAP if n < m else 0,
                          quality_measured=len(qidx)),
        months=months, reads_per_month=reads_per_month, read_levels=levels_read, egress_fraction=egress_fraction,
        prices_origin=table.origin, prices_as_of=table.as_of, policies=tuple(results), notes=tuple(notes),
    )


def estimate_store(
    url: str,
    *,
    providers: Sequence[str] | str | None = None,
    months: float = 12,
    reads_per_month: float = 0,
    read_levels: Iterable[int] | int | None = None,
    egress_fraction: float = 0,
    prices: str | os.PathLike[str] | PriceTable | None = None,
    storage_options: dict[str, Any] | None = None,
) -> EstimateResult:
    """Actual bytes and dollars of an existing store: its manifest's per-level bytes and quality,
    and the exact object sizes from a listing. The interval is the value itself."""
    months = _float_arg("months", months, 0.0, open_lo=True)
    reads_per_month = _float_arg("reads_per_month", reads_per_month, 0.0)
    egress_fraction = _float_arg("egress_fraction", egress_fraction, 0.0, 1.0)
    levels_read = _read_levels(read_levels)
    table = _prices(prices)
    keys = _provider_keys(table, providers)
    from qpyr.storage import ObjectStore
    from qpyr.store import open_store

    store = open_store(url, storage_options=storage_options)
    man = store.manifest
    sizes = ObjectStore(url, storage_options).list_sizes()
    sizes = {k: v for k, v in sizes.items() if not k.startswith(".qpyr/")}
    total = float(store.total_bytes)
    listed_total = float(sum(sizes.values()))
    notes = []
    if listed_total != total:
        notes.append(f"the listing holds {int(listed_total)} bytes, the manifest records {int(total)}; "
                     "dollars use the listing")
    n = len(store)
    summaries = man["level_summary"]
    levels = []
    for ls in summaries:
        exact = ls["ssim_mean"] == 1.0 and ls["psnr_mean"] is None and ls["items"] > 0
        psnr = ls["psnr_mean"] if ls["psnr_mean"] is not None and math.isfinite(ls["psnr_mean"]) else None
        levels.append(LevelEstimate(int(ls["level"]), float(ls["items"]),
                                    float(ls["stored_bytes"]) / ls["items"] if ls["items"] else 0.0,
                                    float(ls["stored_bytes"]), ls["ssim_mean"], psnr, bool(exact)))
    data = float(sum(lv.projected_bytes for lv in levels))
    touched = [lv for lv in levels if levels_read is None or lv.level in levels_read]
    shard_reqs = {lv.level: 0 for lv in levels}
    for key in sizes:
        if key.startswith("levels/") and ("/data/c/" in key or "/qparams/c/" in key):
            li = int(key.split("/")[1])
            shard_reqs[li] = shard_reqs.get(li, 0) + 1
    open_keys = [k for k in sizes if k == "zarr.json" or k.startswith("catalog/")]
    rb = sum(lv.projected_bytes for lv in touched) + sum(sizes[k] for k in open_keys)
    rq = sum(lv.items + shard_reqs.get(lv.level, 0) for lv in touched) + len(open_keys)
    layout = Layout.from_sizes([float(v) for v in sizes.values()])
    proj = Interval(listed_total, listed_total, listed_total)
    costs = _costs(table, keys, layout, proj, months, reads_per_month, rb, rq, egress_fraction)
    fp32_raw = float(sum(ls["fp32_bytes"] for ls in summaries))
    pe = PolicyEstimate(
        policy=str(man["policy"]), label=f"this store ({man['policy']})", kind="store", baseline=False,
        requested=True, bytes_per_image=proj.scaled(1 / n) if n else Interval(0.0, 0.0, 0.0),
        projected_bytes=proj, data_bytes=data, overhead_bytes=listed_total - data, objects=len(sizes),
        levels=tuple(levels), ratio_vs_fp32=fp32_raw / listed_total if listed_total else None,
        ratio_vs_jpeg=None, costs=costs,
    )
    notes.append("ratio_vs_fp32 is against the raw (uncompressed) fp32 pyramid recorded in the manifest; "
                 "no baselines are packed for an existing store")
    return EstimateResult(
        mode="store", sources=(str(url),), items=n, items_from="store", listed=None, readable_items=float(n),
        confidence=CONFIDENCE, sample=None, months=months, reads_per_month=reads_per_month,
        read_levels=levels_read, egress_fraction=egress_fraction, prices_origin=table.origin,
        prices_as_of=table.as_of, policies=(pe,), notes=tuple(notes),
    )
