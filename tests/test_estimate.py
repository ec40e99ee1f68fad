"""``qpyr estimate`` / ``qpyr.estimate(...)``: accuracy against a real full pack, intervals,
determinism, existing stores, JSON schema, plot, and every bad input the estimator refuses."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

import qpyr
import qpyr.estimate
from qpyr.cli import main
from qpyr.errors import InputError, InputNotFoundError, PolicyError, PriceTableError
from qpyr.estimate import EstimateInputError, estimate, estimate_store
from qpyr.estimate.prices import UnknownStorageClassError, shipped_prices_text
from qpyr.estimate.sampling import reservoir
from qpyr.io.inputs import InputRef
from qpyr.samples import random_crops, sample_photo

SCHEMA = json.loads((Path(__file__).parent.parent / "spec" / "schemas" / "estimate.schema.json").read_text("utf-8"))
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "camera", "coins", "moon")
FAST = {"providers": ["aws-s3:standard"]}


def _corpus(root: Path, n: int, lo: int, hi: int, seed: int) -> Path:
    """``n`` PNGs: random crops and rescales of real photos (RGB and gray), sides lo..hi px."""
    root.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(random_crops([sample_photo(p) for p in PHOTOS], n, lo, hi, seed=seed)):
        Image.fromarray(a).save(root / f"im{i:05d}.png")
    return root


def _full_pack(corpus: Path, policy: str, *, quality: bool = False, layout: int = 2) -> tuple[int, int]:
    """(total bytes — data + every metadata object —, objects) of actually packing the whole
    corpus, in format ``layout`` (2: 2.0, the default; 1: 1.x).

    ``quality=False`` skips the quality measurement, which changes no data byte, only a few bytes
    of the catalog's quality table and the manifest's quality summary.
    """
    from qpyr.estimate.packing import drop_memory_store, memory_url
    from qpyr.io.storage import ObjectStore
    from qpyr.policies.threads import single_threaded
    from qpyr.write import PackOptions, run_pack

    url = memory_url()
    try:
        with single_threaded():
            manifest = run_pack([str(corpus)], url, PackOptions(policy=policy, measure_quality=quality, layout=layout))
        return int(manifest["total_bytes"]), len(ObjectStore(url).list_sizes())
    finally:
        drop_memory_store(url)


def _full_pack_bytes(corpus: Path, policy: str, *, quality: bool = False) -> int:
    return _full_pack(corpus, policy, quality=quality)[0]


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 2,000 images of varied content and size. A 5 % sample is then 100 images, enough for
    # +-5 %: over seeds the error's standard deviation is ~2 % here (tools/bench_estimate.py).
    return _corpus(tmp_path_factory.mktemp("est-big"), 2000, 40, 170, seed=11)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _corpus(tmp_path_factory.mktemp("est-small"), 40, 40, 140, seed=5)


@pytest.fixture(scope="module")
def big_result(big_corpus: Path) -> qpyr.estimate.EstimateResult:
    return estimate([str(big_corpus)], sample=100, seed=0, policies=["mixed"], **FAST)


# ------------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("policy", ["lossless", "mixed"])
def test_five_percent_sample_within_five_percent_of_full_pack(big_corpus, big_result, policy) -> None:
    """Held-out corpus of 2,000 varied images; projection from a 5 % sample vs packing all of it.

    Both sides are total stored bytes of a format-2.0 store *including* metadata (shard
    framing, documents, catalog, manifest): what a bucket bills.
    """
    true = _full_pack_bytes(big_corpus, policy)
    p = big_result.policy(policy).projected_bytes
    assert big_result.sample is not None and big_result.sample.packed == 100
    assert abs(p.mean / true - 1) <= 0.05, (p, true)
    assert p.low <= true <= p.high, (p, true)


@pytest.mark.parametrize("fmt", ["2.0", "1"])
def test_sample_covering_the_corpus_reproduces_the_store_exactly(small_corpus, fmt) -> None:
    """With every image packed, the data part is exact, so this checks the layout model: format
    2.0's shards (the writer's fill replayed), their framing, the per-level documents, catalog
    (shard tables included) and manifest; format 1.x's shard indexes and per-bucket documents."""
    r = estimate([str(small_corpus)], sample=40, policies=["mixed"], format=fmt, **FAST)
    assert r.store_format == ("2.0" if fmt == "2.0" else "1.x")
    for pol in ("lossless", "fp16", "mixed"):
        true, objects = _full_pack(small_corpus, pol, quality=True, layout=int(fmt[0]))
        p = r.policy(pol)
        assert p.projected_bytes.low == p.projected_bytes.high == p.projected_bytes.mean
        assert p.objects == objects
        # 1.x mixed: quantization parameter chunks are modelled as raw parameters (compression
        # ignored); 2.0 records hold the raw parameters, so the projection is exact
        rel = 5e-3 if (pol, fmt) == ("mixed", "1") else 1e-9
        assert p.projected_bytes.mean == pytest.approx(true, rel=rel)


def test_overhead_and_per_level_bytes_add_up(big_result) -> None:
    for p in big_result.policies:
        assert sum(lv.projected_bytes for lv in p.levels) == pytest.approx(p.data_bytes, rel=1e-9)
        assert p.projected_bytes.mean == pytest.approx(p.data_bytes + p.overhead_bytes)
        assert p.bytes_per_image.mean == pytest.approx(p.projected_bytes.mean / big_result.readable_items)
        if p.kind == "qpyr":
            assert p.overhead_bytes > 0
    assert [p.policy for p in big_result.policies] == ["fp32", "fp16", "lossless", "mixed", "jpeg-q90"]
    fp32 = big_result.policy("fp32")
    assert fp32.ratio_vs_fp32 == pytest.approx(1.0)
    assert big_result.policy("jpeg-q90").ratio_vs_jpeg == pytest.approx(1.0)
    assert big_result.policy("lossless").levels[0].exact
    mixed = big_result.policy("mixed").levels[0]
    assert not mixed.exact and 0.8 < (mixed.ssim or 0) <= 1 and mixed.psnr is not None


# ------------------------------------------------------------------------------- determinism
def test_seeded_determinism(small_corpus) -> None:
    kw = dict(sample=8, policies=["mixed"], **FAST)
    a = estimate([str(small_corpus)], seed=3, **kw).to_dict()
    b = estimate([str(small_corpus)], seed=3, **kw).to_dict()
    c = estimate([str(small_corpus)], seed=4, **kw).to_dict()
    assert a == b
    assert a != c


def test_reservoir_is_uniform_and_streams() -> None:
    counts = np.zeros(50)
    for seed in range(400):
        n, res = reservoir((InputRef(str(i), str(i)) for i in range(50)), 5, random.Random(seed))
        assert n == 50 and len(res) == 5 and [i for i, _ in res] == sorted(i for i, _ in res)
        for i, _ in res:
            counts[i] += 1
    assert counts.min() > 15 and counts.max() < 65  # expectation 40
    n, res = reservoir((InputRef(str(i), str(i)) for i in range(200_000)), 10, random.Random(0))
    assert n == 200_000 and len(res) == 10


def test_count_extrapolates_and_file_lists(small_corpus, tmp_path) -> None:
    files = sorted(str(p) for p in small_corpus.glob("*.png"))
    lst = tmp_path / "corpus.txt"
    lst.write_text("# the corpus\n" + "\n".join(files) + "\n\n", encoding="utf-8")
    a = estimate([f"@{lst}"], sample=10, seed=1, **FAST)
    b = estimate([str(lst)], sample=10, seed=1, **FAST)
    assert a.items == b.items == 40 and a.to_dict()["policies"] == b.to_dict()["policies"]
    big = estimate([str(small_corpus)], sample=10, seed=1, count=1_000_000, **FAST)
    assert big.items == 1_000_000 and big.items_from == "count" and big.listed == 40
    small = estimate([str(small_corpus)], sample=10, seed=1, **FAST)
    for pol in ("lossless", "mixed"):
        s, b = small.policy(pol), big.policy(pol)
        assert b.data_bytes / big.readable_items == pytest.approx(s.data_bytes / small.readable_items, rel=1e-9)
        # 40 images leave 3 nearly empty shards (each ~1 KB of zstd framing for its unused tail)
        # and a catalog of a few chunks; a million fill full tasks: far less overhead per image
        assert b.overhead_bytes / big.readable_items < s.overhead_bytes / small.readable_items / 2
        assert b.projected_bytes.high - b.projected_bytes.low > 1000 * (s.projected_bytes.high - s.projected_bytes.low)
        assert b.objects > 1000


def test_file_list_is_streamed_and_missing_entries_count_as_unreadable(small_corpus, tmp_path) -> None:
    files = sorted(str(p) for p in small_corpus.glob("*.png"))[:9]
    lst = tmp_path / "with-missing.lst"
    lst.write_text("\n".join(files + [str(tmp_path / "gone.png")]) + "\n", encoding="utf-8")
    r = estimate([str(lst)], sample=10, **FAST)
    assert r.sources == (f"@{lst}",) and r.items == 10 and r.readable_items == pytest.approx(9)
    assert r.sample is not None and r.sample.probe_failed == 1 and "gone.png" in r.sample.failures[0]


# ------------------------------------------------------------------------------- dollars
def test_dollars_follow_usage_and_ia_minimums(small_corpus) -> None:
    r = estimate([str(small_corpus)], sample=10, seed=0, count=5_000_000, months=6, reads_per_month=3,
                 egress_fraction=0.5, providers=["aws-s3:standard", "aws-s3:standard-ia"])
    jpeg = r.policy("jpeg-q90")
    std, ia = jpeg.costs
    assert (std.storage_class, ia.storage_class) == ("aws-s3:standard", "aws-s3:standard-ia")
    # JPEG files per level are far below S3-IA's 128 KiB minimum: billed at the minimum.
    assert ia.billable_bytes >= jpeg.objects * 131072 > 10 * jpeg.projected_bytes.mean
    assert std.read_requests_per_month == pytest.approx(3 * sum(lv.items for lv in jpeg.levels), rel=1e-6)
    # egress beyond AWS's 100 GB/month free allowance is billed at the class's rate
    for p in r.policies:
        c = p.costs[0]
        billable_gb = max(0.0, c.read_bytes_per_month * 0.5 / 1e9 - 100)
        assert c.egress_per_month == pytest.approx(billable_gb * 0.09)
    assert r.policy("fp32").costs[0].egress_per_month > 0
    assert std.total_over_months.low <= std.total_over_months.mean <= std.total_over_months.high
    # a qpyr store read in epoch order costs a GET per shard per level (whole shards); read at
    # random, a ranged GET per image-level; both open the store (root and catalog) once
    mixed = r.policy("mixed")
    items = sum(lv.items for lv in mixed.levels)
    tasks = -(-r.readable_items // 256)
    assert set(mixed.reads) == {"streaming", "random"}
    (sq, sb), (rq, rb) = mixed.reads["streaming"], mixed.reads["random"]
    # <= 3 levels, one 32 MiB shard per pack task and level (256 small images fill ~3 MB of it)
    assert tasks < sq < 4 * tasks < rq / 30 and items <= rq <= items * 1.0001
    assert sb == pytest.approx(rb, rel=0.01)  # the same bytes, plus the shards' framing
    for c in mixed.costs:
        st, rd = c.access["streaming"], c.access["random"]
        assert (c.read_requests_per_month, c.total_over_months) == (st.read_requests_per_month, st.total_over_months)
        assert (st.read_requests_per_month, rd.read_requests_per_month) == pytest.approx((3 * sq, 3 * rq))
        assert rd.reads_per_month > 10 * st.reads_per_month > 0  # S3-IA adds a retrieval fee per GB to both
        assert rd.total_over_months.mean - st.total_over_months.mean == pytest.approx(
            6 * (rd.reads_per_month - st.reads_per_month) + 6 * (rd.egress_per_month - st.egress_per_month))
    for c in jpeg.costs:  # one GET per file, whatever the order
        assert c.access["streaming"] == c.access["random"]
    coarse = estimate([str(small_corpus)], sample=10, seed=0, count=5_000_000, months=6, reads_per_month=3,
                      read_levels=[1], providers=["aws-s3:standard"])
    q_all = r.policy("mixed").costs[0]
    q_l1 = coarse.policy("mixed").costs[0]
    assert q_l1.read_bytes_per_month < q_all.read_bytes_per_month / 2


# ------------------------------------------------------------------------------- existing store
def test_estimate_of_an_existing_store_is_its_actual_bytes(small_corpus, tmp_path, capsys) -> None:
    url = str(tmp_path / "s.qpyr")
    store = qpyr.pack([str(small_corpus)], url, policy="mixed")
    r = estimate_store(url, **FAST)
    p = r.policies[0]
    on_disk = sum(f.stat().st_size for f in Path(url).rglob("*") if f.is_file())
    assert p.projected_bytes.mean == p.projected_bytes.low == p.projected_bytes.high == store.total_bytes == on_disk
    assert r.mode == "store" and r.items == len(store) and p.objects == sum(1 for f in Path(url).rglob("*") if f.is_file())
    assert [lv.projected_bytes for lv in p.levels] == [ls["stored_bytes"] for ls in store.manifest["level_summary"]]
    assert (r.store_format, r.shard_bytes) == ("2.0", 32 * 2**20)
    files = {str(f.relative_to(url)) for f in Path(url).rglob("*") if f.is_file()}
    shards = [f for f in files if f.startswith("levels/") and "/c/" in f]
    opening = 3 + sum(1 for f in files if f.startswith("catalog/") and not f.endswith("zarr.json"))
    assert p.reads["streaming"][0] == len(shards) + opening
    assert p.reads["random"][0] == sum(lv.items for lv in p.levels) + opening
    jsonschema.Draft202012Validator(SCHEMA).validate(r.to_dict())
    assert main(["estimate", url, "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["policies"][0]["projected_bytes"]["mean"] == on_disk
    assert main(["estimate", url, "-q"]) == 0
    out = capsys.readouterr().out
    assert "existing store" in out and "aws-s3:standard" in out


def test_cli_store_rejects_sample_only_options(small_corpus, tmp_path, capsys) -> None:
    url = str(tmp_path / "s.qpyr")
    qpyr.pack([str(small_corpus)], url)
    assert main(["estimate", url, "--policy", "mixed"]) == 1
    assert "apply to image sources" in capsys.readouterr().err
    assert main(["estimate", url, "--shard-mib", "16"]) == 1
    assert "--shard-mib apply to image sources" in capsys.readouterr().err
    with pytest.raises(EstimateInputError, match="is a qpyr store"):
        estimate([url])


def test_bucket_prefix_source_and_store_on_s3(small_corpus, tmp_path, s3, capsys) -> None:
    """A bucket prefix on a real S3 API (moto's server on loopback, through s3fs): listed, probed
    in threads, unreadable objects skipped and counted; a store in the bucket is estimated as is."""
    import fsspec

    bucket, so = s3
    fs = fsspec.filesystem("s3", **so)
    local = tmp_path / "same"
    local.mkdir()
    for p in sorted(small_corpus.glob("*.png"))[:12]:
        fs.put_file(str(p), f"{bucket[5:]}/photos/{p.name}")
        (local / p.name).write_bytes(p.read_bytes())
    fs.pipe_file(f"{bucket[5:]}/photos/zz-broken.png", b"not an image")
    (local / "zz-broken.png").write_bytes(b"not an image")
    prefix = f"{bucket}/photos/"
    r = estimate([prefix], sample=13, storage_options=so, **FAST)
    assert r.sources == (prefix,) and r.items == 13 and r.readable_items == pytest.approx(12)
    assert r.sample is not None and r.sample.packed == 12 and r.sample.probe_failed == 1
    same = estimate([str(local)], sample=13, **FAST)
    for p in r.policies:  # same pixels, same bytes (names, hence catalogs, differ)
        assert p.data_bytes == pytest.approx(same.policy(p.policy).data_bytes, rel=1e-12)
    opts = [f"--storage-option={k}={v}" for k, v in so.items()]
    assert main(["estimate", prefix, "--sample", "6", "--json", "-q", *opts, "--provider", "gcs:standard"]) == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    assert doc["corpus"]["items"] == 13 and doc["sample"]["probe_failed"] + doc["sample"]["load_failed"] <= 1

    url = f"{bucket}/s.qpyr"
    store = qpyr.pack([str(p) for p in sorted(local.glob("im*.png"))], url, policy="mixed", storage_options=so)
    assert main(["estimate", url, "--json", "-q", *opts, "--provider", "gcs:standard"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mode"] == "store" and doc["corpus"]["items"] == 12
    assert doc["policies"][0]["projected_bytes"]["mean"] == store.total_bytes
    assert doc["policies"][0]["objects"] == len(fs.find(f"{bucket[5:]}/s.qpyr"))


def test_glob_source(small_corpus) -> None:
    r = estimate([str(small_corpus / "im0000*.png")], sample=10, **FAST)
    assert r.items == 10 and r.sample is not None and r.sample.packed == 10


def test_default_policies_follow_qpyr_default_policy(monkeypatch) -> None:
    """Without --policy the comparison is mixed + qpyr.policies.DEFAULT_POLICY, read at call time."""
    import qpyr.policies

    rng = np.random.default_rng(1)
    arrays = {f"a{i}": (rng.random((36 + i, 44, 3)) * 255).astype(np.uint8) for i in range(4)}
    monkeypatch.setattr(qpyr.policies, "DEFAULT_POLICY", "int8")
    r = estimate(arrays, sample=4, **FAST)
    assert [(p.policy, p.requested) for p in r.policies] == [
        ("fp32", False), ("fp16", False), ("lossless", False), ("mixed", True), ("int8", True), ("jpeg-q90", False)]


# ------------------------------------------------------------------------------- CLI outputs
def test_cli_json_matches_schema_and_plot_is_png(small_corpus, tmp_path, capsys) -> None:
    png = tmp_path / "est.png"
    rc = main(["estimate", str(small_corpus), "--sample", "8", "--policy", "mixed", "--policy", "int8",
               "--provider", "aws-s3", "--json", "--plot", str(png), "-q"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    pols = {p["policy"]: p for p in doc["policies"]}
    assert set(pols) == {"fp32", "fp16", "lossless", "mixed", "int8", "jpeg-q90"}
    assert doc["qpyr_estimate"] == "1.1" and doc["store"] == {"format": "2.0", "shard_bytes": 32 * 2**20}
    for p in pols.values():
        pb = p["projected_bytes"]
        assert pb["low"] <= pb["mean"] <= pb["high"]
        assert set(p["reads"]) == {"streaming", "random"}
        assert all(set(c["access"]) == {"streaming", "random"} for c in p["costs"])
        assert {c["storage_class"] for c in p["costs"]} == {
            "aws-s3:standard", "aws-s3:standard-ia", "aws-s3:glacier-ir", "aws-s3:deep-archive"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schema_rejects_incomplete_documents(small_corpus) -> None:
    doc = estimate([str(small_corpus)], sample=4, policies=[], **FAST).to_dict()
    v = jsonschema.Draft202012Validator(SCHEMA)
    v.validate(doc)
    for breaks in (lambda d: d["policies"][0]["projected_bytes"].pop("low"),
                   lambda d: d["policies"][0]["costs"][0].pop("storage_per_month"),
                   lambda d: d["policies"][0].update(surprise=1),
                   lambda d: d["corpus"].update(items=-1),
                   lambda d: d["policies"][0]["costs"][0]["access"].pop("random"),
                   lambda d: d["policies"][0]["reads"]["streaming"].pop("requests"),
                   lambda d: d["store"].update(shard_bytes="32 MiB"),
                   lambda d: d.update(qpyr_estimate="9.0")):
        bad = json.loads(json.dumps(doc))
        breaks(bad)
        assert not v.is_valid(bad)


def test_plot_without_matplotlib_gives_the_install_hint(small_corpus, tmp_path, monkeypatch, capsys) -> None:
    url = str(tmp_path / "s.qpyr")
    qpyr.pack([str(p) for p in sorted(small_corpus.glob("*.png"))[:3]], url)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    assert main(["estimate", url, "--plot", str(tmp_path / "x.png"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and "qpyr[plot]" in err
    assert not (tmp_path / "x.png").exists()


def test_cli_table_and_installed_entry_point(small_corpus) -> None:
    exe = shutil.which("qpyr", path=os.path.dirname(sys.executable)) or shutil.which("qpyr")
    assert exe, "the qpyr console script is not installed"
    out = subprocess.run([exe, "estimate", str(small_corpus), "--sample", "6", "--provider", "gcs:standard", "-q",
                          "--reads-per-month", "4"], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    for word in ("fp32 pyramid", "fp16 pyramid", "JPEG q90", "mixed", "gcs:standard", "vs fp32", "vs JPEG", "SSIM",
                 "streaming | random reads", "PUTs", "format 2.0, 32 MiB shards"):
        assert word in out.stdout
    # every class's cell shows both access patterns' totals
    mixed_row = next(line for line in out.stdout.splitlines() if line.startswith("mixed ") and "/mo [" in line)
    assert mixed_row.count(" | ") == 1


def test_qpyr_estimate_is_lazy_and_reachable_from_import_qpyr() -> None:
    """``import qpyr`` alone gives ``qpyr.estimate(...)``, without importing the estimator up front."""
    code = ("import sys, qpyr; assert 'qpyr.estimate' not in sys.modules; "
            "f = qpyr.estimate; assert callable(f) and f.__name__ == 'qpyr.estimate'; "
            "assert 'qpyr.estimate.estimator' not in sys.modules; "
            "from qpyr.estimate import EstimateResult, estimate, estimate_store; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_python_api_is_qpyr_estimate(small_corpus) -> None:
    assert callable(qpyr.estimate)
    r = qpyr.estimate([str(small_corpus)], sample=5, policies=[], **FAST)
    assert isinstance(r, qpyr.estimate.EstimateResult)
    assert [p.policy for p in r.policies] == ["fp32", "fp16", "lossless", "jpeg-q90"]


# ------------------------------------------------------------------------------- bad input
def test_empty_and_missing_sources(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match="holds no images"):
        estimate([str(tmp_path / "empty")])
    with pytest.raises(InputNotFoundError, match="does not exist"):
        estimate([str(tmp_path / "nope")])
    with pytest.raises(InputNotFoundError, match="No sources"):
        estimate([])
    (tmp_path / "empty.txt").write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(InputNotFoundError, match="names no images"):
        estimate([str(tmp_path / "empty.txt")])
    assert main(["estimate", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qpyr estimate: error:") and "holds no images" in err[0]


def test_unreadable_images_are_skipped_and_counted(small_corpus, tmp_path) -> None:
    d = tmp_path / "mixed"
    d.mkdir()
    for p in sorted(small_corpus.glob("*.png"))[:12]:
        (d / p.name).write_bytes(p.read_bytes())
    (d / "bad-header.png").write_bytes(b"not an image at all")
    good = (d / "im00000.png").read_bytes()
    (d / "truncated.png").write_bytes(good[: len(good) // 3])
    (d / "zero.jpg").write_bytes(b"")
    r = estimate([str(d)], sample=15, **FAST)
    s = r.sample
    assert s is not None and s.probe_failed + s.load_failed == 3 and s.packed == 12
    assert len(s.failures) == 3 and r.items == 15
    assert r.readable_items == pytest.approx(12)
    assert any("unreadable" in n for n in r.notes)
    bad = tmp_path / "allbad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"garbage")
    (bad / "b.png").write_bytes(b"garbage too")
    with pytest.raises(InputError, match="All 2 sampled images are unreadable"):
        estimate([str(bad)])


def test_unknown_provider_lists_known(small_corpus, capsys) -> None:
    with pytest.raises(UnknownStorageClassError, match="Known: aws-s3:standard"):
        estimate([str(small_corpus)], providers=["aws-s3:glacier-deep"])
    assert main(["estimate", str(small_corpus), "--provider", "nocloud:hot"]) == 1
    err = capsys.readouterr().err
    assert "unknown storage class 'nocloud:hot'" in err and "backblaze-b2:standard" in err


def test_malformed_price_file_names_the_field(small_corpus, tmp_path, capsys) -> None:
    data = json.loads(shipped_prices_text())
    data["providers"]["gcs"]["classes"]["standard"]["storage_per_gb_month"] = "cheap"
    p = tmp_path / "prices.json"
    p.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(PriceTableError, match=r"providers\.gcs\.classes\.standard\.storage_per_gb_month"):
        estimate([str(small_corpus)], prices=str(p))
    assert main(["estimate", str(small_corpus), "--prices", str(p)]) == 1
    assert "storage_per_gb_month" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(PriceTableError, match="invalid JSON"):
        estimate([str(small_corpus)], prices=str(tmp_path / "broken.json"))


@pytest.mark.parametrize("argv, word", [
    (["--sample", "-3"], "--sample"), (["--sample", "ten"], "--sample"), (["--count", "0"], "--count"),
    (["--seed", "-1"], "--seed"), (["--months", "0"], "--months"), (["--months", "abc"], "--months"),
    (["--reads-per-month", "-2"], "--reads-per-month"), (["--egress-fraction", "1.5"], "--egress-fraction"),
    (["--egress-fraction", "nan"], "--egress-fraction"), (["--read-level", "-1"], "--read-level"),
    (["--format", "3"], "--format"), (["--shard-mib", "0"], "--shard-mib"),
])
def test_cli_rejects_negative_and_non_numeric_options(small_corpus, capsys, argv, word) -> None:
    assert main(["estimate", str(small_corpus), *argv]) == 2
    err = capsys.readouterr().err
    assert f"argument {word}" in err


@pytest.mark.parametrize("kw, name", [
    ({"sample": 0}, "sample"), ({"sample": 2.5}, "sample"), ({"seed": -1}, "seed"), ({"count": 0}, "count"),
    ({"months": -1}, "months"), ({"months": float("inf")}, "months"), ({"reads_per_month": -1}, "reads_per_month"),
    ({"egress_fraction": 2}, "egress_fraction"), ({"egress_fraction": "0.5"}, "egress_fraction"),
    ({"read_levels": [-1]}, "read_levels"), ({"header_sample": 0}, "header_sample"),
    ({"format": "3.0"}, "format"), ({"shard_bytes": 1000}, "shard_bytes"), ({"shard_bytes": 2**31}, "shard_bytes"),
])
def test_api_rejects_bad_numbers(small_corpus, kw, name) -> None:
    with pytest.raises(EstimateInputError, match=f"^{name}:") as e:
        estimate([str(small_corpus)], **kw)
    assert e.value.parameter == name


def test_bad_policy_is_a_clear_error(small_corpus, capsys) -> None:
    with pytest.raises(PolicyError, match="Unknown policy 'int3'"):
        estimate([str(small_corpus)], policies=["int3"])
    assert main(["estimate", str(small_corpus), "--policy", "mixed:fp16_min=x"]) == 1
    assert "qpyr estimate: error:" in capsys.readouterr().err


# ------------------------------------------------------------------------------- input formats
def test_header_probe_matches_load_for_every_input_format(tmp_path) -> None:
    """The cheap header probe (which sizes the corpus) must agree with what packing loads."""
    import imagecodecs
    import tifffile

    from qpyr.estimate.probe import probe
    from qpyr.io.inputs import discover, load

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    for name, kw in (("a.png", {}), ("b.jpg", {}), ("c.webp", {"lossless": True}), ("d.bmp", {}), ("e.tif", {})):
        Image.fromarray(rgb).save(tmp_path / name, **kw)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("1").save(tmp_path / "bilevel.png")
    Image.fromarray(rng.integers(0, 65535, (23, 17), dtype=np.uint16)).save(tmp_path / "gray16.png")
    rgb16 = rng.integers(0, 65535, (11, 13, 3), dtype=np.uint16)
    (tmp_path / "rgb16.png").write_bytes(imagecodecs.png_encode(rgb16))
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    np.save(tmp_path / "f.npy", rng.normal(size=(9, 7, 2)).astype(np.float32))
    np.save(tmp_path / "i.npy", rng.integers(-5, 5, (6, 6), dtype=np.int32))
    refs = list(discover([str(tmp_path)]))
    assert len(refs) == 14
    for ref in refs:
        g, a = probe(ref), load(ref)
        assert (g.channels, g.height, g.width, g.dtype) == (*a.shape, a.dtype.name), ref.name
    r = estimate([str(tmp_path)], sample=14, **FAST)
    assert r.sample is not None and r.sample.packed == 14
    assert any("JPEG baseline: 6 of 14" in n for n in r.notes)
    for p in r.policies:
        assert p.projected_bytes.low == p.projected_bytes.mean == p.projected_bytes.high


def test_in_memory_arrays_are_a_source() -> None:
    rng = np.random.default_rng(0)
    arrays = {f"a{i}": (rng.random((40 + i, 50, 3)) * 255).astype(np.uint8) for i in range(12)}
    r = estimate(arrays, sample=6, **FAST)
    assert r.items == 12 and r.sample is not None and r.sample.stratified_by == "pixels"
    assert r.sources[0] == "<array 'a0'>"
    p = r.policy("lossless").projected_bytes
    assert 0 < p.low <= p.mean <= p.high
