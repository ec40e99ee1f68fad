"""Token models of the ``ctx`` entropy mode: histograms, their 5-bit log levels, the integer
rANS frequency tables built from them (stream version 4) or the ``constriction`` categorical
models (versions 1 and 2), and the built-in default models (spec/codecs/dct.md §6.2)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qpyr.codecs.dct._contexts import _NCTX
from qpyr.codecs.dct._tokens import _NT


def _histogram(segments: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    hist = np.zeros((_NCTX, _NT), dtype=np.int64)
    for ctx, tok in segments:
        np.add.at(hist, (ctx, tok), 1)
    return hist


def _quantise_histogram(counts: np.ndarray) -> np.ndarray:
    """Counts -> 5-bit log levels (0 = absent, 31 = the most frequent token)."""
    lv = np.zeros(counts.size, dtype=np.int64)
    nz = counts > 0
    if nz.any():
        r = np.log2(counts[nz] / counts.max())
        lv[nz] = np.clip(np.round(2 * r) + 31, 1, 31)
    return lv


RANS_BITS = 16  # frequencies of a version-4 model sum to 2^16
# W[L] = round(2^(16 + L/2)), L = 0..31: the integer weight of level L (sqrt is correctly
# rounded in IEEE 754, so this table is the same everywhere; spec/codecs/dct.md §6.2)
_WEIGHT = np.array([round(math.sqrt(2) ** (L % 2) * 2 ** (16 + L // 2)) for L in range(32)], dtype=np.int64)


def rans_tables(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levels ``int [contexts, 17]`` (0 = absent token; a row of zeros = a context without a
    model) -> ``(start, freq, cum)``: ``int64 [contexts, 17]`` token start and frequency and
    ``int64 [contexts, 18]`` cumulative frequencies, each used row summing to ``2^16``.

    ``freq[t] = max(1, floor(W[L[t]] * 2^16 / S))`` for present tokens (``S`` = the row's sum
    of weights), 0 for absent ones; then the most frequent token (the first on a tie) takes
    the difference to ``2^16``. Unused rows stay all zero."""
    lv = np.asarray(levels, dtype=np.int64)
    w = np.where(lv > 0, _WEIGHT[np.clip(lv, 0, 31)], 0)
    total = w.sum(axis=1, keepdims=True)
    used = total[:, 0] > 0
    freq = np.where(lv > 0, np.maximum(1, (w << RANS_BITS) // np.maximum(total, 1)), 0)
    top = np.argmax(freq, axis=1)
    rows = np.flatnonzero(used)
    freq[rows, top[rows]] += (1 << RANS_BITS) - freq[rows].sum(axis=1)
    cum = np.zeros((lv.shape[0], lv.shape[1] + 1), dtype=np.int64)
    np.cumsum(freq, axis=1, out=cum[:, 1:])
    return cum[:, :-1].copy(), freq, cum


def _model(levels: np.ndarray) -> Any:
    import constriction

    t = int(np.nonzero(levels)[0].max()) + 1
    p = np.where(levels[:t] > 0, np.exp2((levels[:t] - 31) / 2.0), 0.0)
    if t == 1:
        p = np.array([1.0, 0.0])
    return constriction.stream.model.Categorical(p, perfect=False)


def _models(levels: np.ndarray, sizes: np.ndarray, ctxs: list[int]) -> dict[int, Any]:
    """Vectorised :func:`_model` for many contexts (levels concatenated, ``sizes`` = T + 1)."""
    import constriction

    cat = constriction.stream.model.Categorical
    p = np.where(levels > 0, np.exp2((levels - 31) / 2.0), 0.0)
    out: dict[int, Any] = {}
    a = 0
    one = np.array([1.0, 0.0])
    for ci, n in zip(ctxs, sizes.tolist(), strict=True):
        out[ci] = cat(one if n == 1 else p[a : a + n], perfect=False)
        a += n
    return out


# Default token models (spec/codecs/dct.md §6.2, "default models"): for each of the 202
# contexts, the 17 levels L[0..16] as base-32 digits 0-9A-V. Trained by tools/train_dct_models.py
# on scikit-image photos not used by tools/bench_rd.py.
_DEFAULT_LEVELS = (
    "VVTSSRRQUUTRPLA11VKJFHJDGKHA777777VNNILMHJOLD888888VQQLNPJLRPJ777777"
    "VTVPSTNPVUQ999999RRVNQSNPVVR888888ONSKOQLOUVS777777LJRILONLTVT666666"
    "FDIBFINHRTV444444VLKBFJBDFE5555555VUSJMNCGKG9999999QPVJMMFGKE9666666"
    "USVPSTONRKCCCCCCCVRUQTVQQUOFAAAAAATOROQTSQVPAAAAAAAPLNJMONOVQG666666"
    "NKLJLOLNVVJ777777IFGEGHHISVN444444G7EBDFCCOVT777777C59A7A5CHSV555555"
    "555555555HV555555VVVVVVVVVVVVVVVVV4VSQNMKIJ444444448VSPNMLKN88888888"
    "BVRNKHIHJBBBBBBBBVVVVVVVVVVVVVVVVVVTROMIKEF99999999UVUSQOPONA7777777"
    "VUROOMNJKCCCCCCCCVVVVVVVVVVVVVVVVVVTPNJEHCAAAAAAAAAVUSRPONMO97777777"
    "VUSQOMLJNGAAAAAAAVVVVVVVVVVVVVVVVVVTPNKJJGKCCCCCCCCVVTSRQQPTQI777777"
    "VVUTRRQPVUPA66666VVVVVVVVVVVVVVVVVVVSSQNJMPJJJJJJJJVVUSRQPOSOFCCCCCC"
    "TUTTSSRRVUTSQLC117VKC77777777777774VQMGB667744444445VQNKGECC75555555"
    "8VQLIHB8EA8888888VQKFB9B9B99999999VSOKHEACD75555555VSPLJHGFH84444444"
    "VTQMKGFFHDD888888VQJEB999999999999VRMIEA77D55555555VSPLJGFDE42222222"
    "VTQNLIGFF85855555VSNJGEDAAAAAAAAAAVSOKHECCE86666666VTQOMKJHJD3111111"
    "VUSQOMLKLGA411111VVTRPNKFKFFFFFFFFVUSQONLKKEBBBBBBBVUSRPOMLNIB666666"
    "VVUTSSRQVTSPLC1113VME87633333333334VNGB8644444444444VOID944444444444"
    "6VPJFAA8666666666VRLGD866CB4444444VSNHEC97875555555VTOJGE99A74444444"
    "VTPLHEBDC96666666VPJC7333333333333VQKGB665333333333VRMHD866622222222"
    "VSOKFDA8A53333333VQMHDA82222222222VRMHCB85522222222VSOJGD86611111111"
    "VTQNKHECD11111111VSPMKHFFE77777777VTQNLIGFHA6666666VTQOMKHGHC6333333"
    "VVTSRQPORPKB111113VLFCA57B333333335VOJE9BA8555555555VNGBA95955555555"
    "7VOFBA7CB77777777VQJF8533333333333VSNJEC86666666666VSMGE688666666666"
    "VSMG7AA9777777777VPIC5452222222222VQKFC644444444444VSNIEB65633333333"
    "VRLFB694644444444VPJD8631111111111VQKFC773333333333VSNIEA96611111111"
    "VSOJFC96111111111VRNJEBB8444444444VRNJED8A555555555VSOKGDB7922222222"
    "VUROMKIGI91111111VUSRQPONSRPLHC111VFGDED7BE55555555VKLGJHBHJBB777777"
    "VNOJMLDKNED666666VSTNPOINQJI777777STVPSRJPSML888888PQVPSSJQTNO888888"
    "OOVORTKRUOO999999MLVKPQOQVQR999999VKKDGF5DF76333333VTSKMKAHJ77777777"
    "RPVLOMCIK85555555URVRTSGPQFCAAAAAAUQURVVMTUKIAAAAAAQLPORTPTVLK999999"
    "OJMLNPLQVOM999999OMMMOPMQVSQDDDDDDOKMLOONPVTTDDDDDDPJKJONLOUTVFFFFFF"
    "NGKKKGINSSVGGGGGGNNNNNNNNPNVNNNNNNVVVVVVVVVVVVVVVVV3VSPONMJO33333333"
    "8VTQONLLPC8888888FVQNMLJHKFFFFFFFFVVVVVVVVVVVVVVVVVVTQNLMJHL77777777"
    "VUTRRQONRC6666666VTQNMLKLMFFFFFFFFVVVVVVVVVVVVVVVVVVVSPNLKIM99999999"
    "VVUSQPONQI6666666VURPONMLNKECCCCCCVVVVVVVVVVVVVVVVVVVTQONLKNFDDDDDDD"
    "VVUTSRQQTQG777777VVUSRRQQUTME88888VVVVVVVVVVVVVVVVVUVVTRQQQSPLLLLLLL"
    "UUUTTSSRVSNEEEEEETUTTSRRRVURN999996VNGC9866666666663VQLHDB8633333333"
    "7VROMJIGI97777777AVQLGCACAAAAAAAAAVRMIC999999999999VSPLHEA9955555555"
    "VTRPNKJHIA6666666VTPMKIFCCAAAAAAAAVRMHCB99999999999VSOKIECAA55555555"
    "VTRONLKILD4444444VUQNLIHFHD8888888VURMJGECECCCCCCCCVUROMKHGF88888888"
    "VUTRQONMOH5555555VVTRQPNMQKB777777VVTRQNLKMIIIIIIIIVVURPQNMMFFFFFFFF"
    "VVTSRQOOQLDBBBBBBVVUTSRQQTQME777778VKC8888888888888BVOIBBBBBBBBBBBBB"
    "CVNICCCCCCCCCCCCCCVMGCCCCCCCCCCCCCVQJB9999999999999VSNHDBBBBBBBBBBBB"
    "VSNIGCCCCCCCCCCCCVSNGDDDDDDDDDDDDDVNGB8888888888888VOGB9999999999999"
    "VPIFAAAAAAAAAAAAAVQJHEBBBBBBBBBBBBVPH97777777777777VQLFD999999999999"
    "VRMID999999999999VRNHDB99999999999VRMHE8A6666666666VSOJFEA8B88888888"
    "VSOKHE9BA66666666VTPMKHGEC444444449VJFE999999999999JVONJJJJJJJJJJJJJ"
    "KVKMKKKKKKKKKKKKKMVMMMMMMMMMMMMMMMVQF99999999999999VRJJJJJJJJJJJJJJJ"
    "VSKKKKKKKKKKKKKKKVSMMMMMMMMMMMMMMMVOC77777777777777VOHHHHHHHHHHHHHHH"
    "VNHHHHHHHHHHHHHHHVOJJJJJJJJJJJJJJJVPF55555555555555VPKDDDDDDDDDDDDDD"
    "VPIEEEEEEEEEEEEEEVPGGGGGGGGGGGGGGGVRKB7555555555555VRMDBBBBBBBBBBBBB"
    "VRMGAAAAAAAAAAAAAVRNHAAAAAAAAAAAAA"
)
_DEFAULTS: dict[int, Any] = {}
_DEFAULT_TABLES: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []


def default_levels() -> np.ndarray:
    """The default models' levels, ``int64 [contexts, 17]`` (every level >= 1)."""
    return np.array([int(ch, 32) for ch in _DEFAULT_LEVELS], dtype=np.int64).reshape(_NCTX, _NT)


def default_rans_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`rans_tables` of the default models (built once per process)."""
    if not _DEFAULT_TABLES:
        _DEFAULT_TABLES.append(rans_tables(default_levels()))
    return _DEFAULT_TABLES[0]


def _default_models() -> dict[int, Any]:
    """The default models as ``constriction`` models (stream versions 1 and 2)."""
    if not _DEFAULTS:
        _DEFAULTS.update(_models(default_levels().ravel(), np.full(_NCTX, _NT), list(range(_NCTX))))
    return _DEFAULTS
