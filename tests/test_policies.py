"""Issue #7 policies: adaptive, saliency, budget; the manifest plan and ``qpyr info``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import qpyr
from qpyr.codecs.quant import normalize
from qpyr.errors import PolicyError
from qpyr.io.pyramid import build_pyramid
from qpyr.ops.info import info_dict, render_info
from qpyr.policies import parse_policy, plan_levels

U8 = np.dtype(np.uint8)


def _levels(a: np.ndarray, n: int | None = None) -> list[np.ndarray]:
    return build_pyramid(np.moveaxis(a, -1, 0), levels=n)


@pytest.fixture(scope="module")
def crop(small_photos) -> np.ndarray:
    return np.ascontiguousarray(small_photos["astronaut"][:96, :112])


# ------------------------------------------------------------------------------ specs
@pytest.mark.parametrize("spec", ["adaptive", "adaptive:edge_lo=0.05,edge_hi=0.3,q_high=95", "saliency",
                                  "saliency:tile=32,prune=0.02,frames=true", "budget:bytes=50000",
                                  "budget:bytes=9000,weights=2/1/0.5,ssim=0.9,qualities=30/60/90"])
def test_specs_parse_and_round_trip(spec):
    p = parse_policy(spec)
    assert parse_policy(p.spec).spec == p.spec
    assert isinstance(p.describe(), dict)


# ------------------------------------------------------------------------------ adaptive
def test_adaptive_follows_content():
    flat = np.full((96, 96, 3), 120, np.uint8)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    p = parse_policy("adaptive")
    q = [e.codec.to_dict().get("configuration", {}).get("quality", 90) for e in p.plan(_levels(flat, 2), U8)]
    assert q == [70, 70]
    q = [e.codec.to_dict().get("configuration", {}).get("quality", 90) for e in p.plan(_levels(noise, 2), U8)]
    assert q == [93, 93]
    tiers = [p.tier(lv, U8)[0] for lv in _levels(flat, 1) + _levels(noise, 1)]
    assert tiers == [0, 2]


# ------------------------------------------------------------------------------ budget
def test_budget_never_exceeds_and_beats_mixed(crop, tmp_path):
    lv = _levels(crop)
    mixed = plan_levels("mixed", lv, U8)
    mb = sum(e.nbytes for e in mixed)
    pol = parse_policy(f"budget:bytes={mb},qualities=20/50/80/95")
    evals = pol.evaluate(lv, U8)
    front = pol.frontier(lv, U8, evals=evals)
    assert all(a["bytes"] < b["bytes"] and a["distortion"] > b["distortion"] for a, b in zip(front, front[1:], strict=False))
    chosen = pol.choose(evals)
    assert sum(e.nbytes for e in chosen) <= mb
    assert np.mean([e.ssim for e in chosen]) > np.mean([e.ssim for e in mixed])
    smallest = front[0]["bytes"]
    for b in (smallest, smallest + 1, (smallest + mb) // 3, mb // 2, mb):
        got = parse_policy(f"budget:bytes={b},qualities=20/50/80/95").choose(evals)
        assert sum(e.nbytes for e in got) <= b
    with pytest.raises(PolicyError, match=f"minimum is {smallest} bytes"):
        parse_policy(f"budget:bytes={smallest - 1},qualities=20/50/80/95").choose(evals)
    # through the writer: every item's stored level bytes stay within B; the plan records it
    b = (smallest + mb) // 4
    s = qpyr.pack([crop, crop[::-1].copy()], str(tmp_path / "s"), policy=f"budget:bytes={b},qualities=20/50/80/95")
    for i in range(len(s)):
        assert sum(lv["stored_bytes"] for lv in s.item_info(i)["levels"]) <= b
    plan = s.manifest["plan"]
    assert plan["describe"]["bytes"] == b and plan["max_item_bytes"] <= b
    assert s.manifest["optional"] == ["plan"]
    assert "budget" in render_info(info_dict(s))


def test_budget_weights_shift_quality(crop):
    lv = _levels(crop, 3)
    base = parse_policy("budget:bytes=1,qualities=20/50/80/95")
    evals = base.evaluate(lv, U8)
    b = (base.frontier(lv, U8, evals=evals)[0]["bytes"] * 3) // 2
    even = parse_policy(f"budget:bytes={b},qualities=20/50/80/95").choose(evals)
    fine = parse_policy(f"budget:bytes={b},qualities=20/50/80/95,weights=100/1").choose(evals)
    assert fine[0].ssim >= even[0].ssim


# ------------------------------------------------------------------------------ saliency
def test_saliency_classes_and_motion(crop):
    from qpyr.policies.saliency import classify, tile_scores

    assert classify(np.array([0.0, 0.049, 0.05, 0.149, 0.15, 0.349, 0.35, 0.599, 0.6, 1.0])).tolist() == \
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    lv = _levels(crop, 2)
    still = tile_scores(lv[0], U8, 32)
    assert still.max() <= 0.5  # motion 0: score = 0.5 * saliency
    moved = _levels(np.roll(crop, 5, axis=1), 2)
    assert (tile_scores(lv[0], U8, 32, moved[0]) >= still).all()
    p = parse_policy("saliency:tile=32,frames=true")
    assert (p.classes(lv, U8, moved)[0] >= p.classes(lv, U8)[0]).all()
    flat = np.full((64, 64, 3), 90, np.uint8)
    cm = parse_policy("saliency:tile=16").classes(_levels(flat, 2), U8)
    assert (cm[0] == 0).all() and (cm[1] == 1).all()  # flat: pruned, except the coarsest level


def test_saliency_store_fills_pruned_tiles_from_coarser_level(crop, tmp_path):
    img = crop.copy()
    img[:48, :56] = 200  # a flat corner: pruned at level 0
    frames = [img, np.roll(img, 4, axis=1)]
    s = qpyr.pack(frames, str(tmp_path / "s"), policy="saliency:tile=16,frames=true")
    plan = s.manifest["plan"]
    tc = plan["levels"][0]["tile_classes"]
    assert tc[0] > 0 and sum(tc) == 2 * 6 * 7
    assert "int8_bytes" in plan["levels"][0]
    levels = [_levels(f) for f in frames]
    encoded = plan_levels("saliency:tile=16,frames=true", levels[1], U8, previous=levels[0])
    assert encoded[0].tile_map is not None and encoded[0].tile_map.shape == (6, 7)  # the per-tile encoding map
    got = s.read(1)
    coarse = got[1]
    for t in got.values():
        assert not torch.isnan(t).any()
    # pruned samples are the upsampled coarser level (not zeros) and equal what the writer measured
    up = torch.nn.functional.interpolate(coarse[None], size=got[0].shape[-2:], mode="bilinear", align_corners=False)[0]
    ref = torch.from_numpy(normalize(levels[1][0], U8))
    cm = parse_policy("saliency:tile=16,frames=true").classes(levels[1], U8, levels[0])[0]
    mask = torch.from_numpy(np.kron(cm == 0, np.ones((16, 16), bool))[:96, :112])
    assert mask.any() and torch.equal(got[0][:, mask], up[:, mask]) and float(got[0][:, mask].min()) > 0.5
    assert torch.allclose(got[0], ref, atol=0.05)
    assert abs(s.item_info(1)["levels"][0]["ssim"] - encoded[0].ssim) < 1e-5
    region = s.read(1, region=(8, 8, 60, 70))
    assert torch.equal(region[0], got[0][:, 8:60, 8:70])
    batch = s.read_batch([0, 1], 0)
    assert torch.equal(batch[1], got[0])
    # device-side decoding: the worker ships the coarser level with the pruned one, so
    # decode_batch fills the same samples without going back to the store
    from qpyr.torch.collate import collate_list
    from qpyr.torch.datasets import PyramidDataset, decode_batch

    dd = PyramidDataset(str(tmp_path / "s"), levels=[0], device_decode=True)
    payload = dd[1]["levels"][0]
    assert payload.pruned and payload.coarser is not None and payload.nbytes > payload.coarser.nbytes
    dec = decode_batch(collate_list([dd[1]]))["levels"][0]
    assert torch.equal(dec[0], got[0])
    # info: class distribution per level (counts and %), bytes vs uniform int8
    d = info_dict(s)
    assert d["plan"]["levels"][0]["tile_share"][0] == pytest.approx(tc[0] / sum(tc))
    text = render_info(d)
    assert "tile classes per level" in text and "vs int8" in text and "prune" in text
    from jsonschema import Draft202012Validator

    for kind, doc in (("info", d), ("manifest", s.manifest)):
        schema = json.loads((Path(__file__).resolve().parent.parent / "spec" / "schemas" / f"{kind}.schema.json").read_text())
        if kind == "manifest":
            continue  # the manifest schema references the encoding schema; test_spec covers resolution
        assert [e.message for e in Draft202012Validator(schema).iter_errors(doc)] == []


def test_bad_plan_in_manifest_is_refused():
    from qpyr.errors import FormatError
    from qpyr.format.plan import validate_plan

    validate_plan({"policy": "saliency", "describe": {}, "levels": [], "max_item_bytes": 0}, "m")
    for bad in ({"policy": 1, "describe": {}}, {"policy": "x", "describe": {}, "levels": [{"level": 1}]},
                {"policy": "x", "describe": {}, "extra": 1},
                {"policy": "x", "describe": {}, "levels": [{"level": 0, "items": 1, "stored_bytes": 1,
                                                            "max_item_bytes": 1, "tile_classes": [1, 2]}]}):
        with pytest.raises(FormatError):
            validate_plan(bad, "m")


def test_cli_plan_json_frontier_and_pack_adaptive(crop, tmp_path, capsys):
    from qpyr.cli import main

    src = tmp_path / "img.npy"
    np.save(src, crop[:64, :80])
    assert main(["plan", str(src), "--policy", "budget:bytes=12000,qualities=40/80", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["bytes"] <= 12000 and len(d["frontier"]) >= 3
    assert all(f["bytes"] <= g["bytes"] for f, g in zip(d["frontier"], d["frontier"][1:], strict=False))
    assert main(["plan", str(src), "--policy", "budget:bytes=5"]) == 1
    assert "minimum is" in capsys.readouterr().err
    assert main(["pack", str(src), "-o", str(tmp_path / "a.qpyr"), "--policy", "adaptive", "-q"]) == 0
    assert main(["info", str(tmp_path / "a.qpyr"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["plan"]["describe"]["name"] == "adaptive"
    assert all(lv["encoding"].startswith("dct-q") for lv in info["level_summary"])
    assert main(["pack", str(src), "-o", str(tmp_path / "b.qpyr"), "--policy", "saliency:tile=7"]) == 1
    assert "tile in" in capsys.readouterr().err


def test_budget_floor_and_policy_objects(crop, tmp_path):
    from qpyr.policies.budget import BudgetPolicy

    lv = _levels(crop, 3)
    pol = BudgetPolicy(10**9, ssim_floor=0.97, qualities=(20, 50, 80, 95))
    assert parse_policy(pol.spec) == pol  # canonical spec from the fields
    chosen = pol.plan_encoded(lv, U8, slots_per_task=256)
    assert all(e.ssim >= 0.97 for e in chosen)
    p = BudgetPolicy(15000, weights=(2.0, 1.0), qualities=(20, 50, 80, 95))
    s = qpyr.pack([crop], str(tmp_path / "o"), policy=p, levels=3)  # a Policy object, not a spec string
    assert s.manifest["policy"] == "budget:bytes=15000,qualities=20/50/80/95,weights=2/1"
    assert s.manifest["plan"]["max_item_bytes"] <= 15000
