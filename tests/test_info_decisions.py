"""`qpyr info` shows, per level, how many items took each floor decision (planned, raised,
searched, lossless-fallback), in the table and in `--json`."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np

import qpyr
from qpyr.cli import main
from qpyr.format.manifest import DECISIONS, LEVEL_COLUMNS


def test_info_counts_the_floor_decisions_of_every_level(tmp_path, capsys, small_photos):
    photos = {f"{k}.png": v for k, v in list(small_photos.items())[:3]}
    photos["noise.png"] = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    url = str(tmp_path / "s.qpyr")
    # int8 plan with an SSIM floor: photos keep the plan or are raised; noise falls back to lossless
    st = qpyr.pack(photos, url, policy="dct:quality=30", min_ssim=0.97, levels=2)
    want = []
    for li in range(2):
        col = st.catalog.levels[li][:, LEVEL_COLUMNS.index("decision")]
        names, counts = np.unique(col[col >= 0], return_counts=True)
        want.append({DECISIONS[int(c)]: int(n) for c, n in zip(names, counts, strict=True)})
    assert len({k for w in want for k in w}) >= 2  # the corpus gives more than one decision

    assert main(["info", url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [lv["decisions"] for lv in doc["level_summary"]] == want
    schema = json.loads((Path(__file__).parents[1] / "spec" / "schemas" / "info.schema.json").read_text())
    jsonschema.validate(doc, schema)

    assert main(["info", url]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("floor decisions per level"))
    for li, w in enumerate(want):
        assert f"{li}: " + ", ".join(f"{k} {v}" for k, v in w.items()) in line
