"""A byte budget for the items in flight: ``run(max_inflight_bytes=...)``.

Channel capacities bound how many items wait between stages; when items are
large, or grow inside a stage, what matters is bytes. A :class:`ByteBudget`
counts the bytes of the items sitting in the run's channels (host arrays in
one budget, device arrays in another). A send waits while the budget is
spent, with one exception that keeps the run deadlock-free: a send into an
*empty* channel always goes ahead, since its consumer has nothing else to
work on and is what frees the budget; one such send at a time per channel.
So the bytes in flight stay within the budget plus one item, plus at most
two items per channel: the one admitted into it while empty, and the one
its consumer has just taken and is about to give back.

Waiting honours the run's context: a cancel or the deadline wakes it.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import _waiter
from .._waiter import Waiter
from ..channel import Channel
from ..context import Context
from .flow import Intake, Outlet, Port, item_nbytes

__all__ = ["ByteBudget", "BudgetedOutlet", "BudgetedIntake", "is_device_item"]


def is_device_item(item: Any) -> bool:
    return type(item).__name__ == "DeviceItem" or hasattr(item, "__cuda_array_interface__")


class ByteBudget:
    """Bytes of items in flight, with blocking admission (see the module doc)."""

    def __init__(self, limit: int, name: str = "host") -> None:
        if not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"max_inflight_bytes must be a positive int, not {limit!r}")
        self.limit = limit
        self.name = name
        self.used = 0
        self.peak = 0
        # Guards used, peak and _waiters. Who waits: senders over budget, on
        # their own Waiter. Who notifies: release(), which wakes them all to
        # look again (the channel they send to may have emptied too).
        self._lock = threading.Lock()
        self._waiters: list[Waiter] = []
        # Channels with an over-budget send under way: one at a time per
        # channel, so that several workers finding the same channel empty at
        # once cannot all overdraw.
        self._overdrawn: set[int] = set()

    def acquire(self, n: int, channel: Channel, ctx: Context) -> bool:
        """Take ``n`` bytes before sending into ``channel``; may block (see above).

        Returns True for an over-budget admission into an empty channel: the
        caller calls :meth:`sent` once its send is over.
        """
        while True:
            with self._lock:
                over = False
                if self.used < self.limit or n == 0 or (
                        len(channel) == 0 and id(channel) not in self._overdrawn):
                    if self.used >= self.limit and n:
                        over = True
                        self._overdrawn.add(id(channel))
                    self.used += n
                    if self.used > self.peak:
                        self.peak = self.used
                    return over
                w = Waiter()
                self._waiters.append(w)
            self._park(w, ctx)

    def sent(self, channel: Channel) -> None:
        """The over-budget send into ``channel`` is over (it landed, or failed)."""
        with self._lock:
            self._overdrawn.discard(id(channel))
        self.wake_all()

    def release(self, n: int) -> None:
        """An item of ``n`` bytes left a channel."""
        with self._lock:
            self.used -= n
            waiters, self._waiters = self._waiters, []
        for w in waiters:
            if w.try_claim():
                w.complete(0, None)

    def wake_all(self) -> None:
        """Wake waiters to look again (a channel they wait on may have emptied)."""
        self.release(0)

    def _park(self, w: Waiter, ctx: Context) -> None:
        registered = ctx._register(w)
        _waiter.note_blocked(1)
        try:
            if registered:
                deadline = ctx.deadline
                while not w.park(None if deadline is None else max(0.0, ctx.remaining() or 0)):
                    if ctx.err is not None:
                        break
        finally:
            _waiter.note_blocked(-1)
            if registered:
                ctx._unregister(w)
            if w.try_claim():  # nobody completed us: drop our place in the list
                with self._lock:
                    if w in self._waiters:
                        self._waiters.remove(w)
        ctx.check()  # woken by a cancel or the deadline: raise; else look again


class BudgetedOutlet(Outlet):
    """An outlet whose sends take bytes from a budget first."""

    __slots__ = ("_budgets",)

    def __init__(self, ports: list[Port], ctx: Context, budgets: dict[str, ByteBudget]) -> None:
        super().__init__(ports, ctx)
        self._budgets = budgets
        self._single = None  # every send goes through _put (and a broadcast keeps its order)

    def _put(self, port: Port, item: Any) -> None:
        n = item_nbytes(item)
        budget = self._budgets["device" if is_device_item(item) else "host"]
        over = budget.acquire(n, port.channel, self._ctx)
        try:
            port.channel.send(item, ctx=self._ctx)
        except BaseException:
            budget.release(n)
            raise
        finally:
            if over:
                budget.sent(port.channel)


class BudgetedIntake(Intake):
    """An intake that gives an item's bytes back to the budget when it is taken."""

    __slots__ = ("_budgets",)

    def __init__(self, port: Port, ctx: Context, window: int | None,
                 budgets: dict[str, ByteBudget]) -> None:
        super().__init__(port, ctx, window)
        self._budgets = budgets

    def take(self) -> tuple[int, Any]:
        try:
            seq, item = super().take()
        except BaseException:
            # the channel may have closed or emptied: let waiting senders look again
            for b in self._budgets.values():
                b.wake_all()
            raise
        self._budgets["device" if is_device_item(item) else "host"].release(item_nbytes(item))
        return seq, item
