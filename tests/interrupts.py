"""Deliver one Ctrl-C to the main thread from another thread, reliably.

A SIGINT that lands just before the main thread blocks on a lock sets
Python's "signal pending" flag without waking the lock wait, so the
``KeyboardInterrupt`` waits for the next wake-up (a CPython limitation, the
same for a user's Ctrl-C). :meth:`MainInterrupter.send` therefore repeats
the signal until the Python-level handler has run once; the handler raises
``KeyboardInterrupt`` for the first signal only and ignores the repeats.
"""

from __future__ import annotations

import signal
import threading

import pytest


class MainInterrupter:
    def __init__(self) -> None:
        self.fired: list[bool] = []  # appended to by the handler, in the main thread
        self._stop = threading.Event()

    def _handler(self, signum, frame) -> None:
        if not self.fired:
            self.fired.append(True)
            raise KeyboardInterrupt

    def send(self) -> None:
        """Interrupt the main thread; returns once its handler has run."""
        main = threading.main_thread().ident
        while not self.fired and not self._stop.is_set():
            signal.pthread_kill(main, signal.SIGINT)
            self._stop.wait(0.05)  # re-send only if the first one was not seen


@pytest.fixture
def interrupt_main():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    interrupter = MainInterrupter()
    previous = signal.signal(signal.SIGINT, interrupter._handler)
    try:
        yield interrupter
    finally:
        interrupter._stop.set()
        signal.signal(signal.SIGINT, previous)
