"""The GPU runtime's building blocks, under the CUDA simulator.

Streams are synchronous in the simulator: these tests check data flow and the
order of event records and waits, not overlap (that is benchmarks/gpu_overlap.py).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from flowgpu.device import gpu_available

pytestmark = pytest.mark.cudasim
# Under the simulator in CI; on a real GPU in `make gpu-check` (--real-gpu).
if not gpu_available():  # pragma: no cover - the sim suite runs in its own process
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 or a GPU", allow_module_level=True)

from numba import cuda  # noqa: E402

from flowgpu import Cancelled, Context, FlowError, KernelError, Timeout  # noqa: E402
from flowgpu.runtime import gpu as fgpu  # noqa: E402
from flowgpu.runtime.gpu import (  # noqa: E402
    DeviceItem,
    DeviceSegment,
    GpuStageExecutor,
    PinnedPool,
    download,
    upload,
)


@cuda.jit
def _double(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = x[i] * 2


class DoubleOp:
    """Stand-in for a numeric op: doubles its single input, on the given stream."""

    name = "double"

    def run_gpu(self, arrays, params, stream):
        (x,) = arrays
        out = cuda.device_array(x.shape, x.dtype, stream=stream)
        if x.size:
            flat_in, flat_out = x.reshape(x.size), out.reshape(out.size)
            _double[1, 32, stream](flat_in, flat_out)
        return out


class FailingOp:
    name = "boom_kernel"

    def run_gpu(self, arrays, params, stream):
        raise RuntimeError("launch failed")


def _a45():
    return np.arange(20, dtype=np.float32).reshape(4, 5)


# -- data flow ------------------------------------------------------------------------


def test_three_stage_segment_doubles_three_times():
    x = _a45()
    with DeviceSegment([(DoubleOp(), {}, f"s{i}") for i in range(3)]) as seg:
        out = seg.process(x)
        assert len({id(s) for s in seg.streams}) == 5  # up, 3 stages, down
    np.testing.assert_array_equal(out, x * 8)
    assert out.dtype == np.float32 and out.shape == (4, 5)
    assert seg.pool.allocated_bytes == 0 and seg.pool.in_use == 0


def test_events_recorded_and_waited_in_order(monkeypatch):
    log: list[tuple[str, int, int]] = []
    base = cuda.event

    class SpyEvent:
        def __init__(self, *args, **kwargs):
            self._ev = base()

        def record(self, stream=0):
            log.append(("record", id(self), id(stream)))
            self._ev.record(stream)

        def wait(self, stream=0):
            log.append(("wait", id(self), id(stream)))
            self._ev.wait(stream)

        def synchronize(self):
            log.append(("sync", id(self), 0))

    monkeypatch.setattr(cuda, "event", SpyEvent)
    with DeviceSegment([(DoubleOp(), {}, f"s{i}") for i in range(3)]) as seg:
        np.testing.assert_array_equal(seg.process(_a45()), _a45() * 8)
        up, s0, s1, s2, down = (id(s) for s in seg.streams)
    ops = [(op, stream) for op, _, stream in log]
    assert ops == [
        ("record", up),  # behind the copy out of the pinned buffer: the pool may reuse it
        ("record", up),  # behind the whole upload: the item is ready
        ("wait", s0), ("record", s0),
        ("wait", s1), ("record", s1),
        ("wait", s2), ("record", s2),
        ("wait", down), ("record", down),
        ("sync", 0),  # the only host wait: the download, at the exit
    ]
    # Each wait is on the event the previous hop recorded.
    records = [ev for op, ev, _ in log if op == "record"][1:]
    waits = [ev for op, ev, _ in log if op == "wait"]
    assert waits == records[:-1]
    assert log[-1][1] == records[-1]


def test_map_many_items_in_order_with_bounded_pool():
    xs = [_a45() + i for i in range(12)]
    with DeviceSegment([(DoubleOp(), {}, "d")], max_buffers=3) as seg:
        outs = list(seg.map(xs))
        assert seg.pool.peak_in_use <= 3
        assert seg.pool.allocated_buffers <= 3
    for x, o in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(o, x * 2)


def test_keep_on_device_returns_device_items():
    with DeviceSegment([(DoubleOp(), {}, "d")], keep_on_device=True) as seg:
        item = seg.process(_a45(), meta={"id": 7})
        assert isinstance(item, DeviceItem) and item.meta == {"id": 7}
        item.synchronize()
        np.testing.assert_array_equal(item.array.copy_to_host(), _a45() * 2)
        assert item.nbytes == 80


def test_tuple_items_round_trip():
    pool = PinnedPool(4)
    stream = cuda.stream()
    a, b = _a45(), np.ones(3, dtype=np.int64)
    item = upload((a, b), stream, pool, meta="m")
    assert isinstance(item.array, tuple) and item.meta == "m"
    ra, rb = download(item, stream, pool)
    np.testing.assert_array_equal(ra, a)
    np.testing.assert_array_equal(rb, b)
    pool.close()
    assert pool.allocated_bytes == 0


# -- transfers ------------------------------------------------------------------------


def test_pool_reuse_200_items_three_buffers():
    pool = PinnedPool(3)
    stream = cuda.stream()
    for i in range(200):
        x = np.full((4, 5), i, dtype=np.float32)
        out = download(upload(x, stream, pool), stream, pool)
        np.testing.assert_array_equal(out, x)
    assert all(n <= 3 for n in pool.allocations.values())
    assert pool.allocated_buffers <= 3 and pool.in_use == 0
    pool.close()
    assert pool.allocated_bytes == 0 and pool.allocated_buffers == 0


def test_downloaded_array_does_not_alias_pinned_buffer():
    pool = PinnedPool(1)
    stream = cuda.stream()
    first = download(upload(_a45(), stream, pool), stream, pool)
    download(upload(_a45() + 100, stream, pool), stream, pool)
    np.testing.assert_array_equal(first, _a45())
    pool.close()


def test_zero_size_arrays():
    pool = PinnedPool(2)
    stream = cuda.stream()
    x = np.empty((0, 5), dtype=np.float32)
    item = upload(x, stream, pool)
    assert tuple(item.array.shape) == (0, 5) and item.ready is None
    assert pool.allocations == {}  # no staging for no bytes
    out = download(item, stream, pool)
    assert out.shape == (0, 5) and out.dtype == np.float32
    with DeviceSegment([(DoubleOp(), {}, "d")]) as seg:
        assert seg.process(x).shape == (0, 5)
    pool.close()


@pytest.mark.parametrize("make", [
    lambda: np.arange(40, dtype=np.float32).reshape(4, 10)[:, ::2],  # strided
    lambda: np.asfortranarray(np.arange(20, dtype=np.float64).reshape(4, 5)),
    lambda: np.arange(20, dtype=np.int32).reshape(5, 4).T,
])
def test_non_contiguous_and_fortran_input(make):
    x = make()
    with DeviceSegment([(DoubleOp(), {}, "d")]) as seg:
        np.testing.assert_array_equal(seg.process(x), x * 2)


def test_device_array_input_passes_through(monkeypatch):
    d = cuda.to_device(_a45())
    pool = PinnedPool(1)
    item = upload(d, cuda.stream(), pool)
    assert item.array is d and item.ready is None
    assert pool.allocations == {} and pool.in_use == 0
    with DeviceSegment([(DoubleOp(), {}, "d")]) as seg:
        acquired = []
        real = seg.pool.acquire

        def spy(n, **kw):
            acquired.append(n)
            return real(n, **kw)

        monkeypatch.setattr(seg.pool, "acquire", spy)
        np.testing.assert_array_equal(seg.process(d), _a45() * 2)
        assert acquired == [80]  # only the download staged through the pool
    pool.close()


# -- the pool -------------------------------------------------------------------------


def test_size_classes():
    assert fgpu.size_class(0) == fgpu.size_class(1) == 4096
    assert fgpu.size_class(4097) == 8192
    assert fgpu.size_class(64 << 20) == 64 << 20


def test_buffer_view_and_full_pool_evicts_other_size_class():
    with PinnedPool(1) as pool:
        b = pool.acquire(80)
        v = b.view((4, 5), np.float32)
        assert v.shape == (4, 5) and v.flags.c_contiguous
        pool.release(b)
        big = pool.acquire(10_000)
        assert big.capacity == 16384 and pool.allocated_bytes == 16384
        pool.release(big)
        with pytest.raises(ValueError):
            pool.release(big)
    assert pool.allocated_bytes == 0


def _blocked_acquire(pool, **kwargs):
    """Start a thread blocked in acquire(); return (thread, outcome dict)."""
    blocked = threading.Event()
    pool._on_block = blocked.set
    outcome: dict = {}

    def run():
        try:
            outcome["buf"] = pool.acquire(80, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["exc"] = exc

    t = threading.Thread(target=run, name="acquirer")
    t.start()
    assert blocked.wait(5)
    return t, outcome


def test_blocking_acquire_released_by_release():
    pool = PinnedPool(1)
    held = pool.acquire(80)
    t, outcome = _blocked_acquire(pool)
    pool.release(held)
    t.join(5)
    assert outcome["buf"] is held  # the same buffer, reused
    pool.release(outcome["buf"])
    pool.close()


def test_only_a_flowgpu_context_can_cancel_an_acquire():
    pool = PinnedPool(1)
    with pytest.raises(TypeError, match="flowgpu.Context"):
        pool.acquire(80, ctx=object())
    pool.close()


def test_blocking_acquire_cancelled_by_ctx():
    pool = PinnedPool(1)
    held = pool.acquire(80)
    ctx = Context()
    t, outcome = _blocked_acquire(pool, ctx=ctx)
    ctx.cancel()
    t.join(5)
    assert isinstance(outcome.get("exc"), Cancelled)
    assert pool.in_use == 1
    pool.release(held)
    pool.close()
    assert pool.allocated_bytes == 0


def test_blocking_acquire_ends_at_context_deadline():
    pool = PinnedPool(1)
    held = pool.acquire(80)
    with pytest.raises(Cancelled):  # DeadlineExceeded is a Cancelled
        pool.acquire(80, ctx=Context(timeout=0.05))
    pool.release(held)
    pool.close()


def test_blocking_acquire_woken_by_close_and_timeout():
    pool = PinnedPool(1)
    held = pool.acquire(80)
    with pytest.raises(Timeout):
        pool.acquire(80, timeout=0.01)
    t, outcome = _blocked_acquire(pool)
    pool.close()
    t.join(5)
    assert isinstance(outcome.get("exc"), FlowError)
    pool.release(held)  # released after close: freed
    assert pool.allocated_bytes == 0 and pool.allocated_buffers == 0
    with pytest.raises(FlowError):
        pool.acquire(80)


def test_close_idempotent():
    pool = PinnedPool(2)
    pool.release(pool.acquire(100))
    pool.close()
    pool.close()
    assert pool.closed and pool.allocated_bytes == 0
    seg = DeviceSegment([(DoubleOp(), {}, "d")])
    seg.close()
    seg.close()
    with pytest.raises(FlowError):
        seg.process(_a45())


# -- errors ---------------------------------------------------------------------------


def test_failing_op_raises_kernel_error_and_frees_the_pool():
    seg = DeviceSegment([(DoubleOp(), {}, "first"), (FailingOp(), {}, "explode")])
    with pytest.raises(KernelError) as info:
        seg.process(_a45())
    err = info.value
    assert err.stage == "explode" and err.kernel == "boom_kernel" and err.device == "gpu"
    assert isinstance(err.__cause__, RuntimeError)
    assert "explode" in str(err) and "boom_kernel" in str(err)
    assert seg.error is err
    assert seg.pool.closed and seg.pool.allocated_bytes == 0 and seg.pool.in_use == 0
    with pytest.raises(FlowError) as again:
        seg.process(_a45())
    assert again.value.__cause__ is err
    seg.close()  # still fine after the automatic close


def test_failing_op_in_map_discards_items_in_flight():
    calls = {"n": 0}

    class FailsThird(DoubleOp):
        name = "third"

        def run_gpu(self, arrays, params, stream):
            calls["n"] += 1
            if calls["n"] == 3:
                raise ValueError("bad item")
            return super().run_gpu(arrays, params, stream)

    seg = DeviceSegment([(FailsThird(), {}, "f")], max_buffers=4, max_inflight=2)
    got = []
    with pytest.raises(KernelError):
        for out in seg.map(_a45() + i for i in range(6)):
            got.append(out)
    assert len(got) <= 2
    assert seg.pool.allocated_bytes == 0 and seg.pool.in_use == 0


def test_driver_error_code_is_kept():
    class CudaAPIError(Exception):
        def __init__(self, code, msg):
            super().__init__(code, msg)
            self.code = code

    class DriverFails:
        name = "k"

        def run_gpu(self, arrays, params, stream):
            raise CudaAPIError(700, "CUDA_ERROR_ILLEGAL_ADDRESS")

    ex = GpuStageExecutor(DriverFails(), {}, "stage_x")
    item = DeviceItem(cuda.to_device(_a45()))
    with pytest.raises(KernelError) as info:
        ex(item)
    assert info.value.code == 700 and info.value.stage == "stage_x"
