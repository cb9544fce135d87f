"""Sources shared by the run tests."""

from __future__ import annotations

import itertools
import threading


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
