"""Go-style channels: bounded, closable, with timeouts, contexts and ``select``.

A :class:`Channel` of capacity ``n`` buffers up to ``n`` items; capacity 0 is
a rendezvous (a send completes only when a receiver takes the item). A
blocked operation parks its thread on a :class:`~flowgpu._waiter.Waiter` and
is woken by exactly the event that unblocks it: the item it waits for, the
space it needs, a close, a cancel, or its own deadline. Nothing polls.

Invariants, under the channel's lock:

* waiting receivers exist only while the buffer is empty;
* waiting senders exist only while the buffer is full (for capacity 0: always
  full);
* a closed channel has no waiting senders, and no waiting receivers once
  drained.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from . import _waiter
from ._waiter import CANCELLED, CLOSED, Entry, Waiter
from .context import Context
from .errors import Cancelled, ChannelClosed, Timeout

__all__ = ["Channel", "select", "RecvCase", "SendCase", "blocked_operations"]

T = TypeVar("T")
_monotonic = time.monotonic


def blocked_operations() -> int:
    """How many channel operations (send, recv, select) are parked right now."""
    return _waiter.blocked_count()


class Channel(Generic[T]):
    """A bounded FIFO between threads, closable, like a Go channel.

    ``send`` blocks while the channel is full and raises :class:`ChannelClosed`
    if it is (or becomes) closed. ``recv`` blocks while it is empty and raises
    :class:`ChannelClosed` once it is closed and drained. Both take
    ``timeout=`` (raise :class:`Timeout`) and ``ctx=`` (raise the context's
    :class:`Cancelled` or :class:`DeadlineExceeded`; a context that is already
    done wins over a ready channel). Iterating receives until closed.
    """

    __slots__ = ("_lock", "_buf", "_capacity", "_closed", "_recvq", "_sendq", "name",
                 "__weakref__")

    def __init__(self, capacity: int = 0, *, name: str | None = None) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
            raise ValueError(f"capacity must be an int >= 0, not {capacity!r}")
        # Guards every field below. Nobody blocks while holding it: a parked
        # thread waits on its own Waiter, and the thread that changes the
        # channel's state (send, recv, close) completes that waiter.
        self._lock = threading.Lock()
        self._buf: deque[Any] = deque()
        self._capacity = capacity
        self._closed = False
        self._recvq: deque[Entry] = deque()
        self._sendq: deque[Entry] = deque()
        self.name = name

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (items may still be buffered)."""
        return self._closed

    def __len__(self) -> int:
        return len(self._buf)

    # -- send ------------------------------------------------------------------
    def send(self, item: T, timeout: float | None = None, ctx: Context | None = None) -> None:
        """Put ``item`` in the channel, blocking while it is full.

        Raises ChannelClosed, Timeout, or the context's Cancelled/DeadlineExceeded.
        """
        if ctx is not None:
            ctx.check()
        lock = self._lock
        lock.acquire()
        if self._closed:
            lock.release()
            raise ChannelClosed(self._describe("send on closed channel"))
        recvq = self._recvq
        while recvq:
            e = recvq.popleft()
            if e.waiter.try_claim():
                lock.release()
                e.waiter.complete(e.index, item)
                return
        if len(self._buf) < self._capacity:
            self._buf.append(item)
            lock.release()
            return
        if timeout is not None and timeout <= 0:
            lock.release()
            raise Timeout(self._describe("send timed out"))
        w = Waiter()
        e = Entry(w, 0, item)
        self._sendq.append(e)
        lock.release()
        _park(w, ((self, e, True),), timeout, ctx, self._describe("send timed out"))
        if w.value is CLOSED:
            raise ChannelClosed(self._describe("channel closed while sending"))

    def try_send(self, item: T) -> bool:
        """Send without blocking; False if the channel is full. ChannelClosed if closed."""
        try:
            self.send(item, timeout=0)
        except Timeout:
            return False
        return True

    # -- recv ------------------------------------------------------------------
    def recv(self, timeout: float | None = None, ctx: Context | None = None) -> T:
        """Take the next item, blocking while the channel is empty.

        Raises ChannelClosed once closed and drained, Timeout, or the context's
        Cancelled/DeadlineExceeded.
        """
        if ctx is not None:
            ctx.check()
        lock = self._lock
        lock.acquire()
        ok, item = self._take_locked()
        if ok:
            lock.release()
            return item
        if self._closed:
            lock.release()
            raise ChannelClosed(self._describe("channel closed"))
        if timeout is not None and timeout <= 0:
            lock.release()
            raise Timeout(self._describe("recv timed out"))
        w = Waiter()
        e = Entry(w, 0)
        self._recvq.append(e)
        lock.release()
        _park(w, ((self, e, False),), timeout, ctx, self._describe("recv timed out"))
        if w.value is CLOSED:
            raise ChannelClosed(self._describe("channel closed"))
        return w.value

    def _take_locked(self) -> tuple[bool, Any]:
        buf = self._buf
        sendq = self._sendq
        if buf:
            item = buf.popleft()
            # Space opened: move the longest-waiting sender's item in (unless
            # the runtime lowered the capacity below what is buffered).
            while sendq and len(buf) < self._capacity:
                e = sendq.popleft()
                if e.waiter.try_claim():
                    buf.append(e.value)
                    e.waiter.complete(e.index, None)
                    break
            return True, item
        while sendq:  # rendezvous: take straight from a parked sender
            e = sendq.popleft()
            if e.waiter.try_claim():
                item = e.value
                e.waiter.complete(e.index, None)
                return True, item
        return False, None

    # -- close -----------------------------------------------------------------
    def close(self) -> None:
        """Close the channel; idempotent.

        Buffered items stay receivable. Parked receivers of an empty channel
        get ChannelClosed; parked senders get ChannelClosed and their items
        are not delivered.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            entries = list(self._recvq) + list(self._sendq)
            self._recvq.clear()
            self._sendq.clear()
        for e in entries:
            if e.waiter.try_claim():
                e.waiter.complete(e.index, CLOSED)

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                yield self.recv()
            except ChannelClosed:
                return

    # -- select support --------------------------------------------------------
    def recv_case(self) -> RecvCase:
        return RecvCase(self)

    def send_case(self, item: T) -> SendCase:
        return SendCase(self, item)

    def _unqueue(self, e: Entry, sending: bool) -> None:
        with self._lock:
            q = self._sendq if sending else self._recvq
            try:
                q.remove(e)
            except ValueError:
                pass

    def _poll(self) -> tuple[bool, Any]:
        """Runtime use: ``(True, item)`` if an item is ready now, else
        ``(False, None)``; never blocks, never raises."""
        with self._lock:
            return self._take_locked()

    def _snapshot(self) -> list[Any]:
        """Runtime use: the buffered items, oldest first (a copy)."""
        with self._lock:
            return list(self._buf)

    def _set_capacity(self, capacity: int) -> None:
        """Runtime use: hold up to ``capacity`` items from now on. Lowering it
        keeps what is buffered (parked senders wait longer); raising it lets
        parked senders in at once."""
        entries = []
        with self._lock:
            self._capacity = capacity
            buf, sendq = self._buf, self._sendq
            while sendq and len(buf) < capacity:
                e = sendq.popleft()
                if e.waiter.try_claim():
                    buf.append(e.value)
                    entries.append(e)
        for e in entries:
            e.waiter.complete(e.index, None)

    def _describe(self, what: str) -> str:
        return f"{what} ({self.name})" if self.name else what

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        name = f" {self.name!r}" if self.name else ""
        return f"<Channel{name} {len(self._buf)}/{self._capacity} {state}>"


def _park(w: Waiter, queued: tuple, timeout: float | None, ctx: Context | None,
          timeout_message: str) -> None:
    """Block on ``w`` until a channel completes it, ``timeout`` passes or ``ctx`` ends.

    ``queued`` lists ``(channel, entry, sending)`` where ``w`` waits. On a
    normal return ``w`` is completed with data (or CLOSED); on a raise it is
    in no queue and nobody will complete it.
    """
    own_end = None if timeout is None else _monotonic() + timeout
    registered = ctx is None or ctx._register(w)
    _waiter.note_blocked(1)
    try:
        while True:
            end = own_end
            if not registered:
                end = 0.0  # the context was already done: give up at once
            elif ctx is not None and ctx._deadline is not None:
                if end is None or ctx._deadline < end:
                    end = ctx._deadline
            if w.park(None if end is None else end - _monotonic()):
                break
            # ctx.err checks the deadline too
            ctx_done = ctx is not None and (not registered or ctx.err is not None)
            if not ctx_done and (own_end is None or _monotonic() < own_end):
                continue  # the clock woke us a hair early; nothing has expired
            if w.try_claim():
                for ch, e, sending in queued:
                    ch._unqueue(e, sending)
                if ctx is not None:
                    ctx.check()
                raise Timeout(timeout_message)
            w.park(None)  # lost the race to a completion that is on its way
            break
    except BaseException:
        # KeyboardInterrupt while parked, or the Timeout above: make sure no
        # channel completes this waiter later.
        if w.try_claim():
            for ch, e, sending in queued:
                ch._unqueue(e, sending)
        raise
    finally:
        _waiter.note_blocked(-1)
        if ctx is not None and registered:
            ctx._unregister(w)
    if w.value is CANCELLED:
        for ch, e, sending in queued:
            ch._unqueue(e, sending)
        ctx.check()
        raise Cancelled("cancelled")  # not reached: CANCELLED comes only from a done ctx


class RecvCase:
    """A receive in :func:`select`; made by ``channel.recv_case()``."""

    __slots__ = ("channel",)
    sending = False

    def __init__(self, channel: Channel) -> None:
        self.channel = channel


class SendCase:
    """A send in :func:`select`; made by ``channel.send_case(item)``."""

    __slots__ = ("channel", "item")
    sending = True

    def __init__(self, channel: Channel, item: Any) -> None:
        self.channel = channel
        self.item = item


def select(*cases: RecvCase | SendCase, timeout: float | None = None, default: bool = False,
           ctx: Context | None = None) -> tuple[int | None, Any]:
    """Wait until one of ``cases`` can proceed, do it, return ``(index, value)``.

    ``value`` is the item received, or ``None`` for a send. When several are
    ready one is chosen at random, as in Go, so no case starves. With
    ``default=True`` it never blocks and returns ``(None, None)`` when none is
    ready. Raises :class:`Timeout` after ``timeout`` seconds,
    :class:`ChannelClosed` (with ``case_index``) for a send on a closed
    channel or a receive from a closed and drained one, and the context's
    error when ``ctx`` is done.
    """
    if not cases:
        raise ValueError("select needs at least one case")
    for c in cases:
        if not isinstance(c, (RecvCase, SendCase)):
            raise TypeError(f"select takes channel.recv_case()/send_case(v), not {c!r}")
    if ctx is not None:
        ctx.check()
    channels = sorted({id(c.channel): c.channel for c in cases}.values(), key=id)
    for ch in channels:  # a global order (by id) keeps two selects from deadlocking
        ch._lock.acquire()
    try:
        n = len(cases)
        start = random.randrange(n) if n > 1 else 0
        for k in range(n):
            i = (start + k) % n
            c = cases[i]
            ch = c.channel
            if c.sending:
                if ch._closed:
                    raise ChannelClosed(ch._describe("send on closed channel"), case_index=i)
                handed = False
                while ch._recvq:
                    e = ch._recvq.popleft()
                    if e.waiter.try_claim():
                        e.waiter.complete(e.index, c.item)
                        handed = True
                        break
                if handed:
                    return i, None
                if len(ch._buf) < ch._capacity:
                    ch._buf.append(c.item)
                    return i, None
            else:
                ok, item = ch._take_locked()
                if ok:
                    return i, item
                if ch._closed:
                    raise ChannelClosed(ch._describe("channel closed"), case_index=i)
        if default:
            return None, None
        if timeout is not None and timeout <= 0:
            raise Timeout("select timed out")
        w = Waiter()
        queued = []
        for i, c in enumerate(cases):
            e = Entry(w, i, c.item if c.sending else None)
            (c.channel._sendq if c.sending else c.channel._recvq).append(e)
            queued.append((c.channel, e, c.sending))
    finally:
        for ch in channels:
            ch._lock.release()
    queued_t = tuple(queued)
    _park(w, queued_t, timeout, ctx, "select timed out")
    # Leave the queues of the cases that did not fire.
    for ch, e, sending in queued_t:
        if e.index != w.index:
            ch._unqueue(e, sending)
    if w.value is CLOSED:
        raise ChannelClosed(cases[w.index].channel._describe("channel closed"),
                            case_index=w.index)
    return w.index, (None if cases[w.index].sending else w.value)
