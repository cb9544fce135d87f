"""Wait, without sleeping, until a given number of channel operations are parked.

Every blocked channel operation (send, recv, select) parks its thread in
``Waiter.park``. :class:`ParkWatch` wraps that method so that entering and
leaving it notify a condition, and :meth:`ParkWatch.wait_for` waits on the
condition until exactly ``n`` threads are parked on a waiter nobody has
claimed yet (a claimed waiter is being woken: its thread is as good as
running). A test learns "the pipeline is now stuck exactly here" from the
engine itself instead of guessing with a sleep.
"""

from __future__ import annotations

import threading

import pytest

from flowgpu._waiter import Waiter


class ParkWatch:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Who waits: the test thread in wait_for. Who notifies: any thread
        # entering or leaving Waiter.park.
        self._cond = threading.Condition()
        self._inside: dict[Waiter, int] = {}
        original = Waiter.park
        watch = self

        def park(w: Waiter, timeout: float | None) -> bool:
            with watch._cond:
                watch._inside[w] = watch._inside.get(w, 0) + 1
                watch._cond.notify_all()
            try:
                return original(w, timeout)
            finally:
                with watch._cond:
                    watch._inside[w] -= 1
                    if not watch._inside[w]:
                        del watch._inside[w]
                    watch._cond.notify_all()

        monkeypatch.setattr(Waiter, "park", park)

    def count(self) -> int:
        with self._cond:
            return self._parked()

    def _parked(self) -> int:
        return sum(1 for w in self._inside if not w._claim.locked())

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        """Block until exactly ``n`` channel operations are parked and unclaimed."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._parked() == n, timeout)
            have = self._parked()
        assert ok, f"expected {n} parked channel operation(s), have {have}"


@pytest.fixture
def parked(monkeypatch: pytest.MonkeyPatch) -> ParkWatch:
    return ParkWatch(monkeypatch)
