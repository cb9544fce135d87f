"""Items per second through one channel hop between two threads.

``fg.Channel`` against ``queue.Queue`` at the same capacity, measured side by
side in one process and interleaved (A, B, A, B...) so that a noisy neighbour
hurts both alike; the table reports the median of the repeats and the ratio.

    python benchmarks/channel_bench.py [--items 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time

import flowgpu as fg

_END = object()


def hop_queue(capacity: int, n: int) -> float:
    q: queue.Queue = queue.Queue(capacity)

    def produce() -> None:
        put = q.put
        for i in range(n):
            put(i)
        put(_END)

    t = threading.Thread(target=produce)
    start = time.perf_counter()
    t.start()
    get = q.get
    count = 0
    while get() is not _END:
        count += 1
    elapsed = time.perf_counter() - start
    t.join()
    assert count == n
    return n / elapsed


def hop_channel(capacity: int, n: int) -> float:
    ch: fg.Channel[int] = fg.Channel(capacity)

    def produce() -> None:
        send = ch.send
        for i in range(n):
            send(i)
        ch.close()

    t = threading.Thread(target=produce)
    start = time.perf_counter()
    t.start()
    count = 0
    for _ in ch:
        count += 1
    elapsed = time.perf_counter() - start
    t.join()
    assert count == n
    return n / elapsed


def measure(items: int, repeat: int) -> list[tuple[str, int, float, float | None]]:
    rows = []
    for capacity in (1, 64):
        ours, theirs = [], []
        for _ in range(repeat):
            ours.append(hop_channel(capacity, items))
            theirs.append(hop_queue(capacity, items))
        rows.append(("queue.Queue", capacity, statistics.median(theirs), None))
        rows.append(("fg.Channel", capacity, statistics.median(ours),
                     statistics.median(ours) / statistics.median(theirs)))
    rendezvous = [hop_channel(0, items // 4) for _ in range(repeat)]
    rows.append(("fg.Channel", 0, statistics.median(rendezvous), None))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rows = measure(args.items, args.repeat)
    print(f"| channel | capacity | items/s (median of {args.repeat}) | vs queue.Queue |")
    print("|---|---:|---:|---:|")
    for name, cap, rate, ratio in rows:
        r = f"{ratio:.2f}x" if ratio is not None else ""
        print(f"| {name} | {cap} | {rate:,.0f} | {r} |")


if __name__ == "__main__":
    main()
