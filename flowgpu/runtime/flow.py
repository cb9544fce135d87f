"""How items move between stages: ports, outlets, intakes and the reorder buffer.

* A :class:`Port` is one input channel of a stage, closed when the last stage
  writing to it has finished (several writers: a ``merge``).
* An :class:`Outlet` is where a stage's outputs go: one port per consumer
  (a broadcast when the stream feeds several stages).
* An :class:`Intake` numbers the items a stage takes from its port, so that
  errors name the item and ordered stages can restore the order.
* A :class:`ReorderBuffer` lets several workers finish out of order and emits
  their outputs in intake order, holding at most ``window`` items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..channel import Channel
from ..context import Context
from ..graph import DEFAULT_CAPACITY, SMALL_ITEM_BYTES

__all__ = ["Port", "Outlet", "Intake", "ReorderBuffer", "array_nbytes"]


def array_nbytes(item: Any) -> int:
    """An item's ``nbytes`` when that is an int (an array's, host or device),
    else 0. Never raises: an ``nbytes`` method, or a property that raises, on
    a user's object must not fail the run."""
    try:
        n = getattr(item, "nbytes", 0)
    except Exception:
        return 0
    return n if isinstance(n, int) else 0


class Port:
    """A stage's input channel and the count of stages still writing to it."""

    __slots__ = ("channel", "_writers", "_lock", "broadcast_lock", "auto")

    def __init__(self, channel: Channel, writers: int, auto: bool = False) -> None:
        self.channel = channel
        self._writers = writers
        # True while the channel's capacity was not given and no large item
        # has been through it yet (see Outlet._fit)
        self.auto = auto
        self._lock = threading.Lock()  # guards _writers; nobody waits on it
        # Held by a broadcasting outlet while it sends one item to all its
        # ports (see Outlet.send). Who waits: the other workers of that stage
        # and other broadcasts into this port. Who notifies: the holder, once
        # its sends returned or raised; its sends honour the run's context,
        # so a cancel frees it.
        self.broadcast_lock = threading.Lock()

    def writer_done(self) -> None:
        with self._lock:
            self._writers -= 1
            last = self._writers == 0
        if last:
            self.channel.close()


class Outlet:
    """Sends each output to every consumer's port (broadcast), in order.

    A broadcast sends one item to all its ports before the next item goes
    out, whichever worker sends it, so that every consumer sees the items in
    the same order: ``fg.zip(s.map(f), s.map(g))`` pairs ``f(x)`` with
    ``g(x)`` even when ``s`` comes from an unordered stage with several
    workers. The ports' broadcast locks, taken in one global order, make it
    so; a single-port outlet takes none.
    """

    __slots__ = ("ports", "_ctx", "_single", "_locks", "_auto")

    def __init__(self, ports: list[Port], ctx: Context) -> None:
        self.ports = ports
        self._ctx = ctx
        self._auto = [p for p in ports if p.auto]
        self._single = ports[0].channel if len(ports) == 1 else None
        self._locks = (tuple(sorted((p.broadcast_lock for p in ports), key=id))
                       if len(ports) > 1 else ())

    def send(self, item: Any) -> None:
        """Blocks while a consumer's port is full (backpressure); raises the
        run's Cancelled/DeadlineExceeded when the run ends."""
        if self._auto:
            self._fit(item)
        single = self._single
        if single is not None:
            single.send(item, ctx=self._ctx)
            return
        locks = self._locks
        taken = 0
        try:
            for lock in locks:
                lock.acquire()
                taken += 1
            for port in self.ports:
                self._put(port, item)
        finally:
            for lock in locks[:taken]:
                lock.release()

    def _put(self, port: Port, item: Any) -> None:
        port.channel.send(item, ctx=self._ctx)

    def _fit(self, item: Any) -> None:
        """Channels whose capacity was not given hold many small items (fewer
        hand-offs per item) but few large ones (bounded memory): the first
        large item lowers them for the rest of the run."""
        if array_nbytes(item) > SMALL_ITEM_BYTES:
            for port in self._auto:
                port.channel._lower_capacity(DEFAULT_CAPACITY)
                port.auto = False
            self._auto = []

    def done(self) -> None:
        """This stage will send nothing more."""
        for port in self.ports:
            port.writer_done()


class Intake:
    """Takes numbered items from a port, for one or several workers.

    With ``window`` set (ordered stages with several workers), a worker may
    take item ``n`` only while fewer than ``window`` taken items are still
    waiting to be emitted: :meth:`release` returns a slot after emission. The
    slots are a channel of tokens, so waiting for one honours the context.
    """

    __slots__ = ("channel", "_ctx", "_seq", "_lock", "_slots")

    def __init__(self, channel: Channel, ctx: Context, window: int | None = None) -> None:
        self.channel = channel
        self._ctx = ctx
        self._seq = 0
        # Makes "receive, then number" one step, so numbers follow channel
        # order. Who waits: the other workers of the stage, while one of them
        # is parked in recv (which wakes on close and on cancel).
        self._lock = threading.Lock()
        self._slots: Channel | None = None
        if window is not None:
            self._slots = Channel(window)
            for _ in range(window):
                self._slots.send(None)

    def take(self) -> tuple[int, Any]:
        """``(index, item)``; raises ChannelClosed at the end of the stream."""
        ctx = self._ctx
        with self._lock:
            if self._slots is not None:
                self._slots.recv(ctx=ctx)
                try:
                    item = self.channel.recv(ctx=ctx)
                except BaseException:
                    self._slots.send(None)
                    raise
            else:
                item = self.channel.recv(ctx=ctx)
            seq = self._seq
            self._seq = seq + 1
        return seq, item

    def release(self) -> None:
        """An item taken earlier has been emitted: free its slot."""
        if self._slots is not None:
            self._slots.send(None, ctx=self._ctx)


class ReorderBuffer:
    """Emits outputs in intake order whatever order the workers finish in.

    A worker calls :meth:`put` with its item's index and outputs (an empty
    list for an item filtered out or skipped). Whoever completes the run of
    consecutive indices starting at the next one to emit becomes the emitter
    and sends them, one at a time, outside the lock; the others go back to
    work at once.
    """

    __slots__ = ("_emit", "_release", "_lock", "_pending", "_next", "_emitting")

    def __init__(self, emit: Callable[[Any], None], release: Callable[[], None]) -> None:
        self._emit = emit
        self._release = release
        # Guards _pending, _next and _emitting; nobody waits on it.
        self._lock = threading.Lock()
        self._pending: dict[int, list[Any]] = {}
        self._next = 0
        self._emitting = False

    def put(self, seq: int, outputs: list[Any]) -> None:
        """Deposit the outputs of item ``seq``; may emit (and block on backpressure)."""
        with self._lock:
            self._pending[seq] = outputs
            if self._emitting or seq != self._next:
                return
            self._emitting = True
        try:
            while True:
                with self._lock:
                    outs = self._pending.pop(self._next, None)
                    if outs is None:
                        self._emitting = False
                        return
                    self._next += 1
                for out in outs:
                    self._emit(out)
                self._release()
        except BaseException:
            with self._lock:
                self._emitting = False
            raise
