"""Per-item overhead: a 3-stage pipeline of trivial functions over small items.

Every contender runs the same three functions over the same 200,000 ints, in
one process, back to back, and must produce the same result (checked);
the table gives items/s and the ratio to flowgpu. Repeated ``--repeat``
times, interleaved, median reported.

Contenders: a plain loop; a hand-made ``queue.Queue`` chain (one thread per
stage); ``concurrent.futures.ThreadPoolExecutor`` (``map`` per stage);
pypeln thread stages; ``dask.bag`` (threaded scheduler, 8 partitions);
flowgpu (one worker per stage, default capacities).

    python benchmarks/overhead.py [--items 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import queue
import statistics
import threading
import time

import flowgpu as fg


def f1(x):
    return x + 1


def f2(x):
    return x * 2


def f3(x):
    return x - 3


def plain(items):
    return [f3(f2(f1(x))) for x in items]


def queue_chain(items):
    end = object()
    qs = [queue.Queue(64) for _ in range(3)]
    out = []

    def stage(fn, q_in, q_out):
        while (x := q_in.get()) is not end:
            q_out.put(fn(x))
        q_out.put(end)

    def sink():
        while (x := qs[2].get()) is not end:
            out.append(x)

    threads = [threading.Thread(target=stage, args=(f2, qs[0], qs[1])),
               threading.Thread(target=stage, args=(f3, qs[1], qs[2])),
               threading.Thread(target=sink)]
    for t in threads:
        t.start()
    for x in items:
        qs[0].put(f1(x))
    qs[0].put(end)
    for t in threads:
        t.join()
    return out


def thread_pool(items):
    with cf.ThreadPoolExecutor(max_workers=2) as ex:
        return list(ex.map(f3, ex.map(f2, ex.map(f1, items, chunksize=256), chunksize=256),
                           chunksize=256))


def pypeln_threads(items):
    import pypeln as pl

    stage = pl.thread.map(f1, items, workers=1, maxsize=64)
    stage = pl.thread.map(f2, stage, workers=1, maxsize=64)
    stage = pl.thread.map(f3, stage, workers=1, maxsize=64)
    return list(stage)


def dask_bag(items):
    import dask
    import dask.bag as db

    with dask.config.set(scheduler="threads"):
        return db.from_sequence(items, npartitions=8).map(f1).map(f2).map(f3).compute()


def flowgpu_graph(items):
    g = fg.Graph("overhead")
    g.source(items).map(f1).map(f2).map(f3).collect("out")
    return g.run()["out"]


CONTENDERS = [("plain loop", plain), ("queue.Queue chain", queue_chain),
              ("ThreadPoolExecutor", thread_pool), ("pypeln (threads)", pypeln_threads),
              ("dask.bag (threads, 8 partitions)", dask_bag), ("flowgpu", flowgpu_graph)]


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    items = list(range(args.items))
    want = plain(items)
    times: dict[str, list[float]] = {name: [] for name, _ in CONTENDERS}
    for _ in range(args.repeat):
        for name, fn in CONTENDERS:
            try:
                t = time.perf_counter()
                got = fn(items)
                times[name].append(time.perf_counter() - t)
            except ImportError as exc:
                times[name] = []
                print(f"{name}: not installed ({exc})")
                continue
            assert sorted(got) == want if "dask" in name else got == want, name
    ours = args.items / statistics.median(times["flowgpu"])
    lines = [f"| contender | items/s (median of {args.repeat}) | flowgpu / contender |",
             "|---|---:|---:|"]
    for name, ts in times.items():
        if not ts:
            lines.append(f"| {name} | not installed | |")
            continue
        rate = args.items / statistics.median(ts)
        lines.append(f"| {name} | {rate:,.0f} | {ours / rate:.2f}x |")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
