"""Sources shared by the run tests."""

from __future__ import annotations

import itertools
import threading

import flowgpu as fg


class Counted:
    """A re-runnable generator source counting the items pulled; ``closed``: its finally ran."""

    def __init__(self, n: int | None = None) -> None:
        self.n = n
        self.pulled = 0
        self.closed = threading.Event()

    def __call__(self):
        try:
            for i in (itertools.count() if self.n is None else range(self.n)):
                self.pulled += 1
                yield i
        finally:
            self.closed.set()


def pulled_while_sink_is_held(make_item, parked, n: int = 200, **run) -> int:
    """How many items a source of ``n`` items (``make_item(i)``) has pulled
    when a sink holding its first item has backed everything up to it: the
    sink holds, and once the source is parked on its full channel the count
    is taken and the sink let go. ``run``: options for ``g.run``."""
    gate = threading.Event()
    entered = threading.Event()
    src = Counted(n)
    seen: list[int] = []

    def hold(x):
        entered.set()
        gate.wait()

    def release_when_stuck():
        assert entered.wait(10)
        parked.wait_for(1)  # the source, on its send into the full channel
        seen.append(src.pulled)
        gate.set()

    g = fg.Graph("held")
    g.source(lambda: (make_item(i) for i in src())).sink(hold)
    t = threading.Thread(target=release_when_stuck)
    t.start()
    try:
        g.run(**run)
    finally:
        gate.set()
        t.join()
    return seen[0]
