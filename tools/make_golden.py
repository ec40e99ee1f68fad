"""Write (or check) every golden vector of the qpyr format, under ``spec/vectors/``.

Two kinds of vectors, written from the definitions in this file only:

* **codec vectors** (``dct/``, ``lossless/``, ``tiles/``): one directory per case with the codec's
  ``config.json``, the ``input.npy`` it encodes (and ``classes.npy``, the per-tile classes, for
  ``qpyr.tiles``), the ``encoded.bin`` bytes and, for the lossy codecs, the ``decoded.npy``
  array a decoder must give back bit for bit. Inputs are crops of scikit-image's photos
  (:mod:`qpyr.samples`) and seeded noise, so they are rebuilt here, not read back::

      spec/vectors/<codec>/<NN-case>/{config.json, input.npy, [classes.npy], encoded.bin, [decoded.npy]}

  ``dct-v2/`` holds ``ctx`` streams of ``qpyr.dct`` stream version 2, written by qpyr before
  version 4: their ``encoded.bin`` is frozen (read back, never re-encoded), only the
  ``decoded.npy`` that the decoder gives is written.

* **golden stores** (``stores/``): one small store per policy, packed from the same three tiny
  inputs (an 8x10 RGB uint8 image, a 5x7 grey uint16 image and a 6x6 float32 array, two levels
  each, two items per pack task so that two tasks and two shard rows are exercised), and next
  to each store the arrays that ``Store.read(item, level)`` returns (float32 ``[C, h, w]``)::

      spec/vectors/stores/
          inputs/<item>.npy                  the source arrays ([H, W] or [H, W, C])
          <name>/vector.json                 how the store was packed (policy spec, levels, ...)
          <name>/store.qpyr/...              the committed store (format 1.x)
          <name>/expected/<item>_l<level>.npy  decoded float32 arrays
      spec/vectors/stores-2.0/...            the same, in format 2.0 (records, 64 KiB shards)

Golden vectors are committed and never regenerated silently: bytes written by an older qpyr
must keep decoding to the same values. This tool therefore refuses to touch an existing
directory unless ``--force`` is given.

Usage::

    python tools/make_golden.py                    # write the vectors (only if absent)
    python tools/make_golden.py --force            # rewrite them (review the diff!)
    python tools/make_golden.py --check            # regenerate into a temporary directory and compare
    python tools/make_golden.py --check dct tiles  # only some sets (dct, dct-v2, lossless, tiles, stores, stores-2.0)

``--check`` compares every codec-vector file byte for byte; for the stores it compares the
decoded arrays exactly, every store object byte for byte except the root ``zarr.json`` (its
manifest holds the ``created`` time), and the manifests without ``created`` and ``writer``.
Exit status 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "spec", "vectors")


# -- codec vectors ---------------------------------------------------------------------------


@cache
def _photo(name: str) -> np.ndarray:
    from qpyr.samples import sample_photo

    return sample_photo(name)


def _chw(name: str, y: int, x: int, h: int, w: int) -> np.ndarray:
    """``uint8 [C, h, w]``: the crop of sample photo ``name`` at row ``y``, column ``x``."""
    a = _photo(name)[y:y + h, x:x + w]
    return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))


def _noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@dataclass(frozen=True)
class Case:
    """One codec vector: the codec document, the input, (``qpyr.tiles``) the tile classes, and
    (``frozen``) the committed stream of an older stream version, decoded but never re-encoded."""

    config: dict[str, Any]
    input: np.ndarray
    classes: np.ndarray | None = None
    frozen: bytes | None = None


def _dct_cases() -> dict[str, Case]:
    rgb, small, noise = _chw("astronaut", 180, 200, 21, 37), _chw("astronaut", 300, 100, 16, 24), _noise(5, (3, 32, 32))

    def dct(**conf: Any) -> dict[str, Any]:
        return {"name": "qpyr.dct", "configuration": conf}

    return {
        "00-rgb-420-q75": Case(dct(quality=75), rgb),
        "01-rgb-444-q90": Case(dct(chroma="444"), small),
        "02-grey-tables": Case(dct(tables=[list(range(1, 65))], rdo=False), _chw("camera", 200, 250, 13, 9)),
        "03-rgba-1x1": Case(dct(quality=5), np.array([10, 200, 33, 255], np.uint8).reshape(4, 1, 1)),
        "04-rgb-420-fast": Case(dct(quality=75, entropy="fast"), rgb),
        "05-noise-444-own-models": Case(dct(quality=90, chroma="444"), noise),
        "06-rgb-444-ssim-tables": Case(dct(quality=80, chroma="444", family="ssim"), small),
        "07-rgb-420-jfif": Case(dct(quality=75, entropy="jfif"), rgb),
        "08-noise-444-jfif-full": Case(dct(quality=100, chroma="444", entropy="jfif"), noise),
    }


def _lossless_cases() -> dict[str, Case]:
    rgb = _chw("astronaut", 140, 200, 21, 37)
    b = _chw("astronaut", 60, 220, 24, 34).astype(np.uint16)
    b16 = np.ascontiguousarray(b[:, 0::2, 0::2] + b[:, 1::2, 0::2] + b[:, 0::2, 1::2] + b[:, 1::2, 1::2])  # 2x2 sums
    alpha = (np.arange(b16[0].size, dtype=np.int64).reshape(b16.shape[1:]) * 97 % 1021).astype(np.uint16)
    rgba16 = (np.concatenate([b16, alpha[None]]).astype(np.int32) - 700).astype(np.int16)[:, :9, :13].copy()

    def ll(**conf: Any) -> dict[str, Any]:
        return {"name": "qpyr.lossless", "configuration": conf}

    return {
        "00-rgb8-med-auto": Case(ll(), rgb),
        "01-rgb16-med-hp2": Case(ll(color="hp2"), b16),
        "02-rgba-int16-grad-rct": Case(ll(predictor="grad", color="rct", level=3), rgba16),
        "03-grey16-small-left": Case(ll(predictor="left"), rgb[1:2, :6, :11].astype(np.uint16)),
        "04-rgb8-1x1-none-hp1": Case(ll(predictor="none", color="hp1"), np.array([[[200]], [[10]], [[255]]], np.uint8)),
    }


def _tiles_cases() -> dict[str, Case]:
    a = _photo("astronaut")
    rgb = (np.moveaxis(a[200:240, 180:230], -1, 0) / 255.0).astype(np.float32)[None]
    gray = (_photo("camera")[100:164, 100:164] / 255.0).astype(np.float32)[None, None]
    rgba = np.concatenate([np.moveaxis(a[300:324, 300:324], -1, 0) / 255.0, np.linspace(0, 1, 576).reshape(1, 24, 24)])

    def tiles(tile: int) -> dict[str, Any]:
        return {"name": "qpyr.tiles", "configuration": {"tile": tile}}

    return {
        "00-rgb-all-classes": Case(tiles(16), rgb, np.array([[0, 1, 2, 3], [4, 3, 2, 1], [1, 1, 4, 0]], np.uint8)),
        "01-gray-int4": Case(tiles(32), gray, np.ones((2, 2), np.uint8)),
        "02-rgba-tile8-mixed": Case(tiles(8), rgba.astype(np.float32)[None],
                                    np.array([[2, 3, 1], [4, 2, 2], [0, 1, 3]], np.uint8)),
    }


def _npy(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


def _frozen_cases(name: str) -> dict[str, Case]:
    """The committed vectors of ``spec/vectors/<name>/`` as cases: streams that an older
    version wrote, kept to prove they still decode (only their ``decoded.npy`` is rewritten)."""
    out: dict[str, Case] = {}
    root = os.path.join(ROOT, name)
    for case in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        d = os.path.join(root, case)
        with open(os.path.join(d, "config.json")) as f:
            config = json.load(f)
        with open(os.path.join(d, "encoded.bin"), "rb") as fb:
            frozen = fb.read()
        out[case] = Case(config, np.load(os.path.join(d, "input.npy"), allow_pickle=False), frozen=frozen)
    return out


def _dct_files(case: Case) -> dict[str, bytes]:
    from qpyr.codecs.dct import DctCodec

    codec = DctCodec.from_dict(case.config)
    enc = case.frozen if case.frozen is not None else codec.encode(case.input)
    return {"config.json": (json.dumps(case.config, indent=2) + "\n").encode(), "input.npy": _npy(case.input),
            "encoded.bin": enc, "decoded.npy": _npy(codec.decode(enc, case.input.shape))}


def _lossless_files(case: Case) -> dict[str, bytes]:
    from qpyr.codecs.lossless import LosslessCodec

    enc = LosslessCodec.from_dict(case.config).encode(case.input)
    return {"config.json": (json.dumps(case.config, indent=2) + "\n").encode(), "input.npy": _npy(case.input),
            "encoded.bin": enc}


def _tiles_files(case: Case) -> dict[str, bytes]:
    from qpyr.codecs.tiles import TilesChunkCodec

    if case.classes is None:
        raise ValueError("A qpyr.tiles vector needs its tile classes.")
    codec = TilesChunkCodec.from_dict(case.config)
    enc = codec.encode_classes(case.input, case.classes)
    return {"config.json": (json.dumps(case.config) + "\n").encode(), "input.npy": _npy(case.input),
            "classes.npy": _npy(case.classes), "encoded.bin": enc,
            "decoded.npy": _npy(codec.decode(enc, case.input.shape, np.dtype(np.float32)))}


@dataclass(frozen=True)
class CodecSet:
    """The vectors of one codec: its cases and how a case becomes files (name -> bytes)."""

    cases: Callable[[], dict[str, Case]]
    files: Callable[[Case], dict[str, bytes]] = field(repr=False)


CODEC_SETS: dict[str, CodecSet] = {
    "dct": CodecSet(_dct_cases, _dct_files),
    "dct-v2": CodecSet(lambda: _frozen_cases("dct-v2"), _dct_files),  # ctx streams of stream version 2
    "lossless": CodecSet(_lossless_cases, _lossless_files),
    "tiles": CodecSet(_tiles_cases, _tiles_files),
}


def codec_vector_files(name: str) -> dict[str, dict[str, bytes]]:
    """Case name -> file name -> bytes, for the codec vector set ``name`` (nothing is written)."""
    s = CODEC_SETS[name]
    return {case: s.files(c) for case, c in s.cases().items()}


def write_codec_vectors(root: str, name: str, force: bool) -> int:
    out = os.path.join(root, name)
    fresh = codec_vector_files(name)
    existing = [c for c in fresh if os.path.exists(os.path.join(out, c))]
    if existing and not force:
        print(f"make_golden: {out} already holds {existing}; golden vectors are never regenerated "
              "silently. Pass --force to rewrite them (and review the diff).", file=sys.stderr)
        return 1
    for case, files in fresh.items():
        d = os.path.join(out, case)
        if os.path.exists(d):
            shutil.rmtree(d)
        os.makedirs(d)
        for fn, data in files.items():
            with open(os.path.join(d, fn), "wb") as f:
                f.write(data)
        print(f"wrote {d} ({len(files['encoded.bin'])} B encoded)")
    return 0


def check_codec_vectors(root: str, name: str) -> list[str]:
    """Regenerate the set in memory and compare it with the committed files byte for byte."""
    out = os.path.join(root, name)
    fresh = codec_vector_files(name)
    committed = {c for c in os.listdir(out) if os.path.isdir(os.path.join(out, c))} if os.path.isdir(out) else set()
    problems = [f"{name}/{c}: committed, but no case writes it" for c in sorted(committed - set(fresh))]
    for case, files in fresh.items():
        d = os.path.join(out, case)
        on_disk = sorted(os.listdir(d)) if os.path.isdir(d) else []
        if on_disk != sorted(files):
            problems.append(f"{name}/{case}: files {on_disk}, expected {sorted(files)}")
        for fn, data in files.items():
            p = os.path.join(d, fn)
            if not os.path.exists(p):
                continue
            with open(p, "rb") as f:
                if f.read() != data:
                    problems.append(f"{name}/{case}: {fn} differs")
    return problems


# -- golden stores ---------------------------------------------------------------------------

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


#: Format of each store set: ``stores`` pins the 1.x layout, ``stores-2.0`` the record layout
#: (shards of the smallest size, 64 KiB, so the stores stay small).
FORMATS = {"stores": "1", "stores-2.0": "2.0"}
SHARD_BYTES_2 = 2**16


def pack_one(inputs: dict[str, np.ndarray], policy: str, path: str, fmt: str = "1") -> Any:
    import qpyr

    return qpyr.pack(dict(inputs), path, policy=policy, levels=LEVELS, slots_per_task=SLOTS_PER_TASK, overwrite=True,
                     format=fmt, shard_bytes=SHARD_BYTES_2)


def decoded(store: Any) -> dict[str, np.ndarray]:
    out = {}
    for name in store.names:
        for lv, t in store.read(name).items():
            out[f"{name}_l{lv}"] = t.numpy()
    return out


def write_stores(out: str, force: bool, fmt: str = "1") -> int:
    """Pack every golden store (and its inputs and decoded arrays) under ``out`` in format ``fmt``."""
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
        store = pack_one(inputs, policy, os.path.join(d, "store.qpyr"), fmt)
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


def check_stores(out: str, fmt: str = "1") -> list[str]:
    """Re-pack every golden store into a temporary directory and list how it differs."""
    import qpyr

    inputs = load_inputs(out)
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, policy in POLICIES.items():
            d = os.path.join(out, name)
            fresh = pack_one(inputs, policy, os.path.join(tmp, name), fmt)
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
    return problems


SETS = (*CODEC_SETS, *FORMATS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("sets", nargs="*", metavar="SET",
                   help=f"vector sets to write or check, of {', '.join(SETS)} (default: all)")
    p.add_argument("--root", default=ROOT, help="vectors directory (default spec/vectors)")
    p.add_argument("--force", action="store_true", help="rewrite existing vectors")
    p.add_argument("--check", action="store_true", help="regenerate into a temporary directory and compare")
    args = p.parse_args(argv)
    sets = args.sets or list(SETS)
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        p.error(f"unknown vector set(s) {unknown}; expected some of {list(SETS)}")
    if args.check:
        problems = [q for s in sets if s in CODEC_SETS for q in check_codec_vectors(args.root, s)]
        for s in sets:
            if s in FORMATS:
                problems += [f"{s}/{q}" for q in check_stores(os.path.join(args.root, s), FORMATS[s])]
        for q in problems:
            print(f"MISMATCH: {q}")
        print("OK" if not problems else f"FAILED ({len(problems)} mismatch(es))")
        return 0 if not problems else 1
    rc = 0
    for s in sets:
        rc |= (write_stores(os.path.join(args.root, s), args.force, FORMATS[s]) if s in FORMATS
               else write_codec_vectors(args.root, s, args.force))
    return rc


if __name__ == "__main__":
    sys.exit(main())
