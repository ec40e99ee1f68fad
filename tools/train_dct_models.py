"""Train the default token models of ``qpyr.dct`` (spec/codecs/dct.md §6.2, default models).

Sums token counts per context over 32/64/128-pixel crops of scikit-image photos that
tools/bench_rd.py does not use, at qualities 30..95, 4:2:0 and 4:4:4 (and grey images as
one plane), adds 1 to every count (every token stays codable), and quantises each context's
histogram to 5-bit levels as the encoder does. Prints the ``_DEFAULT_LEVELS`` string.

Usage: python tools/train_dct_models.py
"""

from __future__ import annotations

import numpy as np


def train() -> str:
    from skimage import data

    from qpyr.codecs import dct

    rgb = [
        data.retina(),
        data.immunohistochemistry(),
        data.hubble_deep_field(),
        data.colorwheel(),
        data.logo()[..., :3],
    ]
    grey = [
        data.camera(),
        data.moon(),
        data.brick(),
        data.grass(),
        data.gravel(),
        data.coins(),
        data.clock(),
        data.cell(),
    ]
    imgs = [np.ascontiguousarray(a.transpose(2, 0, 1)) for a in rgb] + [a[None] for a in grey]
    hist = np.zeros((dct._NCTX, dct._NT), dtype=np.int64)
    rng = np.random.default_rng(0)
    for img in imgs:
        _, h, w = img.shape
        for s in (32, 64, 128):
            for _ in range(6):
                y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
                crop = np.ascontiguousarray(img[:, y : y + s, x : x + s])
                for q in (30, 50, 75, 90, 95):
                    for chroma in ("420", "444") if crop.shape[0] == 3 else ("444",):
                        codec = dct.DctCodec(quality=q, chroma=chroma)
                        coefs, classes = codec._coefficients(crop)
                        segments, _ = dct._symbols(coefs, classes)
                        hist += dct._histogram(segments)
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
    out = []
    for c in range(dct._NCTX):
        lv = np.maximum(dct._quantise_histogram(hist[c] + 1), 1)
        out.append("".join(digits[v] for v in lv))
    return "".join(out)


if __name__ == "__main__":
    s = train()
    print("\n".join(s[i : i + 17 * 4] for i in range(0, len(s), 17 * 4)))
