"""Context: cancellation with a reason, deadlines, and a tree of children.

Like Go's ``context.Context``: cancelling a context cancels its children; a
child's deadline is never later than its parent's. Deadlines need no timer
thread: every blocking call in flowgpu waits at most until the deadline of
the context it was given, and the first party that notices the deadline has
passed cancels the context with :class:`DeadlineExceeded`. ``ctx.done`` and
``ctx.err`` check the clock themselves, so they are right at any moment.
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

from ._waiter import CANCELLED, TIMEOUT_MAX, Waiter
from .errors import Cancelled, DeadlineExceeded

__all__ = ["Context", "current_context", "background"]

_monotonic = time.monotonic


class _Done:
    """``ctx.done``: quacks like ``threading.Event`` (``is_set``, ``wait``)."""

    __slots__ = ("_ctx", "_event")

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._event = threading.Event()

    def is_set(self) -> bool:
        return self._ctx.err is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the context is done or ``timeout`` passes; True if done."""
        ctx = self._ctx
        end = None if timeout is None else _monotonic() + timeout
        while True:
            if ctx.err is not None:
                return True
            limit = ctx._deadline
            if end is not None and (limit is None or end < limit):
                limit = end
            if limit is None:
                self._event.wait()
                continue
            if self._event.wait(min(max(0.0, limit - _monotonic()), TIMEOUT_MAX)):
                return True
            if end is not None and _monotonic() >= end:
                return ctx.err is not None

    def __repr__(self) -> str:
        return f"<done {'set' if self.is_set() else 'unset'}>"


class Context:
    """A cancellation scope, with an optional deadline.

    ``Context(timeout=5.0)`` is done five seconds from now at the latest;
    ``ctx.cancel(reason)`` ends it at once. ``ctx.err`` is ``None`` while it
    runs, then :class:`Cancelled` (carrying the reason) or
    :class:`DeadlineExceeded`. ``ctx.check()`` raises that error. Used as a
    ``with`` block, the context is cancelled when the block exits, so that
    nothing started under it outlives it.

    Thread-safe; cancelling is idempotent and the first reason wins.
    """

    def __init__(self, timeout: float | None = None, *, parent: Context | None = None,
                 deadline: float | None = None, name: str | None = None) -> None:
        if timeout is not None:
            if timeout < 0 or timeout != timeout:
                raise ValueError(f"timeout must be >= 0 seconds, not {timeout!r}")
            at = _monotonic() + timeout
            deadline = at if deadline is None else min(deadline, at)
        if parent is not None and parent._deadline is not None:
            deadline = parent._deadline if deadline is None else min(deadline, parent._deadline)
        self.name = name
        self._deadline = deadline
        self._parent = parent
        self._err: Cancelled | None = None
        # Guards _waiters and _children and the transition of _err from None.
        # Who waits on it: nobody blocks while holding it; cancel() and the
        # register/unregister calls of parked channel ops take it briefly.
        self._lock = threading.Lock()
        self._waiters: set[Waiter] = set()
        self._children: set[Context] = set()
        self.done = _Done(self)
        if parent is not None:
            parent._adopt(self)

    # -- state -----------------------------------------------------------------
    @property
    def err(self) -> Cancelled | None:
        err = self._err
        if err is None and self._deadline is not None and _monotonic() >= self._deadline:
            self._finish(DeadlineExceeded())
            err = self._err
        return err

    @property
    def reason(self) -> Any:
        err = self.err
        return None if err is None else err.reason

    @property
    def deadline(self) -> float | None:
        """The deadline on the ``time.monotonic()`` clock, or ``None``."""
        return self._deadline

    def remaining(self) -> float | None:
        """Seconds left before the deadline (>= 0), or ``None`` without one."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - _monotonic())

    def check(self) -> None:
        """Raise ``Cancelled`` or ``DeadlineExceeded`` if the context is done."""
        err = self.err
        if err is not None:
            raise err

    # -- changes ---------------------------------------------------------------
    def cancel(self, reason: Any = "cancelled") -> None:
        """Cancel this context and its children; wakes every op parked on it."""
        if self is _background:
            raise ValueError("the background context cannot be cancelled; use a child")
        self._finish(Cancelled(reason))

    def child(self, timeout: float | None = None, *, name: str | None = None) -> Context:
        """A context cancelled with this one, with an optional earlier deadline."""
        return Context(timeout, parent=self, name=name)

    def _adopt(self, child: Context) -> None:
        if self is _background:  # never cancelled: keeping children would only leak them
            return
        with self._lock:
            if self._err is None:
                self._children.add(child)
                return
            err = self._err
        child._finish(err)

    def _finish(self, err: Cancelled) -> None:
        with self._lock:
            if self._err is not None:
                return
            self._err = err
            waiters, self._waiters = self._waiters, set()
            children, self._children = self._children, set()
        self.done._event.set()
        for w in waiters:
            if w.try_claim():
                w.complete(-1, CANCELLED)
        for c in children:
            c._finish(err)
        parent = self._parent
        if parent is not None:
            with parent._lock:
                parent._children.discard(self)

    # Parked channel operations register here so that cancel wakes them.
    def _register(self, w: Waiter) -> bool:
        """Add a parked waiter; False (not added) if already done."""
        with self._lock:
            if self._err is None:
                self._waiters.add(w)
                return True
        return False

    def _unregister(self, w: Waiter) -> None:
        with self._lock:
            self._waiters.discard(w)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel("context exited")

    def __repr__(self) -> str:
        state = "running" if self.err is None else repr(self.err)
        name = f" {self.name!r}" if self.name else ""
        return f"<Context{name} {state}>"


_background = Context(name="background")
_current: contextvars.ContextVar[Context] = contextvars.ContextVar("flowgpu_context")


def background() -> Context:
    """The root context: never cancelled, no deadline."""
    return _background


def current_context() -> Context:
    """The context of the run (or task group) this thread works for.

    Inside a stage function this is the run's context: a long call can check
    it (``ctx.check()``) or wait on it (``ctx.done.wait(t)``) to stop when the
    run is cancelled. Outside any run it is the background context.
    """
    return _current.get(_background)


def _set_current(ctx: Context) -> contextvars.Token:
    return _current.set(ctx)
