"""Crash safety: real SIGKILLs at random points of a pack and of an append, then a re-run.

A child process runs ``qpyr.pack`` and kills itself with ``SIGKILL`` just before its K-th
storage operation (write, delete, or the rename that publishes a written file — which leaves a
temporary file behind), for random K; a few kills also come from outside at a random time.
After every kill the committed snapshot (if any) must open and decode; after the final re-run
the store must hold every item exactly once, verify, and decode to the inputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import torch

import qpyr
from qpyr.errors import InputError, StoreExistsError
from qpyr.format.manifest import MANIFEST_KEY
from qpyr.ops.verify import verify

CHILD = r"""
import os, signal, sys
src, url, mode, k, append = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
from qpyr.io import storage
count = [0]

def tick():
    count[0] += 1
    if count[0] == k:
        os.kill(os.getpid(), signal.SIGKILL)

if mode == "op":
    for meth in ("write", "delete"):
        orig = getattr(storage.ObjectStore, meth)
        def wrap(self, *a, _orig=orig, **kw):
            tick()
            return _orig(self, *a, **kw)
        setattr(storage.ObjectStore, meth, wrap)
elif mode == "replace":  # between writing a temporary file and renaming it into place
    real = os.replace
    def replace(a, b):
        tick()
        return real(a, b)
    storage.os.replace = replace
import qpyr
qpyr.pack(src, url, slots_per_task=3, levels=2, policy="lossless", append=append)
print("done", count[0])
"""


def _images(root: Path, prefix: str, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(n):
        a = rng.integers(0, 256, (int(rng.integers(9, 40)), int(rng.integers(9, 40)), 3), dtype=np.uint8)
        name = f"{prefix}{i:02d}.png" if i % 3 else f"sub/{prefix}{i:02d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(imagecodecs.png_encode(a))
        out[name] = a
    return out


def _run(src: Path, url: Path, mode: str, k: int, append: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, str(src), str(url), mode, str(k), "1" if append else "0"],
                          capture_output=True, text=True, timeout=120)


def _check_complete(url: Path, expect: dict[str, np.ndarray]) -> None:
    st = qpyr.open(str(url))
    assert sorted(st.names) == sorted(expect) and len(set(st.names)) == len(st.names) == len(expect)
    rep = verify(st, decode=True)
    assert rep.ok, rep.problems
    for name, a in expect.items():
        got = st.read(name, [0])[0]
        assert torch.equal(got, torch.from_numpy(np.moveaxis(a, -1, 0).astype(np.float32) / 255)), name
    assert not [p for p in (url / ".qpyr").rglob("*") if p.is_file()]  # (an empty folder may remain)
    assert not [p for p in url.rglob("*") if ".tmp-" in p.name]


def _ops_left(src: Path, url: Path, tmp: Path, append: bool = False) -> int:
    """Storage operations a re-run from the current state performs (counted on a copy)."""
    import shutil

    copy = tmp / f"count-{time.monotonic_ns()}"
    if url.exists():
        shutil.copytree(url, copy)
    r = _run(src, copy, "op", -1, append=append)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(copy)
    return int(r.stdout.split()[-1])


def test_sigkill_at_random_points_then_rerun_packs_every_item_once(tmp_path):
    src = tmp_path / "in"
    expect = _images(src, "a", 14, seed=1)
    rng = np.random.default_rng(7)
    url = tmp_path / "s.qpyr"
    kills = 0
    r = _run(src, url, "replace", int(rng.integers(1, 6)))  # leaves a temporary file behind
    assert r.returncode == -signal.SIGKILL, r.stderr
    for _ in range(4):  # each kill at a random one of the operations a re-run would perform
        left = _ops_left(src, url, tmp_path)
        r = _run(src, url, "op", int(rng.integers(1, left + 1)))
        assert r.returncode == -signal.SIGKILL, r.stderr
        kills += 1
        if (url / "zarr.json").exists():  # killed after the commit, during its cleanup
            assert sorted(qpyr.open(str(url)).names) == sorted(expect)
            break
        with pytest.raises(qpyr.QpyrError):
            qpyr.open(str(url))
    # and one kill from outside, at a random time after the journal appears
    if not (url / "zarr.json").exists():
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(url), "none", "0", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        while not (url / ".qpyr" / "pack.json").exists() and p.poll() is None and time.monotonic() - t0 < 60:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0, 0.3)))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        kills += p.returncode == -signal.SIGKILL
    assert kills >= 2
    if not (url / "zarr.json").exists() or (url / ".qpyr" / "pack.json").exists():
        r = _run(src, url, "none", 0)
        assert r.returncode == 0, r.stderr
    _check_complete(url, expect)
    # a completed pack is not packed again (no duplicates): the same call refuses
    with pytest.raises(StoreExistsError):
        qpyr.pack(str(src), str(url), slots_per_task=3, levels=2, policy="lossless")


def test_sigkill_during_append_keeps_the_old_snapshot_and_rerun_completes(tmp_path):
    base_src, more_src = tmp_path / "base", tmp_path / "more"
    base = _images(base_src, "a", 7, seed=2)
    more = _images(more_src, "b", 11, seed=3)
    url = tmp_path / "s.qpyr"
    qpyr.pack(str(base_src), str(url), slots_per_task=3, levels=2, policy="lossless")
    old = qpyr.open(str(url))
    before = {n: old.read(n) for n in old.names}
    rng = np.random.default_rng(11)
    done = False
    for i in range(4):
        if i == 0:
            r = _run(more_src, url, "replace", 4, append=True)
        else:
            r = _run(more_src, url, "op", int(rng.integers(1, _ops_left(more_src, url, tmp_path, append=True) + 1)),
                     append=True)
        assert r.returncode == -signal.SIGKILL, r.stderr
        st = qpyr.open(str(url))  # always a committed snapshot: the old one or (killed in cleanup) the new one
        assert len(st) in (len(base), len(base) + len(more))
        for n in st.names:
            st.read(n)
        if len(st) == len(base) + len(more):
            done = True
            break
        # the reader opened before the append still reads its snapshot
        assert len(old) == len(base)
        for n, lv in before.items():
            got = old.read(n)
            assert all(torch.equal(got[li], lv[li]) for li in lv)
    if not done or (url / ".qpyr" / "pack.json").exists():
        r = _run(more_src, url, "none", 0, append=True)
        assert r.returncode == 0, r.stderr
    _check_complete(url, {**base, **more})
    st = qpyr.open(str(url))
    assert st.names[:len(base)] == old.names  # old rows first, in order
    assert st.manifest["generation"] == 2
    # appending the same items again is a duplicate-name error, and leaves the store as it was
    with pytest.raises(InputError, match="already in"):
        qpyr.pack(str(more_src), str(url), levels=2, policy="lossless", append=True)
    _check_complete(url, {**base, **more})


def test_failed_append_is_rolled_back_and_an_unfinished_one_can_be_abandoned(tmp_path):
    rng = np.random.default_rng(5)
    url = str(tmp_path / "s.qpyr")
    base = {f"x{i}": rng.integers(0, 255, (20, 20, 3), dtype=np.uint8) for i in range(5)}
    qpyr.pack(base, url, slots_per_task=2, levels=2)
    listing = sorted(p.relative_to(url).as_posix() for p in Path(url).rglob("*") if p.is_file())
    bad = {"y0": rng.integers(0, 255, (20, 20, 3), dtype=np.uint8), "y1": np.zeros((0, 3), np.uint8)}
    with pytest.raises(InputError):
        qpyr.pack(bad, url, levels=2, append=True)
    assert sorted(p.relative_to(url).as_posix() for p in Path(url).rglob("*") if p.is_file()) == listing
    assert verify(qpyr.open(url)).ok
    # an append that was interrupted (here: its commit never ran) blocks other appends ...
    import qpyr.write.writer as w

    real = w.commit
    w.commit = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
    try:
        with pytest.raises(KeyboardInterrupt):
            qpyr.pack({"z0": base["x0"]}, url, levels=2, append=True)
    finally:
        w.commit = real
    assert len(qpyr.open(url)) == 5
    with pytest.raises(StoreExistsError, match="unfinished append"):
        qpyr.pack({"q0": base["x1"]}, url, levels=2, append=True)
    # ... until it is re-run, or abandoned with overwrite=True
    st = qpyr.pack({"q0": base["x1"]}, url, levels=2, append=True, overwrite=True)
    assert st.names == [*base, "q0"] and verify(st, decode=True).ok


def test_journal_and_lists_hold_no_credentials(tmp_path):
    url = tmp_path / "s.qpyr"
    src = tmp_path / "in"
    _images(src, "a", 4, seed=9)
    import qpyr.write.writer as w

    real = w.commit
    w.commit = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
    try:
        with pytest.raises(KeyboardInterrupt):
            qpyr.pack(str(src), str(url), slots_per_task=2, storage_options={"secret_token": "hunter2"})
    finally:
        w.commit = real
    text = "".join(p.read_text() for p in (url / ".qpyr").rglob("*.json"))
    assert "hunter2" not in text
    journal = json.loads((url / ".qpyr" / "pack.json").read_text())
    assert journal["tasks"] == 2 and journal["items"] == 4
    assert os.path.exists(url / ".qpyr" / "lists" / journal["lists"])


def test_readers_keep_their_snapshot_and_never_see_a_partial_append(tmp_path):
    """A reader opened before an append reads the old snapshot until it reopens; readers that
    open while an append runs (in another process) get the old or the new snapshot, whole."""
    src, more = tmp_path / "a", tmp_path / "b"
    base = _images(src, "a", 6, seed=4)
    extra = _images(more, "b", 30, seed=5)
    url = tmp_path / "s.qpyr"
    qpyr.pack(str(src), str(url), slots_per_task=3, levels=2, policy="lossless")
    old = qpyr.open(str(url))
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(more), str(url), "none", "0", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = set()
    while p.poll() is None:
        st = qpyr.open(str(url))
        assert len(st) in (len(base), len(base) + len(extra))
        st.read(st.names[-1])  # the last item of whichever snapshot is complete
        seen.add(len(st))
    assert p.wait() == 0, p.stderr.read() if p.stderr else ""
    assert len(old) == len(base) and all(old.read(n) for n in old.names)  # still the old snapshot
    new = qpyr.open(str(url))
    assert len(new) == len(base) + len(extra) and new.manifest["generation"] == 2
    assert sorted(os.listdir(url / "catalog")) == ["g2", "zarr.json"]  # generation 1's catalog is gone
    assert len(base) in seen


def test_open_rereads_a_root_replaced_while_it_read_the_catalog(tmp_path, monkeypatch):
    """The generation race: a reader reads root g, an append commits g + 1 and removes g's
    catalog before the reader fetches it; the reader notices the new root and reads that."""
    from qpyr.io.storage import ObjectStore
    from qpyr.read import snapshot
    from qpyr.read.store import open_store

    url = tmp_path / "s.qpyr"
    rng = np.random.default_rng(1)
    qpyr.pack({f"x{i}": rng.integers(0, 255, (9, 9), dtype=np.uint8) for i in range(4)}, str(url))
    stale = (url / "zarr.json").read_bytes()
    qpyr.pack({"y": rng.integers(0, 255, (9, 9), dtype=np.uint8)}, str(url), append=True)
    real = snapshot.read_root
    calls = []

    def first_stale(ostore):
        calls.append(1)
        return stale if len(calls) == 1 else real(ostore)

    monkeypatch.setattr(snapshot, "read_root", first_stale)
    st = open_store(ObjectStore(str(url)))
    assert len(calls) == 2 and len(st) == 5 and st.manifest["generation"] == 2


def test_append_with_another_slots_per_task_keeps_the_store_geometry(tmp_path):
    """An append asking for another ``slots_per_task`` (so other items per shard) packs with
    the store's own: existing shards are never rewritten, the old snapshot stays readable, and
    every item of both packs decodes."""
    rng = np.random.default_rng(12)
    url = tmp_path / "s.qpyr"
    base = {f"x{i}": rng.integers(0, 255, (20, 20, 3), dtype=np.uint8) for i in range(7)}
    qpyr.pack(base, str(url), slots_per_task=3, levels=2, policy="lossless", format="1")
    shards = {p: p.read_bytes() for p in (url / "levels").rglob("*") if p.is_file() and "/c/" in p.as_posix()}
    old = qpyr.open(str(url))
    more = {f"y{i}": rng.integers(0, 255, (20, 20, 3), dtype=np.uint8) for i in range(9)}
    st = qpyr.pack(more, str(url), slots_per_task=8, levels=2, policy="lossless", append=True)
    assert st.manifest["format_version"] == "1.0"  # a 1.x store is appended to in 1.x
    assert st.manifest["slots_per_task"] == 3 and st.manifest["tasks"] == 3 + 3
    assert {b["slots_per_task"] for b in st.manifest["buckets"]} == {3}
    assert all(p.read_bytes() == b for p, b in shards.items())  # no existing shard or qparams chunk rewritten
    assert verify(st, decode=True).ok
    for n, a in {**base, **more}.items():
        assert torch.equal(st.read(n, [0])[0], torch.from_numpy(np.moveaxis(a, -1, 0).astype(np.float32) / 255)), n
    assert old.names == list(base) and all(torch.equal(old.read(n, [0])[0], st.read(n, [0])[0]) for n in base)


def test_format_2_append_with_another_slots_per_task_and_shard_size_adds_rows_only(tmp_path):
    """Format 2.0 has no slot geometry: an append packs with its own ``slots_per_task`` in new
    task rows, keeps the store's shard size, and rewrites no existing shard."""
    rng = np.random.default_rng(14)
    url = tmp_path / "s.qpyr"
    base = {f"x{i}": rng.integers(0, 255, (20, 20, 3), dtype=np.uint8) for i in range(7)}
    qpyr.pack(base, str(url), slots_per_task=3, levels=2, policy="lossless", shard_bytes=2**16)
    shards = {p: p.read_bytes() for p in (url / "levels").rglob("*") if p.is_file() and "/c/" in p.as_posix()}
    old = qpyr.open(str(url))
    more = {f"y{i}": rng.integers(0, 255, (20, 20, 3), dtype=np.uint8) for i in range(9)}
    st = qpyr.pack(more, str(url), slots_per_task=8, levels=2, policy="lossless", append=True, shard_bytes=2**20)
    assert st.manifest["format_version"] == "2.0" and st.manifest["records"]["shard_bytes"] == 2**16
    assert st.manifest["slots_per_task"] == 8 and st.manifest["tasks"] == 3 + 2
    assert all(p.read_bytes() == b for p, b in shards.items())
    assert verify(st, decode=True).ok
    for n, a in {**base, **more}.items():
        assert torch.equal(st.read(n, [0])[0], torch.from_numpy(np.moveaxis(a, -1, 0).astype(np.float32) / 255)), n
    assert old.names == list(base) and all(torch.equal(old.read(n, [0])[0], st.read(n, [0])[0]) for n in base)


def test_append_to_buckets_of_another_slots_per_task(tmp_path):
    """Each bucket records its own ``slots_per_task`` (format.md §5.1, §8.3): a store whose
    buckets were made with 5 while its last commit says 2 (valid, e.g. from another writer).
    The append keeps each existing bucket's geometry, new buckets get the store's, and no task
    spills into another's slots."""
    rng = np.random.default_rng(13)
    url = tmp_path / "s.qpyr"
    base = {f"x{i}": rng.integers(0, 255, (20, 20, 3), dtype=np.uint8) for i in range(7)}
    qpyr.pack(base, str(url), slots_per_task=5, levels=1, policy="lossless", format="1")
    raw = (url / "zarr.json").read_bytes()
    doc = json.loads(raw)
    man = doc["attributes"][MANIFEST_KEY]
    assert man["slots_per_task"] == 5
    man["slots_per_task"] = 2  # the manifest's own; the buckets keep theirs (same document length)
    (url / "zarr.json").write_bytes(json.dumps(doc, separators=(",", ":")).encode())
    assert verify(qpyr.open(str(url))).ok
    shards = {p: p.read_bytes() for p in (url / "levels").rglob("*") if p.is_file() and "/c/" in p.as_posix()}
    more = {f"y{i}": rng.integers(0, 255, (20, 20, 3) if i % 2 else (40, 40, 3), dtype=np.uint8) for i in range(9)}
    st = qpyr.pack(more, str(url), slots_per_task=64, levels=1, policy="lossless", append=True)
    assert st.manifest["slots_per_task"] == 2 and st.manifest["tasks"] == 2 + 5
    assert sorted(b["slots_per_task"] for b in st.manifest["buckets"]) == [2, 5]  # the new 48x48 bucket, the old one
    assert all(p.read_bytes() == b for p, b in shards.items())
    assert verify(st, decode=True).ok
    for n, a in {**base, **more}.items():
        assert torch.equal(st.read(n, [0])[0], torch.from_numpy(np.moveaxis(a, -1, 0).astype(np.float32) / 255)), n


def test_root_change_is_seen_through_cached_file_handles(tmp_path):
    """Local reads go through cached open files; a root replaced by another process (a new
    inode, here of the same size) must still count as changed, or a reader caught in the
    generation race gives up instead of re-reading the root."""
    from qpyr.io.storage import ObjectStore
    from qpyr.read import snapshot

    url = tmp_path / "s.qpyr"
    qpyr.pack({"x": np.zeros((9, 9), np.uint8)}, str(url))
    os_ = ObjectStore(str(url))
    raw = snapshot.read_root(os_)  # caches an open file of this zarr.json
    new = raw.replace(b'"generation":1', b'"generation":2')
    assert len(new) == len(raw) and new != raw
    tmp = url / "zarr.json.other"
    tmp.write_bytes(new)
    os.replace(tmp, url / "zarr.json")  # what another process's commit does
    assert snapshot.root_changed(os_, raw)
