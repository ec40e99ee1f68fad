"""Packing the sample: the real writer (:func:`qpyr.writer.run_pack`) run on the sampled
images in a throw-away ``memory://`` store per policy, read back as stored bytes per image and
level, plus SSIM/PSNR on a subset and the sample store's objects (for the layout model)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qpyr.errors import QpyrError

__all__ = ["Packed", "drop_memory_store", "level_quality", "memory_url", "pack_sample"]


@dataclass
class Packed:
    """Per-item per-level measurements of one policy on the sample, plus the sample store's
    structure (for the layout model)."""

    spec: str
    y: np.ndarray  # [n, L] stored bytes (0: no such level)
    ssim: np.ndarray  # [n, L]
    psnr: np.ndarray  # [n, L]
    buckets: list[list[str]]  # per item, per level: bucket path
    manifest: dict[str, Any]
    sizes: dict[str, int]  # every object of the sample store
    measured: bool  # the sample store's catalog holds measured quality (as a real pack's does)
    docs: dict[str, bytes] = field(default_factory=dict)  # every zarr.json of the sample store


def memory_url() -> str:
    """A fresh ``memory://`` URL for a sample store."""
    return f"memory://qpyr-estimate-{uuid.uuid4().hex}"


def drop_memory_store(url: str) -> None:
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


def pack_sample(spec: str, arrays: list[np.ndarray], names: list[str], quality: Sequence[int],
                tick: Callable[[], None], *, layout: int = 2, shard_bytes: int | None = None) -> Packed:
    """Pack ``arrays`` ([C, H, W]) named ``names`` (unique) with policy ``spec`` into a fresh
    memory:// store and read back per-item bytes; quality (SSIM/PSNR) is reported for the items
    ``quality`` only. For most policies measuring it costs more than packing, so it is measured
    in a second small store holding those items; a policy that searches encodings on the pixels
    (``plan_encoded``, e.g. ``quality:...``) measures every level while packing anyway, so its
    bytes store already has the figures. Both stores are deleted. The real names keep the
    catalog's size representative. ``layout`` / ``shard_bytes``: the format major and shard size
    written (as :class:`qpyr.write.PackOptions` takes them)."""
    from qpyr.io.storage import ObjectStore
    from qpyr.policies import parse_policy
    from qpyr.read.store import open_store
    from qpyr.write import PackOptions, run_pack

    pairs = [(nm, np.moveaxis(a, 0, -1)) for nm, a in zip(names, arrays, strict=True)]
    url, qurl = memory_url(), memory_url()
    # small samples: one store, quality measured on all; searching policies: measured anyway
    single = len(quality) == len(pairs) or hasattr(parse_policy(spec), "plan_encoded")
    wanted = set(quality)
    fmt_kw: dict[str, Any] = {"layout": layout}
    if shard_bytes is not None:
        fmt_kw["shard_bytes"] = shard_bytes
    try:
        manifest = run_pack(pairs, url, PackOptions(policy=spec, measure_quality=single, **fmt_kw))
        ostore = ObjectStore(url)
        sizes = ostore.list_sizes()
        dkeys = [k for k in sizes if k.endswith("zarr.json")] if layout >= 2 else []
        docs = dict(zip(dkeys, ostore.read_many(dkeys), strict=True))
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
                if single and i in wanted:
                    ss[i, lv["level"]] = lv["ssim"]
                    ps[i, lv["level"]] = lv["psnr"]
            tick()
        if len(quality) and not single:
            run_pack([pairs[i] for i in quality], qurl, PackOptions(policy=spec, **fmt_kw))
            qstore = open_store(qurl)
            for i in quality:
                for lv in qstore.item_info(names[i])["levels"]:
                    ss[i, lv["level"]] = lv["ssim"]
                    ps[i, lv["level"]] = lv["psnr"]
    except QpyrError as e:
        raise QpyrError(f"packing the sample with policy {spec!r} failed: {e}") from e
    finally:
        drop_memory_store(url)
        drop_memory_store(qurl)
    return Packed(spec, y, ss, ps, buckets, manifest, sizes, single, docs)


def level_quality(ss: np.ndarray, ps: np.ndarray, present: np.ndarray) -> list[tuple[float | None, float | None, bool]]:
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
