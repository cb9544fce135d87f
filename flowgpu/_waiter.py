"""The one blocking primitive under channels, select and contexts.

A :class:`Waiter` is a parked thread. It can be queued on several channels
(``select``) and on a context at once; whoever *claims* it first completes it
and wakes it, and every other party sees the claim fail and drops it. Claiming
is ``Lock.acquire(blocking=False)``, an atomic test-and-set, so no lock is
shared between the parties that race for a waiter.
"""

from __future__ import annotations

import threading
from typing import Any

# Completion values that are not data.
CLOSED: Any = type("CLOSED", (), {"__repr__": lambda self: "CLOSED"})()
CANCELLED: Any = type("CANCELLED", (), {"__repr__": lambda self: "CANCELLED"})()

_allocate_lock = threading.Lock
# Lock.acquire rejects longer timeouts (OverflowError); a far deadline
# (timeout=1e10, a context with timeout=inf) waits in steps of this.
TIMEOUT_MAX = threading.TIMEOUT_MAX


class Waiter:
    __slots__ = ("_claim", "_wake", "index", "value")

    def __init__(self) -> None:
        self._claim = _allocate_lock()
        # Held from birth; complete() releases it and the parked thread's
        # acquire() returns. Who waits: the parked thread. Who notifies: the
        # party that won the claim.
        self._wake = _allocate_lock()
        self._wake.acquire()
        self.index = -1
        self.value: Any = None

    def try_claim(self) -> bool:
        """True for exactly one caller over the waiter's life."""
        return self._claim.acquire(False)

    def complete(self, index: int, value: Any) -> None:
        """Hand over the result and wake the parked thread; only after a won claim."""
        self.index = index
        self.value = value
        self._wake.release()

    def park(self, timeout: float | None) -> bool:
        """Block until completed (True) or until ``timeout`` seconds pass (False).

        May return False early for a timeout beyond ``TIMEOUT_MAX``; callers
        check the clock and park again.
        """
        if timeout is None:
            return self._wake.acquire()
        if timeout <= 0:
            return self._wake.acquire(False)
        return self._wake.acquire(True, min(timeout, TIMEOUT_MAX))


class Entry:
    """A waiter's place in one channel queue. Compared by identity only, so that
    removing an entry never compares user values (a NumPy array has no bool)."""

    __slots__ = ("waiter", "index", "value")

    def __init__(self, waiter: Waiter, index: int, value: Any = None) -> None:
        self.waiter = waiter
        self.index = index
        self.value = value


# How many channel operations are parked right now. The test suite checks it
# is zero after each test; only the blocking path touches it.
_blocked_lock = threading.Lock()
_blocked = 0


def note_blocked(delta: int) -> None:
    global _blocked
    with _blocked_lock:
        _blocked += delta


def blocked_count() -> int:
    return _blocked
