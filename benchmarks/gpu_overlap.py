"""Do upload, kernel and download overlap in a device segment?

    python benchmarks/gpu_overlap.py [--batches 200] [--mb 64]

Runs, in one process and on the same data:

* kernel alone: the kernel on device-resident batches, one stream;
* transfers alone: the same batches through a DeviceSegment with no stage
  (host -> pinned -> device -> pinned -> host, with the same pool);
* total: upload -> kernel -> download through a DeviceSegment.

and prints ``total / max(transfers, kernel)``: 1.0 means perfect overlap, 2.0
none (the goal on a real GPU is <= 1.15). The raw DMA time (pinned memory to
device and back, no host staging) is printed for reference. Without a real
GPU it says so and exits 0 (``--simulator`` runs it under
NUMBA_ENABLE_CUDASIM=1 with tiny batches, to check that it runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Numba frees device memory lazily and flushes every 10 frees with
# cuMemFree, which synchronises the whole device and so drains the pipeline;
# with 64 MB batches a larger queue keeps that out of the steady state.
os.environ.setdefault("NUMBA_CUDA_MAX_PENDING_DEALLOCS_COUNT", "256")
# The simulator must be chosen before numba is imported.
if "--simulator" in sys.argv[1:]:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

# Run from a checkout without installing: the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _scale(x, out):
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for i in range(start, x.size, step):
        out[i] = x[i] * 2.0


class ScaleOp:
    """Doubles a 1-D float32 array: memory-bound, like most pipeline kernels."""

    name = "scale"

    def __init__(self, blocks: int):
        self.kernel = cuda.jit(_scale)  # compiled on first launch
        self.blocks = blocks

    def run_gpu(self, arrays, params, stream):
        (x,) = arrays
        out = cuda.device_array(x.shape, x.dtype, stream=stream)
        self.kernel[self.blocks, 256, stream](x, out)
        return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--mb", type=float, default=64.0, help="batch size in MB (float32)")
    ap.add_argument("--buffers", type=int, default=5, help="pinned buffers in the pool")
    ap.add_argument("--simulator", action="store_true",
                    help="run under the CUDA simulator (correctness only; tiny sizes)")
    args = ap.parse_args(argv)

    from flowgpu.device import cuda_guard, gpu_status, is_simulator

    ok, reason = gpu_status()
    if not ok or (is_simulator() and not args.simulator):
        print(f"gpu_overlap: no GPU ({reason if not ok else 'only the CUDA simulator'}); "
              "nothing measured")
        return 0

    from flowgpu.runtime.gpu import DeviceSegment, GpuStageExecutor, PinnedPool

    n = max(1, int(args.mb * 1e6) // 4)
    if is_simulator():
        n, args.batches = min(n, 1024), min(args.batches, 8)
    blocks = 1 if is_simulator() else 4 * cuda.get_current_device().MULTIPROCESSOR_COUNT
    op = ScaleOp(blocks)
    # A few distinct inputs, cycled: 200 x 64 MB of distinct data would
    # measure page faults, not the pipeline.
    inputs = [np.random.default_rng(i).random(n, dtype=np.float32) for i in range(4)]
    batches = [inputs[i % len(inputs)] for i in range(args.batches)]

    def drain(segment: DeviceSegment) -> None:
        for _ in segment.map(batches):
            pass  # results only flow; checked once, outside the timings

    with PinnedPool(args.buffers) as pool:
        with DeviceSegment([], pool=pool) as transfer_only, \
                DeviceSegment([GpuStageExecutor(op, {}, "scale")], pool=pool) as full:
            # Warm up (compile the kernel, allocate the pinned buffers) and
            # check the results.
            warm = batches[:max(args.buffers, len(inputs))]
            for x, out in zip(warm, full.map(warm), strict=True):
                np.testing.assert_allclose(out, x * 2, rtol=1e-6)
            for x, out in zip(warm, transfer_only.map(warm), strict=True):
                np.testing.assert_array_equal(out, x)

            on_device = [cuda.to_device(x) for x in inputs]
            stream = cuda.stream()

            def kernel_only() -> None:
                for i in range(args.batches):
                    with cuda_guard():
                        op.run_gpu((on_device[i % len(on_device)],), {}, stream)
                stream.synchronize()

            def raw_dma() -> None:
                up, down = cuda.stream(), cuda.stream()
                host = cuda.pinned_array(n, dtype=np.float32)
                back = cuda.pinned_array(n, dtype=np.float32)
                dev = [cuda.device_array(n, np.float32) for _ in range(2)]
                t0 = time.perf_counter()
                for i in range(args.batches):
                    dev[i % 2].copy_to_device(host, stream=up)
                    dev[(i + 1) % 2].copy_to_host(back, stream=down)
                up.synchronize()
                down.synchronize()
                raw["s"] = time.perf_counter() - t0

            raw: dict[str, float] = {}
            t_kernel = _timed(kernel_only)
            t_transfer = _timed(lambda: drain(transfer_only))
            t_total = _timed(lambda: drain(full))
            raw_dma()

    gb = args.batches * n * 4 / 1e9
    floor = max(t_transfer, t_kernel)
    print(f"gpu_overlap: {args.batches} batches of {n * 4 / 1e6:.1f} MB "
          f"({gb:.1f} GB each way), {args.buffers} pinned buffers")
    print(f"  kernel alone      {t_kernel:8.3f} s")
    print(f"  transfers alone   {t_transfer:8.3f} s  (raw DMA both ways: {raw['s']:.3f} s)")
    print(f"  upload+kernel+download {t_total:8.3f} s")
    print(f"  total / max(transfer, kernel) = {t_total / floor:.3f}  (goal <= 1.15)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
