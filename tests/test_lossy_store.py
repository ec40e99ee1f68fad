"""Lossy levels in stores: info's SSIM matches unpacked images; stock zarr decodes qpyr codecs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

import qpyr
from qpyr.cli import main


def test_pack_dct_then_unpack_ssim_matches_info(tmp_path, photos, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for n in ("astronaut", "coffee"):
        Image.fromarray(photos[n]).save(src / f"{n}.png")
    store = tmp_path / "s.qpyr"
    assert main(["pack", str(src), "-o", str(store), "--policy", "dct:quality=90,chroma=420", "--levels", "3", "-q"]) == 0
    assert main(["info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert main(["unpack", str(store), "-o", str(tmp_path / "out"), "-q"]) == 0
    pyr = {n: qpyr.open(str(store)).item_info(f"{n}.png") for n in ("astronaut", "coffee")}
    from qpyr.io.pyramid import build_pyramid

    for it in info["items_detail"]:
        name = it["name"].rsplit(".", 1)[0]
        ref_levels = build_pyramid(np.moveaxis(photos[name], -1, 0), levels=3)
        for lv in it["levels"]:
            got = np.asarray(Image.open(tmp_path / "out" / f"{name}_l{lv['level']}.png"))
            ref = np.moveaxis(ref_levels[lv["level"]], 0, -1).astype(np.uint8)
            s = structural_similarity(ref, got, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
            # unpacked PNGs are the decoded values rounded to 8 bits: SSIM agrees to rounding
            assert abs(s - lv["ssim"]) < 2e-3, (name, lv["level"], s, lv["ssim"])
            assert lv["encoding"] == "dct-q90-420" and pyr[name]["levels"][lv["level"]]["decision"] == "planned"


def test_quality_floor_recorded_in_manifest(tmp_path, small_photos):
    store = qpyr.pack(small_photos, str(tmp_path / "s.qpyr"), policy="dct:quality=30", min_ssim=0.97, levels=2)
    for ls in store.manifest["level_summary"]:
        assert ls["ssim_min"] >= 0.97
        assert set(ls["decisions"]) <= {"raised", "lossless-fallback", "planned"} and "raised" in ls["decisions"]
    assert "floors: ssim=0.97" in store.manifest["policy"]
    for n in small_photos:
        for lv in store.item_info(n)["levels"]:
            assert lv["ssim"] >= 0.97 and lv["decision"] in ("raised", "lossless-fallback")


@pytest.mark.parametrize("policy", ["dct:quality=75,chroma=444", "dct:quality=75,entropy=jfif", "lossless"])
def test_stock_zarr_decodes_qpyr_codecs_through_entry_points(tmp_path, small_photos, policy):
    a = small_photos["chelsea"]
    store = qpyr.pack({"c": a}, str(tmp_path / "s.qpyr"), policy=policy, levels=1, format="1")  # bucket arrays
    lv = store.item_info("c")["levels"][0]
    expect = store.read("c", [0])[0]
    np.save(tmp_path / "expect.npy", (expect.numpy() * 255).round().astype(np.uint8))
    code = f"""
import sys, numpy as np, zarr
arr = zarr.open_array({str(tmp_path / 's.qpyr')!r} + '/' + {lv['bucket']!r} + '/data', mode='r')
x = arr[{lv['slot']}, :, :{a.shape[0]}, :{a.shape[1]}]
assert np.array_equal(x, np.load({str(tmp_path / 'expect.npy')!r}))
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_stock_zarr_decodes_qpyr_tiles_through_entry_points(tmp_path, small_photos):
    a = small_photos["chelsea"]
    store = qpyr.pack({"c": a}, str(tmp_path / "s.qpyr"), policy="saliency", levels=2, format="1")
    lv = next(v for v in store.item_info("c")["levels"] if v["encoding"].startswith("tiles"))
    c, h, w = lv["shape"]
    expect = store.read("c", [lv["level"]])[lv["level"]]
    np.save(tmp_path / "expect.npy", expect.numpy())
    code = f"""
import numpy as np, zarr
arr = zarr.open_array({str(tmp_path / 's.qpyr')!r} + '/' + {lv['bucket']!r} + '/data', mode='r')
x = np.asarray(arr[{lv['slot']}, :, :{h}, :{w}], dtype=np.float32)
e = np.load({str(tmp_path / 'expect.npy')!r})
ok = np.isfinite(x)
assert ok.mean() > 0.9 and np.allclose(x[ok], e[ok], atol=1e-6), (x.max(), e.max())  # normalized [0, 1] values
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_quality_policy_pools_items_of_different_quality_into_one_bucket(tmp_path):
    """Objects per level stay ~N / items-per-shard under the default policy: every item gets its
    own DCT quality (in its chunk header), but all share one bucket per level and size class."""
    from skimage import data

    from qpyr.codecs.dct import chunk_quality
    from qpyr.format.shard import strip_crc
    from qpyr.io.pyramid import build_pyramid
    from qpyr.policies import parse_policy

    img = data.astronaut()
    crops = {f"c{i}": np.ascontiguousarray(img[i * 50:i * 50 + 96, i * 60:i * 60 + 128]) for i in range(6)}
    store = qpyr.pack(crops, str(tmp_path / "s.qpyr"), policy="quality:ssim=0.95", levels=2)
    for ls in store.manifest["level_summary"]:
        assert len(ls["encodings"]) == 1
    buckets = {lv["bucket"] for n in crops for lv in store.item_info(n)["levels"] if lv["level"] == 0}
    assert len(buckets) == 1 and "dct-qvar-444-ssim" in buckets.pop()
    assert all(lv["ssim"] >= 0.95 for n in crops for lv in store.item_info(n)["levels"])
    pol = parse_policy("quality:ssim=0.95")
    qualities = set()
    for a in crops.values():
        e = pol.plan_encoded(build_pyramid(a.transpose(2, 0, 1), levels=1), np.dtype(np.uint8), slots_per_task=16)[0]
        qualities |= {chunk_quality(strip_crc(d, "test")) for _, _, d in e.chunks}
    assert len(qualities) > 1, qualities  # the items really needed different qualities


def test_jfif_store_meets_its_floor_and_reads_the_same_on_every_path(tmp_path, small_photos):
    """entropy=jfif end to end: a 1.1 store whose recorded SSIM is what the reader returns, with
    the same values from read(), the dataset and device-side decoding of compact payloads."""
    import torch

    import qpyr.torch
    from qpyr.io.pyramid import build_pyramid
    from qpyr.metrics import ssim
    from qpyr.torch.collate import collate_list

    items = dict(list(small_photos.items())[:3])
    rgba = np.dstack([small_photos["coffee"], small_photos["coffee"][..., :1]])
    items["rgba"] = rgba  # 4 channels: JPEG cannot code them, the policy gives them ctx
    url = str(tmp_path / "s.qpyr")
    store = qpyr.pack(items, url, policy="quality:ssim=0.95,entropy=jfif,chroma=420", levels=2)
    assert store.manifest["format_version"] == "2.0"  # a 1.x pack of it says 1.1 (entropy "jfif")
    assert qpyr.pack(items, url + "-1", policy="quality:ssim=0.95,entropy=jfif,chroma=420", levels=1,
                     format="1").manifest["format_version"] == "1.1"
    confs = [e["codec"].get("configuration", {}) for e in store.manifest["encodings"].values()
             if e["codec"]["name"] == "qpyr.dct"]
    assert {c.get("entropy") for c in confs} == {"jfif", None}
    ds = qpyr.torch.PyramidDataset(url, levels=[0, 1])
    dd = qpyr.torch.PyramidDataset(url, levels=[0, 1], device_decode=True)
    for i, name in enumerate(store.names):
        info = store.item_info(name)
        got = store.read(name, [0, 1])
        ref = build_pyramid(np.moveaxis(items[name], -1, 0), levels=2)
        sample, payload = ds[i], dd[i]
        dec = qpyr.torch.decode_batch(collate_list([payload]))
        for lv in info["levels"]:
            li = lv["level"]
            s = float(ssim(got[li][None], torch.from_numpy(ref[li].astype(np.float32) / 255)[None]))
            assert lv["ssim"] >= 0.95 and abs(s - lv["ssim"]) < 1e-4, (name, li, s, lv["ssim"])
            assert torch.equal(sample["levels"][li], got[li])
            assert torch.allclose(dec["levels"][li][0], got[li], atol=1e-6)
