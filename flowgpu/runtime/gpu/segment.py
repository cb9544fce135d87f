"""DeviceSegment: consecutive GPU stages between one upload and one download.

Streams: the uploader, each stage and the downloader have one CUDA stream
each, so that the upload of item n+1, the kernels on item n and the download
of item n-1 can run at once (copies in each direction use their own copy
engine on a real GPU; they overlap with kernels only when they are on other
streams than the kernels). Events order the streams: each hop records one
after its work and the next hop's stream waits on it, on the GPU.

The host waits for the GPU in two places only: when the bytes of a result are
needed (the download's event, at the segment's exit), and when the pinned
pool hands out a buffer whose copy is still running (backpressure).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ...errors import FlowError, KernelError
from .pool import CancelContext, PinnedPool
from .stage import GpuStageExecutor, as_kernel_error
from .transfer import DeviceItem, Downloader, PendingDownload, Uploader

__all__ = ["DeviceSegment"]



class DeviceSegment:
    """A chain of GPU stages with an uploader at the entry and a downloader at the exit.

    ``stages``: :class:`GpuStageExecutor` objects, or ``(op, params,
    stage_name)`` triples to build them from. ``pool``: a :class:`PinnedPool`
    to share (the segment then does not close it), or None for one of its own
    with ``max_buffers`` buffers. ``max_inflight`` bounds how many items are
    between upload and download in :meth:`map` (default ``max_buffers - 2``,
    so that the buffer the next upload takes has finished its last copy long
    ago). ``keep_on_device=True`` returns :class:`DeviceItem` results instead
    of host arrays, for ``collect(on="device")``.

    An error on the device stops the segment: it closes itself (releasing its
    buffers) and every later call raises ``FlowError`` with that error as
    ``__cause__``. A context manager; leaving the block calls :meth:`close`.
    Not thread-safe: one thread drives a segment (the runtime may share its
    pool, which is).
    """

    def __init__(
        self,
        stages: Sequence[Any],
        *,
        pool: PinnedPool | None = None,
        max_buffers: int = 5,
        max_inflight: int | None = None,
        keep_on_device: bool = False,
        name: str | None = None,
    ):
        self.executors = [
            s if isinstance(s, GpuStageExecutor) else GpuStageExecutor(*s) for s in stages
        ]
        self.name = name or "+".join(e.stage_name for e in self.executors) or "transfer"
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else PinnedPool(max_buffers)
        if max_inflight is None:
            max_inflight = max(1, self.pool.max_buffers - 2)
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
        self.max_inflight = max_inflight
        self.keep_on_device = keep_on_device
        self.uploader = Uploader(self.pool)
        self.downloader = Downloader(self.pool)
        self.error: BaseException | None = None
        self.items = 0
        self._closed = False

    @property
    def streams(self) -> list[Any]:
        """Upload stream, one stream per stage, download stream."""
        return [self.uploader.stream, *(e.stream for e in self.executors),
                self.downloader.stream]

    # -- running -----------------------------------------------------------

    def run_stages(self, item: DeviceItem) -> DeviceItem:
        """Enqueue every stage on ``item``; never blocks the host. Raises KernelError."""
        self._check_open()
        try:
            for ex in self.executors:
                item = ex(item)
        except BaseException as exc:
            self._fail(exc)
            raise
        return item

    def process(self, host_item: Any, *, meta: Any = None,
                ctx: CancelContext | None = None) -> Any:
        """Run one item through the segment and wait for its result.

        ``host_item``: an array, a tuple of arrays, device arrays, or a
        :class:`DeviceItem`. Returns an ndarray (tuple for tuple outputs), or a
        DeviceItem with ``keep_on_device``. Blocks on the pool and on the
        download; raises ``KernelError`` (the segment is then stopped),
        ``Cancelled`` when ``ctx`` is cancelled while blocked.
        """
        out = self._start(host_item, meta, ctx)
        return out if isinstance(out, DeviceItem) else self._finish(out)

    def map(self, items: Iterable[Any], *, ctx: CancelContext | None = None) -> Iterator[Any]:
        """Process ``items`` in order, with up to ``max_inflight`` on the GPU at once.

        Results come out in input order, each as :meth:`process` returns it.
        While the caller consumes result n-1, items n and n+1 are being
        computed and uploaded. Closing the iterator early (or an error)
        discards the items in flight and releases their buffers; the segment
        itself stays open unless the error came from the device.
        """
        pending: collections.deque[PendingDownload] = collections.deque()
        try:
            for x in items:
                if ctx is not None:
                    ctx.check()
                need = len(x) if isinstance(x, tuple) else 1
                while pending and (len(pending) >= self.max_inflight
                                   or self.pool.available < need):
                    yield self._finish(pending.popleft())
                out = self._start(x, None, ctx)
                if isinstance(out, DeviceItem):
                    yield out
                else:
                    pending.append(out)
            while pending:
                yield self._finish(pending.popleft())
        finally:
            for p in pending:
                p.discard()

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Release the pool (if the segment owns it) and the streams. Idempotent.

        Blocks only while copies still running on pool buffers finish.
        """
        if self._closed:
            return
        self._closed = True
        for ex in self.executors:
            ex.close()
        self.uploader.stream = self.downloader.stream = None
        if self._owns_pool:
            self.pool.close()

    def __enter__(self) -> DeviceSegment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"DeviceSegment({self.name!r}, stages={len(self.executors)}, "
                f"items={self.items}, closed={self._closed})")

    # -- internals ---------------------------------------------------------

    def _start(self, x: Any, meta: Any, ctx: CancelContext | None) -> Any:
        """Upload, enqueue the stages, enqueue the download (or keep on device)."""
        self._check_open()
        try:
            item = x if isinstance(x, DeviceItem) else self.uploader(x, meta=meta, ctx=ctx)
        except KernelError as exc:
            self._fail(exc)
            raise
        except Exception as exc:
            if _is_device_error(exc):
                err = self._device_error(exc, "upload")
                self._fail(err)
                raise err from exc
            raise
        item = self.run_stages(item)
        self.items += 1
        if self.keep_on_device:
            return item
        try:
            return self.downloader.start(item, ctx=ctx)
        except Exception as exc:
            if _is_device_error(exc):
                err = self._device_error(exc, "download")
                self._fail(err)
                raise err from exc
            raise

    def _finish(self, pending: PendingDownload) -> Any:
        try:
            return pending.result()
        except Exception as exc:
            # Kernels run asynchronously: a fault in any of them surfaces
            # here, where the host first waits; which stage it was is unknown.
            err = self._device_error(exc, "download")
            self._fail(err)
            raise err from exc

    def _device_error(self, exc: BaseException, where: str) -> KernelError:
        kernels = ", ".join(e.kernel_name for e in self.executors) or None
        what = (f"the device failed during the {where} (stages: "
                f"{', '.join(e.stage_name for e in self.executors) or 'none'}): "
                f"{type(exc).__name__}: {exc}")
        return as_kernel_error(exc, kernel=kernels, stage=self.name, what=what)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, KernelError) and self.error is None:
            self.error = exc
            self.close()

    def _check_open(self) -> None:
        if self.error is not None:
            raise FlowError(f"device segment {self.name!r} stopped after an error") \
                from self.error
        if self._closed:
            raise FlowError(f"device segment {self.name!r} is closed")


def _is_device_error(exc: BaseException) -> bool:
    """True for CUDA driver and support errors (not for a user's bad input)."""
    return type(exc).__name__ in ("CudaAPIError", "CudaDriverError", "CudaSupportError",
                                  "CudaRuntimeError", "NvrtcError", "LinkerError")
