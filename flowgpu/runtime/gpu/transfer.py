"""Items on the device, and the transfers at a device segment's two ends.

``upload`` stages a host array through a pinned buffer and copies it to the
device asynchronously; ``download`` does the reverse and is the only place the
host waits for the GPU, since the host needs the bytes there. In between,
items travel as :class:`DeviceItem`: the array plus the event that marks it
ready, and consumers order themselves after that event on their own stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...device import cuda_guard
from ._cuda import as_device_array, cuda_module, is_device_array, new_event, new_stream
from .pool import CancelContext, PinnedBuffer, PinnedPool

__all__ = [
    "DeviceItem",
    "upload",
    "download",
    "start_download",
    "PendingDownload",
    "Uploader",
    "Downloader",
]


def _layout(a: Any) -> str:
    """``"F"`` for Fortran-ordered arrays, ``"C"`` otherwise (what staging keeps)."""
    flags = a.flags
    return "F" if flags["F_CONTIGUOUS"] and not flags["C_CONTIGUOUS"] else "C"


class DeviceItem:
    """An item whose data lives on the device.

    ``array`` is one device array, or a tuple of them for multi-array items.
    ``ready`` is the CUDA event recorded on the producer's stream after the
    work that produced ``array``, or None when that work is known complete.
    ``meta`` carries the host-side rest of the item through the segment
    untouched. ``nbytes`` counts device bytes held (for memory budgets).
    """

    __slots__ = ("array", "ready", "meta", "nbytes")

    def __init__(self, array: Any, ready: Any = None, meta: Any = None):
        self.array = array
        self.ready = ready
        self.meta = meta
        self.nbytes = sum(int(a.nbytes) for a in self.arrays)

    @property
    def arrays(self) -> tuple[Any, ...]:
        """``array`` as a tuple, the form ``op.run_gpu`` takes."""
        return self.array if isinstance(self.array, tuple) else (self.array,)

    def wait_on(self, stream: Any) -> None:
        """Make work enqueued later on ``stream`` wait until the item is ready.

        Does not block the host: the wait is enqueued on the GPU.
        """
        if self.ready is not None:
            with cuda_guard():
                self.ready.wait(stream)

    def synchronize(self) -> None:
        """Block the host until the item is ready (for results kept on the device)."""
        ready, self.ready = self.ready, None
        if ready is not None:
            with cuda_guard():
                ready.synchronize()

    def __repr__(self) -> str:
        shapes = [tuple(a.shape) for a in self.arrays]
        pending = self.ready is not None
        return f"DeviceItem(shapes={shapes}, nbytes={self.nbytes}, pending={pending})"


# -- upload ---------------------------------------------------------------------------


def upload(
    host_array: Any,
    stream: Any,
    pool: PinnedPool,
    *,
    meta: Any = None,
    ctx: CancelContext | None = None,
) -> DeviceItem:
    """Copy a host array (or a tuple of them) to the device, asynchronously.

    The array is copied into a pinned buffer (a host copy), the buffer to the
    device on ``stream`` (asynchronous), and an event is recorded after it:
    the returned item's ``ready``. The pinned buffer goes back to the pool at
    once; the pool reuses it only after that event.

    Arrays already on the device (Numba device arrays, CuPy and anything with
    ``__cuda_array_interface__``) pass through without a copy. Zero-size
    arrays get an empty device array and no copy. Non-contiguous arrays are
    gathered into the pinned buffer in one pass.

    Blocks while the pool has no free buffer (see :meth:`PinnedPool.acquire`);
    raises ``Cancelled`` if ``ctx`` is cancelled meanwhile, ``FlowError`` if
    the pool is closed.
    """
    arrays = host_array if isinstance(host_array, tuple) else (host_array,)
    out: list[Any] = []
    copied: list[bool] = []
    event = None
    for a in arrays:
        out.append(_upload_one(a, stream, pool, ctx, copied))
    if copied:
        event = new_event()
        with cuda_guard():
            event.record(stream)
    array = tuple(out) if isinstance(host_array, tuple) else out[0]
    return DeviceItem(array, event, meta)


def _hand_back(used: list[PinnedBuffer], stream: Any, pool: PinnedPool, event: Any) -> None:
    """Release staging buffers, each marked with the event after its copy.

    On a failure before ``event`` was recorded, a fresh one marks the copies
    already enqueued; if even that fails (the device is gone) the buffer is
    still released, so that close() frees it.
    """
    for buf in used:
        try:
            if event is not None:
                buf.event = event
            else:
                buf.record(stream)
        except BaseException:
            buf.event = None
        finally:
            pool.release(buf)


def _upload_one(
    a: Any, stream: Any, pool: PinnedPool, ctx: CancelContext | None, copied: list[bool]
) -> Any:
    if is_device_array(a):
        return as_device_array(a)
    a = np.asarray(a)
    if a.dtype.hasobject:
        raise TypeError(f"cannot send an array of dtype {a.dtype} to the device")
    cuda = cuda_module()
    order = _layout(a)
    if a.size == 0:
        with cuda_guard():
            return cuda.device_array(a.shape, a.dtype, order=order, stream=stream)
    # One buffer at a time, handed back as soon as its copy is enqueued (the
    # pool reuses it only after the event recorded behind the copy): an item
    # of many arrays never needs more buffers than the pool has.
    buf = pool.acquire(a.nbytes, ctx=ctx)
    try:
        staged = buf.view(a.shape, a.dtype, order)
        np.copyto(staged, a)  # host work: outside the guard
        with cuda_guard():
            d = cuda.device_array(a.shape, a.dtype, order=order, stream=stream)
            d.copy_to_device(staged, stream=stream)
        copied.append(True)
    finally:
        _hand_back([buf], stream, pool, None)
    return d


class Uploader:
    """The entry of a device segment: uploads on its own stream.

    Its own stream lets the upload of item n+1 run while a stage's stream
    computes item n. Calls block as :func:`upload` does.
    """

    def __init__(self, pool: PinnedPool, stream: Any = None):
        self.pool = pool
        self.stream = stream if stream is not None else new_stream()

    def __call__(
        self, host_array: Any, *, meta: Any = None, ctx: CancelContext | None = None
    ) -> DeviceItem:
        return upload(host_array, self.stream, self.pool, meta=meta, ctx=ctx)


# -- download -------------------------------------------------------------------------


class PendingDownload:
    """A download enqueued on the GPU whose bytes the host has not taken yet.

    :meth:`result` waits for the copy and returns fresh NumPy arrays;
    :meth:`discard` gives the buffers back without reading them. Either
    releases the pinned buffers; both are idempotent.
    """

    def __init__(self, meta: Any, is_tuple: bool, stream: Any, pool: PinnedPool):
        self.meta = meta
        self._stream = stream
        self._pool = pool
        self._is_tuple = is_tuple
        # (array-or-None, pinned view, buffer): array set for parts that need
        # no pinned copy (zero-size), view/buffer for the others.
        self._parts: list[tuple[Any, np.ndarray | None, PinnedBuffer | None]] = []
        self._event: Any = None
        self._value: Any = None
        self._done = False
        # The device items this download reads: kept referenced until the
        # copy is done, so that their memory is not freed under it.
        self.keepalive: Any = None

    def result(self) -> Any:
        """Block until the copy is done; return an ndarray (or tuple of them).

        This is the segment's exit, the one place the host waits for the GPU
        (on this item's event only, not on later work queued on the stream).
        A device error surfaces here as Numba's ``CudaAPIError``.
        """
        if self._done:
            return self._value
        try:
            if self._event is not None:
                with cuda_guard():
                    self._event.synchronize()
            # Copy out, so that the pinned buffer can be reused at once.
            outs = [a if view is None else np.array(view) for a, view, _ in self._parts]
            self._value = tuple(outs) if self._is_tuple else outs[0]
        finally:
            self._release(ok=True)
        return self._value

    def discard(self) -> None:
        """Release the buffers without reading them (waits for the copy first)."""
        if not self._done:
            self._release(ok=False)

    def _release(self, ok: bool) -> None:
        self._done = True
        bufs = [buf for _, _, buf in self._parts if buf is not None]
        event = self._event
        if not ok and event is None and bufs:
            # Failed between enqueuing a copy and recording its event: mark
            # the copies now, so that the pool waits for them before reuse.
            try:
                event = new_event()
                with cuda_guard():
                    event.record(self._stream)
            except BaseException:
                event = None  # the device is gone; nothing will run any more
        for buf in bufs:
            buf.event = None if ok else event  # ok: that event completed
            self._pool.release(buf)
        self._parts = [(a, None, None) for a, _, _ in self._parts] if ok else []
        self.keepalive = None


def start_download(
    item: DeviceItem, stream: Any, pool: PinnedPool, *, ctx: CancelContext | None = None
) -> PendingDownload:
    """Enqueue the copy of ``item`` to pinned host buffers on ``stream``.

    ``stream`` first waits (on the GPU) for ``item.ready``. Blocks only while
    the pool has no free buffer; see :meth:`PinnedPool.acquire` for what it
    raises. The returned handle owns the buffers until ``result()`` or
    ``discard()``.
    """
    pending = PendingDownload(item.meta, isinstance(item.array, tuple), stream, pool)
    pending.keepalive = item
    try:
        item.wait_on(stream)
        for d in item.arrays:
            if d.size == 0:
                pending._parts.append((np.empty(d.shape, d.dtype), None, None))
                continue
            buf = pool.acquire(int(d.nbytes), ctx=ctx)
            view = buf.view(tuple(d.shape), d.dtype, _layout(d))
            pending._parts.append((None, view, buf))
            with cuda_guard():
                d.copy_to_host(view, stream=stream)
        if any(buf is not None for _, _, buf in pending._parts):
            pending._event = new_event()
            with cuda_guard():
                pending._event.record(stream)
    except BaseException:
        pending.discard()
        raise
    return pending


def download(
    item: DeviceItem, stream: Any, pool: PinnedPool, *, ctx: CancelContext | None = None
) -> Any:
    """Copy ``item`` back to the host: a fresh ndarray, or a tuple for tuple items.

    Waits for ``item.ready`` on ``stream``, copies asynchronously into pinned
    buffers, then blocks the host until that copy is done (the segment's exit)
    and copies the bytes out so that the buffers return to the pool at once.
    Raises as :func:`start_download` and :meth:`PendingDownload.result` do.
    """
    return start_download(item, stream, pool, ctx=ctx).result()


class Downloader:
    """The exit of a device segment: downloads on its own stream.

    Its own stream lets the download of item n-1 run while a stage computes
    item n and the uploader copies item n+1.
    """

    def __init__(self, pool: PinnedPool, stream: Any = None):
        self.pool = pool
        self.stream = stream if stream is not None else new_stream()

    def start(self, item: DeviceItem, *, ctx: CancelContext | None = None) -> PendingDownload:
        return start_download(item, self.stream, self.pool, ctx=ctx)

    def __call__(self, item: DeviceItem, *, ctx: CancelContext | None = None) -> Any:
        return download(item, self.stream, self.pool, ctx=ctx)

