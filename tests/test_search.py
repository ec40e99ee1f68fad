"""The default quality search (``search=fast``): predicted quality, one exact check, correction.

Property: on varied real crops every level meets its floor, exactly measured; the search takes
about two measurements per level (pixel-weighted) and stays within a few percent of the
exhaustive search's bytes. The lossless candidate is tried only when it could win.
"""

from __future__ import annotations

import numpy as np
import pytest

from qpyr.io.pyramid import build_pyramid
from qpyr.policies import parse_policy
from qpyr.policies import search as search_mod
from qpyr.policies.encode import encode_level
from qpyr.policies.lossless import lossless_encoding
from qpyr.policies.search import Searcher, lossless_estimate, lossless_within_reach
from qpyr.samples import random_crops, sample_photo

U8 = np.dtype(np.uint8)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field", "immunohistochemistry",
          "retina", "cat", "camera", "page", "brick", "grass", "moon", "coins")


def _chw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(2, 0, 1)) if a.ndim == 3 else a[None]


@pytest.fixture(scope="module")
def pyramids() -> list[list[np.ndarray]]:
    crops = random_crops([sample_photo(p) for p in PHOTOS], 14, 48, 320, seed=17)
    return [build_pyramid(_chw(a), None) for a in crops]


@pytest.fixture
def made(monkeypatch) -> list[Searcher]:
    """Every :class:`Searcher` the test creates (one per searched level), in order."""
    out: list[Searcher] = []
    init = Searcher.__init__

    def spy(self, *a, **k):
        init(self, *a, **k)
        out.append(self)

    monkeypatch.setattr(Searcher, "__init__", spy)
    return out


def test_fast_search_meets_the_floor_with_about_two_measurements_near_the_exact_bytes(pyramids, made):
    fast, exact = parse_policy("quality:ssim=0.95"), parse_policy("quality:ssim=0.95,search=exact")
    fb = eb = 0
    stats: list[tuple[int, int]] = []  # (pixels, measurements) per searched level
    for lv in pyramids:
        made.clear()
        got = fast.plan_encoded(lv, U8, slots_per_task=16)
        stats += [(s.level.shape[1] * s.level.shape[2], s.measurements) for s in made]
        for li, (e, enc) in enumerate(zip(got, fast.plan(lv, U8), strict=True)):
            assert e.ssim >= 0.95
            # the recorded SSIM is the exact SSIM of what is stored (the concrete encoding)
            again = encode_level(lv[li], U8, enc, li=li, slots_per_task=16)
            assert again.ssim == pytest.approx(e.ssim, abs=1e-9)
        fb += sum(e.nbytes for e in got)
        eb += sum(e.nbytes for e in exact.plan_encoded(lv, U8, slots_per_task=16))
    w = np.array(stats, dtype=np.float64)
    assert float((w[:, 0] * w[:, 1]).sum() / w[:, 0].sum()) <= 2.3
    assert fb <= 1.08 * eb


def test_psnr_floor_and_floors_together(pyramids):
    for spec, check in (("quality:psnr=36", lambda e: e.psnr >= 36), ("quality:ssim=0.9,psnr=33",
                                                                       lambda e: e.ssim >= 0.9 and e.psnr >= 33)):
        for lv in pyramids[:5]:
            assert all(check(e) for e in parse_policy(spec).plan_encoded(lv, U8, slots_per_task=16))


def test_unreachable_floor_returns_none_and_lossless_follows(pyramids):
    s = Searcher(pyramids[0][0], U8, 0, 16)
    assert s.dct_quality("444", 0.99999, None, start=80, family="ssim", entropy="jfif") is None
    assert s.measurements <= 8


def test_lossless_estimate_tracks_jpeg_ls(pyramids):
    ratios = []
    for lv in pyramids:
        for li, level in enumerate(lv):
            real = encode_level(level, U8, lossless_encoding(U8, level.shape[0]), li=li, slots_per_task=16).nbytes
            ratios.append(real / lossless_estimate(level))
    assert 1 / search_mod.LOSSLESS_REACH > 2.0 and min(ratios) > search_mod.LOSSLESS_REACH, min(ratios)


def test_lossless_is_tried_only_within_reach(pyramids, made):
    photo = pyramids[0][0]
    est = lossless_estimate(photo)
    assert not lossless_within_reach(photo, U8, int(0.1 * est))
    assert lossless_within_reach(photo, U8, int(0.9 * est))
    assert lossless_within_reach(photo, U8, None)  # no lossy candidate: lossless is the fallback
    assert lossless_within_reach(photo, np.dtype(np.uint16), 1)  # deeper sources always try it
    # a flat synthetic image: lossless is tried and wins; a photo: it is not tried at all
    flat = np.zeros((3, 96, 128), np.float32)
    flat[:, 20:60, 30:90] = 200.0
    e = parse_policy("quality:ssim=0.95").plan_encoded([flat], U8, slots_per_task=16)[0]
    assert e.encoding.quantizer.is_lossless and e.decision == "searched"
    made.clear()  # only the photo's searches below
    parse_policy("quality:ssim=0.95").plan_encoded(pyramids[1], U8, slots_per_task=16)
    assert made and all(not any(t.encoding.quantizer.is_lossless for t in s.tried) for s in made)


def test_search_param_is_validated():
    from qpyr.errors import PolicyError

    with pytest.raises(PolicyError, match="search=fast"):
        parse_policy("quality:ssim=0.9,search=slow")
    assert parse_policy("quality:ssim=0.9").search == "fast" and parse_policy("quality:ssim=0.9").entropy == "jfif"
    assert parse_policy("quality:ssim=0.9,search=exact,entropy=ctx").entropy == "ctx"
