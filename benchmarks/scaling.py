"""Scaling: time and peak memory against input size, and throughput against workers.

Each measurement runs in a fresh process (so that its peak resident memory
is its own): a generator source of N items of 1 KB (bytes objects), three
map stages and a sink. Time should grow linearly with N, and peak memory
stay flat (backpressure: the items in flight are bounded by the channel
capacities, not by N). A second table runs the same pipeline with 1 and 2
workers per stage, each item costing ~20 us of GIL-free work (``time.sleep``
stands for I/O or a C library call).

    python benchmarks/scaling.py
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import flowgpu as fg
n, workers, work = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def items():
    for i in range(n):
        yield bytes(1024)
def step(b):
    if work:
        time.sleep(work)
    return b
g = fg.Graph("scale")
s = g.source(items)
for k in range(3):
    s = s.map(step, workers=workers, name=f"step{k}")
s.sink(len)
t = time.perf_counter()
g.run()
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"s": dt, "rss_mb": peak / 1024, "grew_mb": (peak - base) / 1024}))
"""


def child(n: int, workers: int = 1, work: float = 0.0) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(workers), str(work)],
                         capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> list[str]:
    lines = ["| items (1 KB each) | seconds | us/item | peak RSS MB "
             "| RSS growth during the run MB |",
             "|---:|---:|---:|---:|---:|"]
    for n in (10_000, 100_000, 1_000_000):
        r = child(n)
        lines.append(f"| {n:,} | {r['s']:.2f} | {r['s'] / n * 1e6:.1f} | {r['rss_mb']:.0f} | "
                     f"{r['grew_mb']:.1f} |")
    lines += ["", "| workers per stage (20 us GIL-free work per item, 20,000 items) | seconds "
              "| items/s |", "|---:|---:|---:|"]
    for w in (1, 2):
        r = child(20_000, w, 20e-6)
        lines.append(f"| {w} | {r['s']:.2f} | {20_000 / r['s']:,.0f} |")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
