"""GpuStageExecutor: one numeric stage of a device segment, on its own stream."""

from __future__ import annotations

from typing import Any

from ...device import cuda_guard
from ...errors import Cancelled, KernelError
from ._cuda import new_event, new_stream
from .transfer import DeviceItem

__all__ = ["GpuStageExecutor", "as_kernel_error"]


def as_kernel_error(
    exc: BaseException, *, kernel: str | None, stage: str | None, what: str | None = None
) -> KernelError:
    """Wrap any failure of GPU work as a :class:`KernelError` naming kernel and stage.

    The original exception becomes ``__cause__``; a CUDA driver error code
    (Numba's ``CudaAPIError.code``) is kept as ``code``, None otherwise.
    """
    detail = what or f"{type(exc).__name__}: {exc}"
    err = KernelError(detail, kernel=kernel, stage=stage, device="gpu")
    err.code = getattr(exc, "code", None)  # type: ignore[attr-defined]
    err.__cause__ = exc
    return err


class GpuStageExecutor:
    """Runs ``op.run_gpu`` for one stage, on a CUDA stream of its own.

    A stage's own stream lets its kernels overlap with the neighbouring
    stages' work and with the transfers; ordering between stages comes from
    events, never from host synchronisation. ``op`` provides
    ``run_gpu(arrays, params, stream) -> device array`` (which enqueues work on
    ``stream`` and does not synchronise) and ``name``.
    """

    def __init__(self, op: Any, params: dict[str, Any] | None, stage_name: str):
        self.op = op
        self.params = dict(params or {})
        self.stage_name = stage_name
        self.kernel_name = str(getattr(op, "name", None) or getattr(op, "__name__", repr(op)))
        self.stream: Any = new_stream()
        self.items = 0

    def __call__(self, item: DeviceItem) -> DeviceItem:
        """Enqueue the stage's work on ``item``; return the output, not yet ready.

        Never blocks the host on the GPU: the stream waits for ``item.ready``
        and the returned item's ``ready`` is an event recorded after the work.
        Raises :class:`KernelError` (kernel and stage named, original error as
        ``__cause__``, driver ``code`` kept) for any failure of ``run_gpu``:
        compile errors, launch errors, driver errors. ``Cancelled`` passes
        through.
        """
        if self.stream is None:
            raise KernelError("the stage executor is closed", kernel=self.kernel_name,
                              stage=self.stage_name, device="gpu")
        try:
            with cuda_guard():
                item.wait_on(self.stream)
                out = self.op.run_gpu(item.arrays, self.params, self.stream)
                ready = new_event()
                ready.record(self.stream)
        except Cancelled:
            raise
        except KernelError as exc:
            if exc.stage is not None:
                raise
            raise as_kernel_error(exc, kernel=exc.kernel or self.kernel_name,
                                  stage=self.stage_name, what=str(exc)) from exc
        except Exception as exc:
            raise as_kernel_error(exc, kernel=self.kernel_name, stage=self.stage_name) from exc
        self.items += 1
        return DeviceItem(out, ready, item.meta)

    def close(self) -> None:
        """Drop the stream (Numba frees it once unreferenced). Idempotent."""
        self.stream = None

    def __repr__(self) -> str:
        return f"GpuStageExecutor(stage={self.stage_name!r}, kernel={self.kernel_name!r})"
