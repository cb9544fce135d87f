"""A fused chain of four elementwise stages against NumPy and against a copy.

On 128 MB of float32 and of float64, in one process, interleaved:

* ``arr.copy()``: an allocating copy of the same bytes, the memory-bandwidth
  floor for an out-of-place stage (read once, write once);
* the same chain in plain NumPy (four temporaries: four reads, four writes);
* the flowgpu graph ``source -> gain -> offset -> clip -> square -> collect``,
  which fusion turns into one kernel (one read, one write).

Prints the median of the repeats and the ratios. ``--device gpu`` runs the
chain on the GPU against a device-to-device copy instead.

    python benchmarks/elementwise.py [--mb 128] [--repeat 5] [--device cpu|gpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import flowgpu as fg


@fg.elementwise
def gain(x, k):
    return x * k


@fg.elementwise
def offset(x, b):
    return x + b


@fg.elementwise
def clip(x, lo, hi):
    return min(max(x, lo), hi)


@fg.elementwise
def square(x):
    return x * x


def numpy_chain(x: np.ndarray) -> np.ndarray:
    return np.square(np.clip(x * 1.5 + (-0.25), 0.0, 1.0))


def build(x, device: str) -> fg.Graph:
    g = fg.Graph("chain")
    s = g.source([x]).map(gain, k=1.5).map(offset, b=-0.25).map(clip, lo=0.0, hi=1.0)
    s.map(square).collect("out", on="device" if device == "gpu" else "host")
    return g


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_cpu(dtype, mb: int, repeat: int) -> list[tuple[str, float]]:
    x = np.random.default_rng(0).random(mb * 2**20 // np.dtype(dtype).itemsize).astype(dtype)
    g = build(x, "cpu")
    out = g.run(device="cpu")["out"][0]  # compile, and check once
    np.testing.assert_allclose(out, numpy_chain(x), rtol=1e-6)
    del out
    copy_t, numpy_t, flow_t = [], [], []
    for _ in range(repeat):
        copy_t.append(timed(x.copy)[0])
        numpy_t.append(timed(lambda: numpy_chain(x))[0])
        flow_t.append(timed(lambda: g.run(device="cpu"))[0])
    return [("arr.copy()", statistics.median(copy_t)),
            ("NumPy chain", statistics.median(numpy_t)),
            ("flowgpu fused", statistics.median(flow_t))]


def bench_gpu(dtype, mb: int, repeat: int) -> list[tuple[str, float]]:
    from numba import cuda

    x = np.random.default_rng(0).random(mb * 2**20 // np.dtype(dtype).itemsize).astype(dtype)
    d = cuda.to_device(x)
    g = build(d, "gpu")
    g.run(device="gpu")
    copy_t, flow_t = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        y = cuda.device_array_like(d)
        y.copy_to_device(d)
        cuda.synchronize()
        copy_t.append(time.perf_counter() - t)
        del y
        t = time.perf_counter()
        g.run(device="gpu")
        cuda.synchronize()
        flow_t.append(time.perf_counter() - t)
    return [("device copy", statistics.median(copy_t)),
            ("flowgpu fused", statistics.median(flow_t))]


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args(argv)
    lines = [f"| dtype | contender ({args.device}, {args.mb} MB) | median s | GB/s (read+write) "
             "| floor / contender |", "|---|---|---:|---:|---:|"]
    for dtype in (np.float32, np.float64):
        rows = (bench_gpu if args.device == "gpu" else bench_cpu)(dtype, args.mb, args.repeat)
        floor = rows[0][1]
        for name, t in rows:
            gbs = 2 * args.mb / 1024 / t
            lines.append(f"| {np.dtype(dtype).name} | {name} | {t:.4f} | {gbs:.1f} | "
                         f"{floor / t:.2f} |")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
