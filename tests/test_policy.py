"""Policy spec parsing, quality-target search and floors."""

from __future__ import annotations

import numpy as np
import pytest

from qpyr.errors import PolicyError
from qpyr.io.pyramid import build_pyramid
from qpyr.policies import DEFAULT_POLICY, POLICIES, parse_floors, parse_policy, with_floors


@pytest.mark.parametrize("spec", ["lossless", "fp32", "fp16", "bf16", "int8", "int4", "mixed", "dct", "dct:quality=50,chroma=444",
                                  "quality:ssim=0.95", "quality:psnr=38,chroma=auto", "int8:granularity=block,block=16,clamp=true,range=0..1",
                                  "mixed:fp16_min=512,int8_min=128,int4_granularity=channel"])
def test_specs_parse_and_round_trip(spec):
    p = parse_policy(spec)
    assert parse_policy(p.spec).spec == p.spec
    assert p.spec.split(":")[0] == spec.split(":")[0]


def test_default_policy_is_registered():
    assert DEFAULT_POLICY.split(":")[0] in POLICIES
    parse_policy(None)


@pytest.mark.parametrize("spec,needle", [
    ("jpeg", "Unknown policy 'jpeg'; valid policies: lossless"),
    ("int8:bits=3", "Unknown parameter(s) ['bits'] for policy 'int8'; valid: scheme"),
    ("int8:scheme=sym", "affine|symmetric"),
    ("int8:block=1", "block in 2..256"),
    ("int8:range=1..0", "lo < hi"),
    ("int8:range=zero", "LO..HI"),
    ("dct:quality=0", "quality in 1..100"),
    ("dct:quality=101", "quality in 1..100"),
    ("dct:chroma=422", "chroma 420 or 444"),
    ("quality", "needs ssim=X"),
    ("quality:ssim=1.5", "min-ssim in 0.0..1.0"),
    ("mixed:fp16_min=32,int8_min=64", "thresholds in order"),
    ("lossless:x=1", "valid: codec"),
    ("lossless:codec=png", "qpyr or zstd"),
    ("int8:clamp=maybe", "true/false"),
    ("int8:scheme", "key=value"),
    # content-adaptive, saliency and budget policies
    ("saliency:size=3", "Unknown parameter(s) ['size'] for policy 'saliency'; valid: tile, prune, int4, int8, fp16, frames"),
    ("adaptive:q=3", "valid: edge_lo, edge_hi"),
    ("budget:b=3", "valid: bytes, weights, ssim, qualities"),
    ("budget", "needs bytes=B"),
    ("budget:bytes=0", "bytes in 1.."),
    ("saliency:int4=0.5,int8=0.3", "thresholds in order"),
    ("saliency:prune=2", "prune in 0.0..1.0"),
    ("saliency:tile=48", "tile in [8, 16, 32, 64, 128, 256]"),
    ("adaptive:edge_lo=0.5,edge_hi=0.1", "thresholds in order"),
    ("adaptive:q_low=95,q_high=50", "in order"),
    ("budget:bytes=100,weights=1/x", "number for weights"),
    ("nope", "valid policies: lossless, fp32"),
])
def test_bad_specs_name_the_problem(spec, needle):
    with pytest.raises(PolicyError) as e:
        parse_policy(spec)
    assert needle in str(e.value)
    if "valid policies" in needle:
        for name in ("adaptive", "saliency", "budget"):
            assert name in str(e.value)


def _levels(photo, n=3):
    return build_pyramid(np.moveaxis(photo, -1, 0), levels=n)


def test_mixed_thresholds():
    lv = _levels(np.zeros((512, 512, 3), np.uint8), 5)
    labels = [e.label for e in parse_policy("mixed").plan(lv, np.dtype(np.uint8))]
    assert labels == ["float16", "float16", "uint8", "uint8", "uint4"]


@pytest.mark.parametrize("search", ["exact", "fast"])
@pytest.mark.parametrize("target", [("ssim", 0.95), ("psnr", 36.0)])
def test_quality_policy_meets_floor_at_every_level_and_is_cheapest(small_photos, target, search):
    """Every level meets its floor; ``search=exact`` finds the smallest sufficient quality,
    ``search=fast`` (the default) one at most a few steps above it."""
    key, val = target
    pol = parse_policy(f"quality:{key}={val},search={search}")
    lv = _levels(small_photos["coffee"])
    encs = pol.plan_encoded(lv, np.dtype(np.uint8), slots_per_task=16)
    for e in encs:
        assert getattr(e, key) >= val
        assert e.decision in ("searched", "lossless-fallback")
        if e.encoding.codec.name == "qpyr.dct":
            from qpyr.codecs.dct import chunk_quality
            from qpyr.format.shard import strip_crc

            # pooled: the bucket says "chunk", each chunk's header holds the quality found
            assert e.encoding.codec.to_dict()["configuration"]["quality"] == "chunk"
            assert e.encoding.label.startswith("dct-qvar-")
            qs = {chunk_quality(strip_crc(data, "test")) for _, _, data in e.chunks}
            assert len(qs) == 1
            q = qs.pop()
            from qpyr.policies import dct_encoding
            from qpyr.policies.encode import encode_level

            # the smallest sufficient quality, found by trying every quality below
            least = q
            while least > 1 and getattr(encode_level(lv[e.spec.level], np.dtype(np.uint8),
                                                     dct_encoding(least - 1, "444", np.dtype(np.uint8), "ssim", "jfif"),
                                                     li=e.spec.level, slots_per_task=16), key) >= val:
                least -= 1
            assert least == q if search == "exact" else q - least <= 4, (q, least)


def test_unreachable_floor_falls_back_to_lossless(small_photos):
    pol = parse_policy("quality:psnr=99")
    encs = pol.plan_encoded(_levels(small_photos["rocket"], 2), np.dtype(np.uint8), slots_per_task=16)
    assert all(e.encoding.quantizer.is_lossless and e.decision == "lossless-fallback" for e in encs)


def test_floors_raise_dct_quality_and_int_precision(small_photos):
    lv = _levels(small_photos["astronaut"], 2)
    floors = parse_floors(ssim=0.97)
    encs = with_floors(parse_policy("dct:quality=20"), floors).plan_encoded(lv, np.dtype(np.uint8), slots_per_task=16)
    for e in encs:
        assert e.ssim >= 0.97 and e.decision in ("raised", "lossless-fallback")
    encs = with_floors(parse_policy("int4"), parse_floors(ssim=["0:0.999"])).plan_encoded(lv, np.dtype(np.uint8), slots_per_task=16)
    assert encs[0].ssim >= 0.999 and encs[0].decision == "raised" and encs[0].encoding.label != "uint4"
    assert encs[1].encoding.label == "uint4" and encs[1].decision == "planned"  # no floor on level 1


def test_floor_parsing():
    f = parse_floors(ssim=["0.9", "2:0.97"], psnr=35)
    assert f.at(2) == (0.97, 35.0) and f.at(0) == (0.9, 35.0)
    with pytest.raises(PolicyError, match="min-ssim"):
        parse_floors(ssim="1.2")
    with pytest.raises(PolicyError, match="number"):
        parse_floors(psnr="x")


def test_dct_table_family_parses_records_and_round_trips() -> None:
    from qpyr.codecs.encoding import Encoding
    from qpyr.errors import PolicyError

    x = np.zeros((3, 16, 16), np.uint8)
    assert parse_policy("dct:quality=80").plan([x], np.dtype(np.uint8))[0].label == "dct-q80-420"
    enc = parse_policy("dct:quality=80,tables=ssim").plan([x], np.dtype(np.uint8))[0]
    assert enc.label == "dct-q80-420-ssim"
    assert Encoding.from_dict(enc.to_dict()) == enc
    assert parse_policy("quality:ssim=0.9").family == "ssim"
    assert parse_policy("quality:ssim=0.9,tables=annexk").family == "annexk"
    with pytest.raises(PolicyError, match="tables=annexk"):
        parse_policy("dct:tables=flat")


def test_dct_entropy_mode_is_a_policy_parameter() -> None:
    from qpyr.errors import PolicyError

    x = np.random.default_rng(0).integers(0, 256, (3, 24, 24), dtype=np.uint8)
    enc = parse_policy("dct:quality=80,entropy=fast").plan([x], np.dtype(np.uint8))[0]
    assert enc.label == "dct-q80-420-fast"
    lv = build_pyramid(x, levels=2)
    picked = parse_policy("quality:ssim=0.9,entropy=fast").plan(lv, np.dtype(np.uint8))
    assert all(e.label.endswith("-ssim-fast") or e.label.startswith("lossless") for e in picked)
    with pytest.raises(PolicyError, match="entropy=ctx"):
        parse_policy("quality:ssim=0.9,entropy=zip")
    enc = parse_policy("dct:quality=80,entropy=jfif").plan([x], np.dtype(np.uint8))[0]
    assert enc.label == "dct-q80-420-jfif"
    four = np.random.default_rng(1).integers(0, 256, (4, 24, 24), dtype=np.uint8)  # JPEG codes 1 or 3 channels
    assert parse_policy("dct:quality=80,entropy=jfif").plan([four], np.dtype(np.uint8))[0].label == "dct-q80-420"
