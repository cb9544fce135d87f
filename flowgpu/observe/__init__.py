"""Observers that show what a run does: progress bars, traces, a stall
watchdog, and a live HTTP status with Prometheus metrics.

Each is an :class:`~flowgpu.runtime.observe.Observer`; ``run()`` builds them
from its options (``progress=``, ``trace=``, ``stall_timeout=``, ``serve=``)
through :func:`observers_for`, or takes instances in ``observers=``. They
share the run's one monitor thread and leave nothing running after it.
"""

from __future__ import annotations

import os
from typing import Any

from ..runtime.observe import Observer, RunView
from .progress import ProgressBars
from .serve import StatusServer
from .status import live_stats, snapshot
from .trace import TraceRecorder, chrome_trace
from .watchdog import StallWatchdog, describe_workers

__all__ = ["Observer", "RunView", "ProgressBars", "TraceRecorder", "chrome_trace",
           "StallWatchdog", "describe_workers", "StatusServer", "snapshot", "live_stats",
           "observers_for"]


def observers_for(*, progress: bool = False, trace: str | os.PathLike | None = None,
                  stall_timeout: float | None = None, serve: Any = None) -> list[Observer]:
    """The observers ``run()`` options ask for (``stall_timeout`` 0 or None: none)."""
    out: list[Observer] = []
    if progress:
        out.append(ProgressBars())
    if trace:
        out.append(TraceRecorder(trace))
    if stall_timeout:
        out.append(StallWatchdog(stall_timeout))
    if serve is not None and serve is not False:
        out.append(serve if isinstance(serve, StatusServer) else StatusServer.parse(serve))
    return out
