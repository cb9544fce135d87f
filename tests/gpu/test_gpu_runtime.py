"""The GPU runtime on a real GPU: what the simulator cannot show (async copies,
events that really order streams, pinned memory). Run by `make gpu-check`."""

from __future__ import annotations

import numpy as np
import pytest

from flowgpu.device import gpu_available, is_simulator

pytestmark = pytest.mark.gpu
if is_simulator() or not gpu_available():
    pytest.skip("needs a real CUDA GPU", allow_module_level=True)

from numba import cuda  # noqa: E402

from flowgpu import KernelError  # noqa: E402
from flowgpu.runtime.gpu import DeviceSegment, PinnedPool, download, upload  # noqa: E402


@cuda.jit
def _slow_double(x, out, spins):
    # Enough work per element that a missing event wait would let the next
    # stage read unwritten memory.
    i = cuda.grid(1)
    if i < x.size:
        v = x[i]
        for _ in range(spins):
            v = v * 1.0000001
        out[i] = x[i] * 2 + (v - v)


class SlowDouble:
    name = "slow_double"

    def run_gpu(self, arrays, params, stream):
        (x,) = arrays
        out = cuda.device_array(x.shape, x.dtype, stream=stream)
        _slow_double[(x.size + 255) // 256, 256, stream](x, out, params.get("spins", 2000))
        return out


def test_events_order_streams_on_the_device():
    xs = [np.random.default_rng(i).random(1 << 20, dtype=np.float32) for i in range(16)]
    with DeviceSegment([(SlowDouble(), {}, f"s{i}") for i in range(3)], max_buffers=5) as seg:
        for x, out in zip(xs, seg.map(xs), strict=True):
            np.testing.assert_allclose(out, x * 8, rtol=1e-5)
        assert seg.pool.peak_in_use <= 5
    assert seg.pool.allocated_bytes == 0


def test_pool_buffers_are_pinned_and_reused():
    pool = PinnedPool(2)
    stream = cuda.stream()
    for i in range(50):
        x = np.full(1 << 16, i, dtype=np.float32)
        np.testing.assert_array_equal(download(upload(x, stream, pool), stream, pool), x)
    assert sum(pool.allocations.values()) <= 2
    pool.close()
    assert pool.allocated_bytes == 0


def test_cupy_input_is_not_copied():
    cp = pytest.importorskip("cupy")
    x = cp.arange(20, dtype=cp.float32).reshape(4, 5)
    pool = PinnedPool(1)
    item = upload(x, cuda.stream(), pool)
    assert item.array.__cuda_array_interface__["data"][0] == x.data.ptr
    assert pool.allocations == {}
    pool.close()


def test_launch_error_names_stage_and_kernel():
    class BadLaunch:
        name = "bad_launch"

        def run_gpu(self, arrays, params, stream):
            (x,) = arrays
            out = cuda.device_array(x.shape, x.dtype, stream=stream)
            _slow_double[1, 4096, stream](x, out, 1)  # too many threads per block
            return out

    seg = DeviceSegment([(BadLaunch(), {}, "bad")])
    with pytest.raises(KernelError) as info:
        seg.process(np.ones(16, dtype=np.float32))
    assert info.value.stage == "bad" and info.value.kernel == "bad_launch"
    assert seg.pool.closed and seg.pool.allocated_bytes == 0
