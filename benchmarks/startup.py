"""Start-up: the first run of a graph with numeric stages, cold and warm.

Runs the same small script in fresh processes: first with an empty Numba
cache folder (every kernel compiles), then twice more with that folder
filled (kernels load from the on-disk cache). Prints each process's time to
import flowgpu and to finish its first run, and the warm first run as a
fraction of the cold one.

    python benchmarks/startup.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import flowgpu as fg
from flowgpu.kernels import image
t1 = time.perf_counter()
img = np.random.default_rng(0).random((64, 96, 3), dtype=np.float32)
g = fg.Graph("startup")
s = g.source([img]).map(image.gain, k=1.2).map(image.clip)
s.map(image.gaussian_blur, sigma=1.0).map(image.resize, height=32, width=48).collect("o")
g.run(device="cpu")
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_run_s": t2 - t1}))
"""


def child(cache: str) -> dict[str, float]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> list[str]:
    with tempfile.TemporaryDirectory() as cache:
        cold = child(cache)
        warm = [child(cache) for _ in range(2)]
    best = min(w["first_run_s"] for w in warm)
    lines = ["| process | import s | first run s |", "|---|---:|---:|",
             f"| cold (empty cache) | {cold['import_s']:.2f} | {cold['first_run_s']:.2f} |"]
    lines += [f"| warm #{i + 1} (cached) | {w['import_s']:.2f} | {w['first_run_s']:.2f} |"
              for i, w in enumerate(warm)]
    lines.append(f"\nwarm first run / cold first run = {best / cold['first_run_s']:.1%}")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
