"""Start-up cost of qpyr's compiled (numba) kernels: first use in a fresh cache, then cached.

numba compiles each ``@njit(cache=True)`` kernel on first use and writes the machine code to
its on-disk cache; every later process (a second run, each DataLoader worker, fork or spawn)
loads it instead of compiling. This tool measures, each in a new Python process:

1. ``import qpyr`` alone (the baseline: numba is not imported);
2. the first ``ctx`` decode (entropy decoder, reconstruction), SSIM and uint8 -> float32
   conversion with an **empty** cache directory (``NUMBA_CACHE_DIR``): the compile;
3. the same again, now that the cache is filled: what every later process pays;
4. the same in a ``spawn`` worker process (as a ``DataLoader(multiprocessing_context="spawn")``
   worker starts), and in a ``fork`` worker of a parent that has used the kernels (no load).

Usage: python tools/bench_startup.py [--repeat 3]
Target (issue 15): 3 - 1 < 1 s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_FIRST_USE = """
import time
t0 = time.perf_counter()
import numpy as np, torch
import qpyr
from qpyr.codecs.dct import DctCodec
from qpyr.metrics import ssim
t1 = time.perf_counter()
x = np.random.default_rng(0).integers(0, 256, (3, 128, 128), dtype=np.uint8)
c = DctCodec(quality=80)
y = c.decode(c.encode(x), x.shape)
ssim(torch.from_numpy(x).float() / 255, torch.from_numpy(y).float() / 255)
from qpyr._kernels.convert import planar_float32
planar_float32(np.ascontiguousarray(x.transpose(1, 2, 0)), 1 / 255)
t2 = time.perf_counter()
c.decode(c.encode(x), x.shape)  # the same work again: what it costs without first-use costs
t3 = time.perf_counter()
print(f"{t1 - t0:.4f} {t2 - t1:.4f} {t3 - t2:.4f}")
"""


def _run(code: str, cache: str) -> tuple[float, float]:
    """(import seconds, first-use seconds less the same work done again) of one new process."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    a, b, again = (float(v) for v in out.stdout.split())
    return a, b - again


def _first_use() -> float:
    t = time.perf_counter()
    import numpy as np

    from qpyr.codecs.dct import DctCodec

    x = np.random.default_rng(1).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    c = DctCodec(quality=80)
    c.decode(c.encode(x), x.shape)
    return time.perf_counter() - t


def _worker(q: mp.Queue) -> None:  # type: ignore[type-arg]
    import torch

    torch.set_num_threads(1)  # as every DataLoader worker does first (an OpenMP pool does not survive fork)
    q.put(_first_use())


def _in_worker(method: str) -> float:
    ctx = mp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(q,))
    p.start()
    t = q.get(timeout=300)
    p.join()
    return float(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="cached runs to take the best of (default 3)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qpyr-numba-cache-") as cache:
        imp, cold = _run(_FIRST_USE, cache)
        warm = min((_run(_FIRST_USE, cache) for _ in range(args.repeat)), key=lambda r: r[1])
        print("numba kernels' first use, each in a new process (ctx encode + decode of a 128x128 chunk, SSIM, "
              "uint8 -> float32):")
        print(f"  import qpyr + torch + numpy       {imp:7.3f} s")
        print(f"  first use, empty cache (compile)  {cold:7.3f} s   (first use less the same work again)")
        print(f"  first use, cache filled           {warm[1]:7.3f} s   (target < 1 s; numba's import and its BLAS probe, which "
              "imports scipy.linalg when SciPy is installed, are part of it)")
        os.environ["NUMBA_CACHE_DIR"] = cache
        sys.path.insert(0, str(ROOT))
        spawn = _in_worker("spawn")
        _first_use()  # the parent uses the kernels, then forks
        fork = _in_worker("fork")
        print(f"  spawn worker: import + first use  {spawn:7.3f} s")
        print(f"  fork worker of a warm parent      {fork:7.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
