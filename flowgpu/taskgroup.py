"""TaskGroup: Go's ``errgroup`` for threads.

Every task runs on its own thread; the first task to fail cancels the group's
context, so that the others (if they check it, or block on a channel with it)
stop; the ``with`` block waits for every task and then raises that first
error. Nothing started by the group outlives the block.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ._waiter import TIMEOUT_MAX
from .context import Context, _set_current, background

__all__ = ["TaskGroup"]


class TaskGroup:
    """Run functions on threads; the first error cancels the rest and is raised.

    ::

        with fg.TaskGroup(ctx) as tg:
            tg.go(produce, ch)
            tg.go(consume, ch)
        # here every task has returned; the first error (if any) was raised

    ``tg.ctx`` is a child of ``ctx`` (or of the background context) and is what
    :func:`flowgpu.current_context` returns inside the tasks. The block's exit
    waits for all tasks, honouring ``tg.ctx``'s deadline (at the deadline the
    context is cancelled with DeadlineExceeded, then the wait goes on until the
    tasks return). A ``KeyboardInterrupt`` while waiting cancels ``tg.ctx``,
    waits for the tasks, and is then re-raised. When the body itself raises,
    the group is cancelled, waited for, and the body's exception propagates.
    """

    def __init__(self, ctx: Context | None = None, *, name: str = "taskgroup") -> None:
        self.name = name
        self.ctx = (ctx if ctx is not None else background()).child(name=name)
        # Guards _running, _threads, _error, _closed. Who waits: __exit__ on
        # _all_done. Who notifies: the last task to finish sets _all_done.
        self._lock = threading.Lock()
        self._all_done = threading.Event()
        self._all_done.set()
        self._running = 0
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._closed = False

    def __enter__(self) -> TaskGroup:
        return self

    def go(self, fn: Callable[..., Any], *args: Any, name: str | None = None) -> None:
        """Start ``fn(*args)`` on a new thread of this group.

        Raises RuntimeError once the group's block has exited.
        """
        label = name or getattr(fn, "__name__", "task")
        # start() can raise before the thread exists (no thread could be made)
        # or after it started (a KeyboardInterrupt while start() waits for it
        # to run). Whoever takes `admit` first decides which: the thread, and
        # the task runs and ends itself; or the failed go(), and it never runs.
        admit = threading.Lock()
        t = threading.Thread(target=self._run, args=(fn, args, admit),
                             name=f"flowgpu:{self.name}:{label}")
        with self._lock:
            if self._closed:
                raise RuntimeError(f"task group {self.name!r} has finished; cannot start {label!r}")
            self._running += 1
            self._all_done.clear()
            self._threads.append(t)
        try:
            t.start()
        except BaseException:
            if admit.acquire(False):
                self._task_ended()
            raise

    def _run(self, fn: Callable[..., Any], args: tuple, admit: threading.Lock) -> None:
        if not admit.acquire(False):
            return  # go() gave up on this task and has already counted it out
        _set_current(self.ctx)
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the group
            self.fail(exc)
        finally:
            self._task_ended()

    def _task_ended(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                self._all_done.set()

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` as the group's error if it is the first, and cancel the group."""
        with self._lock:
            # The first failure records itself before it cancels the group,
            # so the Cancelled errors it causes in the other tasks come later
            # and are dropped here.
            if self._error is None:
                self._error = exc
        self.ctx.cancel(exc)

    @property
    def error(self) -> BaseException | None:
        """The first error recorded so far, or None."""
        return self._error

    def wait(self) -> None:
        """Wait until every task has returned (honours the deadline and Ctrl-C)."""
        interrupt: BaseException | None = None
        while not self._all_done.is_set():
            try:
                deadline = self.ctx.deadline
                if deadline is None or self.ctx.err is not None:
                    self._all_done.wait()
                elif not self._all_done.wait(min(max(0.0, deadline - time.monotonic()),
                                                 TIMEOUT_MAX)):
                    self.ctx.err  # noqa: B018 - reading err at the deadline cancels the context
            except KeyboardInterrupt as exc:
                # A notebook's interrupt lands here; stop the tasks, keep waiting.
                interrupt = exc
                self.ctx.cancel("KeyboardInterrupt")
        for t in list(self._threads):
            if t.ident is not None:  # never started: its go() raised
                t.join()
        if interrupt is not None:
            raise interrupt

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            self.ctx.cancel(exc)
        try:
            self.wait()
        finally:
            with self._lock:
                self._closed = True
            self.ctx.cancel(f"task group {self.name!r} finished")
        if exc is not None:
            return False
        if self._error is not None:
            raise self._error
        return False
