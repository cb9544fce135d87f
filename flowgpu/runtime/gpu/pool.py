"""PinnedPool: page-locked host staging buffers, reused across items.

Copies between the host and the device only run asynchronously (and so only
overlap with kernels) from page-locked ("pinned") host memory. Pinning is
expensive (milliseconds per call, and it takes memory away from the OS), so a
run allocates a few buffers once and cycles items through them.

A buffer handed back with :meth:`PinnedPool.release` may still be the source
or target of a copy the GPU has not finished; the buffer carries the event
recorded after that copy, and the pool waits for it before handing the buffer
out again. That host wait only happens when the pool wraps around onto a
buffer whose copy is still running, which is the backpressure we want.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import numpy as np

from ... import _waiter
from ...context import Context
from ...device import cuda_guard
from ...errors import FlowError, Timeout
from ._cuda import cuda_module, new_event

__all__ = ["PinnedBuffer", "PinnedPool", "size_class", "CancelContext"]

#: The smallest size class: one page. Smaller requests share it.
MIN_CLASS = 4096

#: What a blocked acquire can be cancelled by: a flowgpu Context, which wakes
#: it the moment it is cancelled or its deadline passes.
CancelContext = Context


def _copy_done(buf: PinnedBuffer) -> bool:
    """True when no copy on ``buf`` is pending; never blocks.

    The simulator's events have no ``query()``: its streams are synchronous,
    so every copy is complete by the time the host looks. No cuda_guard: on a
    real GPU it is a no-op, and under the simulator no CUDA call is made.
    """
    event = buf.event
    if event is None:
        return True
    query = getattr(event, "query", None)
    if query is None or query():
        buf.event = None
        return True
    return False


def size_class(nbytes: int) -> int:
    """The buffer capacity used for a request of ``nbytes``: the next power of two.

    Powers of two keep the number of classes small (so buffers are reused
    across slightly different item sizes) at the cost of at most 2x slack.
    """
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    return max(MIN_CLASS, 1 << max(0, int(nbytes) - 1).bit_length())


class PinnedBuffer:
    """One pinned host buffer of ``capacity`` bytes, owned by a :class:`PinnedPool`.

    ``event`` is the CUDA event recorded after the last asynchronous copy that
    reads or writes it (None when no copy is pending).
    """

    __slots__ = ("host", "capacity", "event", "_pool", "_in_use")

    def __init__(self, host: np.ndarray, pool: PinnedPool):
        self.host = host  # 1-D uint8, page-locked
        self.capacity = int(host.nbytes)
        self.event: Any = None
        self._pool = pool
        self._in_use = False

    def view(self, shape: tuple[int, ...], dtype: Any, order: str = "C") -> np.ndarray:
        """The first bytes of the buffer seen as an array of ``shape`` and ``dtype``."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes > self.capacity:
            raise ValueError(f"{nbytes} bytes do not fit in a {self.capacity}-byte buffer")
        flat = self.host[:nbytes].view(dtype)
        return flat.reshape(shape, order="F" if order == "F" else "C")

    def record(self, stream: Any, event: Any = None) -> Any:
        """Mark the copies enqueued so far on ``stream`` as the buffer's pending use.

        Records ``event`` (a fresh one if None) on ``stream`` and returns it, so
        that the caller can share it (for instance as a DeviceItem's ``ready``).
        Does not block.
        """
        if event is None:
            event = new_event()
            with cuda_guard():
                event.record(stream)
        self.event = event
        return event

    def wait_idle(self, raise_errors: bool = True) -> None:
        """Block the host until the pending copy, if any, has completed.

        With ``raise_errors=False`` (freeing paths), a device error is
        swallowed: the context is broken, no copy will run any more, and the
        buffer must be freed regardless.
        """
        event, self.event = self.event, None
        if event is not None:
            try:
                with cuda_guard():
                    event.synchronize()
            except Exception:
                if raise_errors:
                    raise


class PinnedPool:
    """A bounded pool of pinned host buffers, reused across items.

    At most ``max_buffers`` buffers exist at once, of any sizes; free buffers
    are kept per size class (see :func:`size_class`) and handed out oldest
    first, so that the one most likely to have finished its copy is reused.
    When a size class has no free buffer and the pool is full, a free buffer
    of another class is freed to make room.

    Counters: ``allocated_bytes`` and ``allocated_buffers`` (pinned memory held
    now), ``in_use`` and ``peak_in_use`` (buffers handed out), ``allocations``
    (buffers ever allocated, per size class). Thread-safe. Usable as a context
    manager: leaving the block calls :meth:`close`.
    """

    def __init__(self, max_buffers: int, device_id: int = 0):
        if max_buffers < 1:
            raise ValueError(f"max_buffers must be >= 1, got {max_buffers}")
        self.max_buffers = int(max_buffers)
        self.device_id = int(device_id)
        # Guards every field below. Who waits: acquire(), parked on its own
        # Waiter (queued in _waiters) when no buffer can be handed out. Who
        # wakes it: release() and close() (all of them: each retries), and
        # its context's cancel (flowgpu's Context completes parked Waiters).
        self._lock = threading.Lock()
        self._waiters: list[_waiter.Waiter] = []
        self._free: dict[int, collections.deque[PinnedBuffer]] = {}
        self._closed = False
        self.allocated_buffers = 0
        self.allocated_bytes = 0
        self.in_use = 0
        self.peak_in_use = 0
        self.allocations: collections.Counter[int] = collections.Counter()
        # Testing seam: called (under the pool's lock) just before acquire()
        # blocks, so that tests can order steps without sleeping.
        self._on_block: Any = None

    # -- public API --------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def available(self) -> int:
        """Buffers that could be handed out now without blocking."""
        with self._lock:
            return self.max_buffers - self.in_use

    def acquire(
        self, nbytes: int, ctx: CancelContext | None = None, timeout: float | None = None
    ) -> PinnedBuffer:
        """Take a buffer of at least ``nbytes`` bytes.

        Blocks while all ``max_buffers`` buffers are in use, and, when the
        buffer handed out still has a copy in flight, until that copy ends.
        Raises :class:`~flowgpu.errors.Timeout` after ``timeout`` seconds,
        :class:`~flowgpu.errors.Cancelled` (from ``ctx.check()``) as soon as
        ``ctx`` is cancelled, and :class:`~flowgpu.errors.FlowError` once the
        pool is closed (waiters blocked at that moment are woken and raise).
        """
        cls = size_class(nbytes)
        deadline = None if timeout is None else time.monotonic() + timeout
        buf, evicted = self._reserve(cls, ctx, deadline)
        if evicted is not None:
            # Its copy may still be running: freeing pinned memory under a
            # DMA is undefined behaviour.
            evicted.wait_idle(raise_errors=False)
            del evicted
        if buf is None:
            try:
                buf = self._allocate(cls)
            except BaseException:
                with self._lock:
                    self.allocated_buffers -= 1
                    self.allocated_bytes -= cls
                    self.in_use -= 1
                    wake = self._take_waiters_locked()
                self._wake(wake)
                raise
        buf.wait_idle()
        buf._in_use = True
        return buf

    def release(self, buf: PinnedBuffer) -> None:
        """Hand a buffer back. Never blocks.

        The buffer may still have a copy in flight, provided it was marked
        with :meth:`PinnedBuffer.record`; it is reused only once that copy is
        done. A buffer released after :meth:`close` is freed.
        """
        if buf._pool is not self:
            raise ValueError("this buffer belongs to another pool")
        with self._lock:
            if not buf._in_use:
                raise ValueError("buffer released twice")
            buf._in_use = False
            self.in_use -= 1
            if self._closed:
                self.allocated_buffers -= 1
                self.allocated_bytes -= buf.capacity
                drop = buf
            else:
                self._free.setdefault(buf.capacity, collections.deque()).append(buf)
                drop = None
            wake = self._take_waiters_locked()
        self._wake(wake)
        if drop is not None:
            drop.wait_idle(raise_errors=False)

    def close(self) -> None:
        """Free every buffer not in use, and those in use as they are released.

        Idempotent. Blocks only until pending copies on free buffers end.
        Blocked and later :meth:`acquire` calls raise ``FlowError``.
        """
        with self._lock:
            self._closed = True
            bufs = [b for q in self._free.values() for b in q]
            self._free.clear()
            for b in bufs:
                self.allocated_buffers -= 1
                self.allocated_bytes -= b.capacity
            wake = self._take_waiters_locked()
        self._wake(wake)
        for b in bufs:
            b.wait_idle(raise_errors=False)

    def __enter__(self) -> PinnedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"PinnedPool(max_buffers={self.max_buffers}, in_use={self.in_use}, "
            f"allocated_bytes={self.allocated_bytes}, closed={self._closed})"
        )

    # -- internals ---------------------------------------------------------

    def _reserve(
        self, cls: int, ctx: CancelContext | None, deadline: float | None
    ) -> tuple[PinnedBuffer | None, PinnedBuffer | None]:
        """Reserve a buffer: ``(reused buffer or None to allocate, evicted buffer)``.

        Parks on a fresh Waiter while none can be handed out, and retries when
        woken (by a release, close or cancel).
        """
        if ctx is not None and not isinstance(ctx, Context):
            raise TypeError(f"ctx must be a flowgpu.Context, not {type(ctx).__name__}")
        register = ctx._register if ctx is not None else None
        while True:
            with self._lock:
                taken = self._try_take_locked(cls, ctx)
                if taken is not None:
                    return taken
                waiter = _waiter.Waiter()
                self._waiters.append(waiter)
                if self._on_block is not None:
                    self._on_block()
            wait = None
            if deadline is not None:
                wait = deadline - time.monotonic()
            if register is not None:
                remaining = ctx.remaining()
                if remaining is not None:  # a deadline passes without anyone waking us
                    wait = remaining if wait is None else min(wait, remaining)
                if not register(waiter):  # already done: check() raises below
                    wait = 0.0
            _waiter.note_blocked(1)
            try:
                waiter.park(None if wait is None else max(0.0, wait))
            finally:
                _waiter.note_blocked(-1)
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                if register is not None:
                    ctx._unregister(waiter)
            if deadline is not None and time.monotonic() >= deadline:
                with self._lock:
                    taken = self._try_take_locked(cls, ctx)
                if taken is not None:
                    return taken
                raise Timeout(f"no pinned buffer became free within the timeout "
                              f"({self.max_buffers} of {self.max_buffers} in use)")

    def _try_take_locked(
        self, cls: int, ctx: CancelContext | None
    ) -> tuple[PinnedBuffer | None, PinnedBuffer | None] | None:
        if self._closed:
            raise FlowError("the pinned buffer pool is closed")
        if ctx is not None:
            ctx.check()
        if self.in_use >= self.max_buffers:
            return None
        queue = self._free.get(cls)
        if queue:
            idle = next((b for b in queue if _copy_done(b)), None)
            if idle is not None or self.allocated_buffers >= self.max_buffers:
                # Reuse a buffer whose copy is done; or, when the pool may
                # not grow, the oldest one (the caller then waits for it).
                buf = idle if idle is not None else queue[0]
                queue.remove(buf)
                self._mark_taken()
                return buf, None
            # Every free buffer of this size is still being copied: rather
            # than wait, grow the pool while it may.
        evicted = None
        if self.allocated_buffers >= self.max_buffers:
            # Full, with free buffers of other sizes only: trade one in.
            evicted = next(q for q in self._free.values() if q).popleft()
            self.allocated_buffers -= 1
            self.allocated_bytes -= evicted.capacity
        self.allocated_buffers += 1
        self.allocated_bytes += cls
        self.allocations[cls] += 1
        self._mark_taken()
        return None, evicted

    def _mark_taken(self) -> None:
        self.in_use += 1
        self.peak_in_use = max(self.peak_in_use, self.in_use)

    def _take_waiters_locked(self) -> list[_waiter.Waiter]:
        waiters, self._waiters = self._waiters, []
        return waiters

    @staticmethod
    def _wake(waiters: list[_waiter.Waiter]) -> None:
        for w in waiters:
            if w.try_claim():
                w.complete(0, None)

    def _allocate(self, cls: int) -> PinnedBuffer:
        cuda = cuda_module()
        with cuda_guard():
            if self.device_id:
                with cuda.gpus[self.device_id]:
                    host = cuda.pinned_array(cls, dtype=np.uint8)
            else:
                host = cuda.pinned_array(cls, dtype=np.uint8)
        return PinnedBuffer(host, self)
