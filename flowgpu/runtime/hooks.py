"""What a run adds to the bare worker loops: pinning and the device resources.

:class:`RunHooks` is made once per run. Its ``worker_start`` pins each worker
thread to the CPUs the pinning plan gave its stage (and sizes Numba's thread
pool for CPU kernels to match); ``gpu_invoke`` builds the callables of the
upload, GPU and download nodes over one pinned pool; ``close`` releases the
pool and the streams, on every path out of the run.
"""

from __future__ import annotations

import os
from typing import Any

from ..context import Context
from ..numa import PinPlan, StageSlot, numba_threads_for, pin_current_thread, plan_pinning
from .cpu import Hooks, StageRun
from .plan import Plan, PlanNode

__all__ = ["RunHooks"]


class RunHooks(Hooks):
    def __init__(self, plan: Plan, pin: str | None, max_buffers: int) -> None:
        self.plan = plan
        self.pin_plan: PinPlan | None = None
        self._cpus: dict[str, frozenset[int] | None] = {}
        slots = [StageSlot(n.name, n.workers, _gpu_of(plan, n), n.spec.cpus)
                 for n in plan.nodes.values()]
        if pin not in (None, "none") or any(s.cpus for s in slots):
            from ..numa import topology

            self.pin_plan = plan_pinning(slots, pin, topology())
            self._cpus = dict(self.pin_plan.cpus)
        self._max_buffers = max_buffers
        # only a run with device stages can hand a collect a DeviceItem
        self.unwraps_collected = any(n.device == "gpu" for n in plan.nodes.values())
        self._pool: Any = None
        self._closers: list[Any] = []

    # -- per worker thread ---------------------------------------------------------
    def worker_start(self, stage: StageRun, worker: int) -> frozenset[int] | None:
        cpus = self._cpus.get(stage.name)
        if cpus is None:
            return None
        pin_current_thread(cpus)
        if stage.device == "cpu" and self.plan.nodes[stage.name].ops:
            import numba

            # Numba's thread count is per calling thread: this worker's kernels
            # use as many threads as it has CPUs, no more.
            numba.set_num_threads(numba_threads_for(cpus))
        return frozenset(os.sched_getaffinity(0))

    def collected_value(self, item: Any) -> Any:
        if not self.unwraps_collected:
            return item
        from .gpu import DeviceItem

        if isinstance(item, DeviceItem):  # collect(on="device"): ready and unwrapped
            item.synchronize()
            return item.array
        return item

    # -- device resources ---------------------------------------------------------
    def _pinned_pool(self) -> Any:
        if self._pool is None:
            from .gpu import PinnedPool

            self._pool = PinnedPool(self._max_buffers)
            self._closers.append(self._pool.close)
        return self._pool

    def gpu_invoke(self, node: PlanNode, ctx: Context) -> Any:
        from .gpu import DeviceItem, Downloader, GpuStageExecutor, Uploader

        if node.role == "upload":
            uploader = Uploader(self._pinned_pool())

            def upload(item: Any) -> Any:
                if isinstance(item, DeviceItem):
                    return item
                return uploader(item, ctx=ctx)

            return upload
        if node.role == "download":
            downloader = Downloader(self._pinned_pool())

            def download(item: Any) -> Any:
                return downloader(item, ctx=ctx)

            return download
        op, params = node.ops[0]
        executor = GpuStageExecutor(op, params, node.name)
        self._closers.append(executor.close)
        return executor

    def close(self) -> None:
        """Release the pinned pool and the streams; idempotent, never raises."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            try:
                close()
            except Exception:  # noqa: BLE001 - a failed free must not hide the run's error
                pass


def _gpu_of(plan: Plan, node: PlanNode) -> int | None:
    """The GPU a node runs on, feeds or drains (for gpu-local pinning)."""
    if node.gpu_index is not None:
        return node.gpu_index
    for other in plan.nodes.values():
        if other.gpu_index is None:
            continue
        if any(node.name in port for port in other.inputs):
            return other.gpu_index
        if any(other.name in port for port in node.inputs):
            return other.gpu_index
    return None
