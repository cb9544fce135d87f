"""Watching a run from the side: observers and the monitor thread that ticks them.

An :class:`Observer` sees the run start, is ticked every ``interval`` seconds
while it runs (progress bars, channel-depth samples, the stall watchdog, a
live HTTP status), and sees it end, with the report or the error. All
observers of a run share one monitor thread, which lives in the run's task
group and ends when the last stage worker has returned, so it never outlives
the run. A run without observers starts no monitor and pays nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..report import RunReport
    from .cpu import StageRun
    from .plan import Plan

__all__ = ["Observer", "RunView", "monitor"]


class RunView:
    """What observers may look at: the plan, the live stages, the clock.

    ``stages[name].stats`` are the workers' live counters (read without a
    lock: a tick sees values at most one item old), ``stages[name].intakes``
    the stage's inputs (``intake.depth()``: items waiting in one).
    """

    def __init__(self, plan: Plan, stages: dict[str, StageRun], ctx: Any) -> None:
        self.plan = plan
        self.stages = stages
        self.ctx = ctx
        self.started = time.perf_counter()
        self.finished = threading.Event()  # set when the last stage worker returned
        self.notes: list[str] = []  # what observers want kept in the report

    @property
    def name(self) -> str:
        return self.plan.graph.name

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def items_out(self, name: str) -> int:
        """Items the stage has emitted (for a sink or collect: items taken in)."""
        stage = self.stages[name]
        if stage.kind in ("sink", "collect"):
            return sum(w.items_in for w in stage.stats)
        return sum(w.items_out for w in stage.stats)

    def depth(self, name: str) -> int:
        """Items waiting in the stage's input channels now."""
        return sum(i.depth() for i in self.stages[name].intakes)


class Observer:
    """Base class: every hook does nothing. ``interval``: seconds between ticks
    (None: no ticks). Hooks run on the monitor thread, except ``on_start``
    (before any worker starts) and ``on_end`` (after every worker returned),
    which run on the caller's thread. A hook that raises fails the run."""

    interval: float | None = None

    def on_start(self, view: RunView) -> None:
        pass

    def on_tick(self, view: RunView) -> None:
        pass

    def on_end(self, view: RunView, report: RunReport | None,
               error: BaseException | None) -> None:
        pass


def monitor(view: RunView, observers: Sequence[Observer]) -> None:
    """The monitor thread's body: tick each observer on its own period."""
    periods = [(o, o.interval) for o in observers if o.interval]
    if not periods:
        return
    due = {id(o): view.elapsed() + p for o, p in periods}
    while True:
        wait = max(0.0, min(due.values()) - view.elapsed())
        if view.finished.wait(wait):
            return
        now = view.elapsed()
        for o, period in periods:
            if now >= due[id(o)]:
                o.on_tick(view)
                due[id(o)] = now + period
