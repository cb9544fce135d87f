"""The flights ETL job against pandas computing the same tables from the same CSV.

Each variant reads ``flights.csv.zip`` (336,776 rows), drops the flights
that did not complete, derives speed, lateness, hour and week, and
aggregates per carrier (with airline names), per origin and month, per hour
and per week. Writing the output files is left out of every variant. Runs
are interleaved; the median per variant is reported, with the tables
checked equal once.

    python benchmarks/flights.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from flowgpu.graphs import flights_etl as etl


def run_flowgpu(rows: int, workers: int) -> dict:
    report = etl.build(rows=rows, workers=workers).run(device="cpu")
    return etl.combine(report)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=50_000, help="rows per chunk")
    ap.add_argument("--workers", type=int, default=2, help="CSV parse workers")
    args = ap.parse_args(argv)
    path = etl.data_dir() / "flights.csv.zip"
    variants = {
        "pandas (read_csv C engine + groupby)": lambda: etl.pandas_reference(),
        "pandas (read_csv engine=pyarrow + groupby)":
            lambda: etl.pandas_reference(engine="pyarrow"),
        f"flowgpu graph ({args.rows:,}-row chunks, device=cpu)":
            lambda: run_flowgpu(args.rows, args.workers),
    }
    ours, ref = run_flowgpu(args.rows, args.workers), etl.pandas_reference()  # warm-up
    for name in ours:  # the same answer, or the timing means nothing
        assert ours[name]["flights"].tolist() == ref[name]["flights"].tolist(), name
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    mbytes = path.stat().st_size / 1e6
    base = statistics.median(times["pandas (read_csv C engine + groupby)"])
    print(f"## Flights ETL: 336,776 rows ({mbytes:.1f} MB zipped CSV), {os.cpu_count()} CPUs, "
          f"median of {args.rounds} interleaved rounds\n")
    print("| variant | seconds | rows/s | vs pandas (C engine) |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"| {name} | {t:.3f} | {336_776 / t / 1e6:.2f} M | {base / t:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
