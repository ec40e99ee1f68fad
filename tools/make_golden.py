"""Write (or check) the golden vector stores of the qpyr format, ``spec/vectors/stores/``.

One small store per policy, packed from the same three tiny inputs (an 8x10 RGB uint8 image, a
5x7 grey uint16 image and a 6x6 float32 array, two levels each, two items per pack task so that
two tasks and two shard rows are exercised), and next to each store the arrays that
``Store.read(item, level)`` returns (float32 ``[C, h, w]``)::

    spec/vectors/stores/
        inputs/<item>.npy                  the source arrays ([H, W] or [H, W, C])
        <name>/vector.json                 how the store was packed (policy spec, levels, ...)
        <name>/store.qpyr/...              the committed store
        <name>/expected/<item>_l<level>.npy  decoded float32 arrays

Golden vectors are committed and never regenerated silently: a store written by an older qpyr
must keep opening and decoding to the same values. This tool therefore refuses to touch an
existing directory unless ``--force`` is given.

Usage::

    python tools/make_golden.py            # write the vectors (only if absent)
    python tools/make_golden.py --force    # rewrite them (review the diff!)
    python tools/make_golden.py --check    # re-pack into a temporary directory and compare

``--check`` compares the decoded arrays exactly, every store object byte for byte except the
root ``zarr.json`` (its manifest holds the ``created`` time), and the manifests without
``created`` and ``writer``. Exit status 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Any

import numpy as np

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "spec", "vectors", "stores")

#: name -> policy spec. Tiny images need small thresholds for ``mixed`` to use all three types.
POLICIES: dict[str, str] = {
    "lossless": "lossless",
    "lossless-zstd": "lossless:codec=zstd",
    "dct-420": "dct:quality=80,chroma=420",
    "dct-444": "dct:quality=90,chroma=444",
    "fp32": "fp32",
    "fp16": "fp16",
    "bf16": "bf16",
    "int8": "int8",
    "int8-channel": "int8:granularity=channel",
    "int8-block": "int8:granularity=block,block=4",
    "int4": "int4",
    "int4-sym-channel": "int4:scheme=symmetric,granularity=channel",
    "mixed": "mixed:fp16_min=8,int8_min=4",
}
LEVELS = 2
SLOTS_PER_TASK = 2
ITEMS = ("rgb8", "gray16", "float32")


def make_inputs() -> dict[str, np.ndarray]:
    """The three source arrays (deterministic; saved under ``inputs/`` and reused from there)."""
    rng = np.random.default_rng(20261122)
    y, x = np.mgrid[0:8, 0:10]
    rgb = np.stack([x * 28, y * 36, (x + y) * 15], axis=-1) + rng.integers(-12, 13, (8, 10, 3))
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    rgb[0, 0] = (0, 0, 0)
    rgb[7, 9] = (255, 255, 255)
    gray = np.linspace(0, 65535, 35).reshape(5, 7)
    gray = np.clip(gray + rng.integers(-900, 901, (5, 7)), 0, 65535).astype(np.uint16)
    gray[0, 0], gray[4, 6] = 0, 65535
    yy, xx = np.mgrid[0:6, 0:6]
    f32 = (np.sin(xx * 0.9) * 1.5 + yy * 0.4 - 0.75 + rng.normal(0, 0.1, (6, 6))).astype(np.float32)
    return {"rgb8": rgb, "gray16": gray, "float32": f32}


def load_inputs(out: str) -> dict[str, np.ndarray]:
    d = os.path.join(out, "inputs")
    if all(os.path.exists(os.path.join(d, f"{n}.npy")) for n in ITEMS):
        return {n: np.load(os.path.join(d, f"{n}.npy"), allow_pickle=False) for n in ITEMS}
    return make_inputs()


def pack_one(inputs: dict[str, np.ndarray], policy: str, path: str) -> Any:
    import qpyr

    return qpyr.pack(dict(inputs), path, policy=policy, levels=LEVELS, slots_per_task=SLOTS_PER_TASK, overwrite=True)


def decoded(store: Any) -> dict[str, np.ndarray]:
    out = {}
    for name in store.names:
        for lv, t in store.read(name).items():
            out[f"{name}_l{lv}"] = t.numpy()
    return out


def write_vectors(out: str, force: bool) -> int:
    names = ["inputs", *POLICIES]
    existing = [n for n in names if os.path.exists(os.path.join(out, n))]
    if existing and not force:
        print(f"make_golden: {out} already holds {existing}; golden vectors are never regenerated "
              "silently. Pass --force to rewrite them (and review the diff).", file=sys.stderr)
        return 1
    inputs = load_inputs(out)
    os.makedirs(os.path.join(out, "inputs"), exist_ok=True)
    for n, a in inputs.items():
        np.save(os.path.join(out, "inputs", f"{n}.npy"), a, allow_pickle=False)
    for name, policy in POLICIES.items():
        d = os.path.join(out, name)
        if os.path.exists(d):
            shutil.rmtree(d)
        os.makedirs(os.path.join(d, "expected"))
        store = pack_one(inputs, policy, os.path.join(d, "store.qpyr"))
        for key, arr in decoded(store).items():
            np.save(os.path.join(d, "expected", f"{key}.npy"), arr, allow_pickle=False)
        meta = {"policy": policy, "levels": LEVELS, "slots_per_task": SLOTS_PER_TASK, "items": list(ITEMS),
                "format_version": store.manifest["format_version"],
                "encodings": {eid: e for eid, e in store.manifest["encodings"].items()}}
        with open(os.path.join(d, "vector.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
        print(f"wrote {d} ({store.total_bytes} B)")
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    print(f"total {total} bytes under {out}")
    return 0


def _files(root: str) -> dict[str, bytes]:
    out = {}
    for r, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(r, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root).replace(os.sep, "/")] = fh.read()
    return out


def check_vectors(out: str) -> int:
    import qpyr

    inputs = load_inputs(out)
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, policy in POLICIES.items():
            d = os.path.join(out, name)
            fresh = pack_one(inputs, policy, os.path.join(tmp, name))
            committed = qpyr.open(os.path.join(d, "store.qpyr"))
            for key, arr in decoded(fresh).items():
                exp = np.load(os.path.join(d, "expected", f"{key}.npy"))
                if exp.dtype != arr.dtype or exp.shape != arr.shape or not np.array_equal(exp, arr):
                    problems.append(f"{name}: fresh pack decodes {key} differently")
            for key, arr in decoded(committed).items():
                if not np.array_equal(np.load(os.path.join(d, "expected", f"{key}.npy")), arr):
                    problems.append(f"{name}: committed store decodes {key} differently")
            a, b = _files(os.path.join(d, "store.qpyr")), _files(os.path.join(tmp, name))
            for k in sorted(set(a) | set(b)):
                if k == "zarr.json":
                    continue
                if a.get(k) != b.get(k):
                    problems.append(f"{name}: object {k} differs")
            ma = {k: v for k, v in committed.manifest.items() if k not in ("created", "writer")}
            mb = {k: v for k, v in fresh.manifest.items() if k not in ("created", "writer")}
            if ma != mb:
                problems.append(f"{name}: manifests differ (besides created/writer)")
    for p in problems:
        print(f"MISMATCH: {p}")
    print("OK" if not problems else f"FAILED ({len(problems)} mismatch(es))")
    return 0 if not problems else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory (default spec/vectors/stores)")
    p.add_argument("--force", action="store_true", help="rewrite existing vectors")
    p.add_argument("--check", action="store_true", help="re-pack into a temporary directory and compare")
    args = p.parse_args(argv)
    if args.check:
        return check_vectors(args.out)
    return write_vectors(args.out, args.force)


if __name__ == "__main__":
    sys.exit(main())
