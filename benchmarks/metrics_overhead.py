"""What the always-on metrics cost: a run of trivial stages with and without them.

The per-item work is a channel hop per stage (the channel benchmark's hop,
inside a run), so this is the worst case for the per-item clocks, channel
depths and byte counts that ``run(metrics=True)`` (the default) keeps.
``metrics=False`` and ``metrics=True`` runs are interleaved (A, B, A, B...)
so that a noisy neighbour hurts both alike; the table gives the median
items/s of each and the cost of the metrics in percent.

    python benchmarks/metrics_overhead.py [--items 100000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import flowgpu as fg


def _identity(x):
    return x


def pipeline(n: int, workers: int) -> fg.Graph:
    g = fg.Graph("hops")
    s = g.source(range(n))
    for k in range(3):
        s = s.map(_identity, name=f"hop{k}", workers=workers, capacity=64)
    s.sink(_identity, name="drain")
    return g


def rate(g: fg.Graph, n: int, **options) -> float:
    start = time.perf_counter()
    g.run(**options)
    return n / (time.perf_counter() - start)


def measure(items: int, repeat: int) -> list[tuple[str, float, float, float]]:
    rows = []
    for workers in (1, 2):
        g = pipeline(items, workers)
        rate(g, items // 10)  # warm up
        off, on = [], []
        for _ in range(repeat):
            off.append(rate(g, items, metrics=False))
            on.append(rate(g, items))
        a, b = statistics.median(off), statistics.median(on)
        rows.append((f"3 map stages x{workers} worker(s) + sink", a, b, (a - b) / a * 100))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    rows = measure(args.items, args.repeat)
    print(f"| pipeline ({args.items:,} ints) | metrics=False items/s | metrics=True items/s "
          f"| cost (median of {args.repeat}) |")
    print("|---|---:|---:|---:|")
    for name, off, on, cost in rows:
        print(f"| {name} | {off:,.0f} | {on:,.0f} | {cost:+.1f}% |")


if __name__ == "__main__":
    main()
