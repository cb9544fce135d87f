"""How items move between stages: ports, outlets, intakes and the reorder buffer.

* A :class:`Port` is one input channel of a stage, closed when the last stage
  writing to it has finished (several writers: a ``merge``). Where the
  capacity was left to the engine, small items travel through it in
  micro-batches, each producing stage filling its own :class:`Lane`.
* An :class:`Outlet` is where a stage's outputs go: one port per consumer
  (a broadcast when the stream feeds several stages).
* An :class:`Intake` numbers the items a stage takes from its port, so that
  errors name the item and ordered stages can restore the order.
* A :class:`ReorderBuffer` lets several workers finish out of order and emits
  their outputs in intake order, holding at most ``window`` items.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..channel import Channel
from ..context import Context
from ..graph import BATCH_BYTES, DEFAULT_CAPACITY, SMALL_ITEM_BYTES

__all__ = ["Port", "Lane", "Outlet", "Intake", "ReorderBuffer", "item_nbytes"]

_clock = time.perf_counter


# types whose items are never large: checked first, it is the common case
_SCALARS = frozenset({int, float, complex, bool, type(None)})
_SIZED = frozenset({bytes, bytearray, str})
_CONTAINERS = (tuple, list, dict)
_MAX_LOOK = 64  # elements of a container looked at, in each of two levels


def item_nbytes(item: Any, _level: int = 0) -> int:
    """About how many bytes an item holds: an array's ``nbytes`` (host or
    device), the length of a ``bytes``/``str``; for a tuple, list or dict, 8
    bytes per element (the reference) plus what its first 64 elements (dict:
    values) hold, scaled up to its length, two levels deep; 0 for anything
    else. Sizes batches and capacities, the byte budget and the metrics.
    Never raises: an ``nbytes`` method, or a property that raises, on a
    user's object must not fail the run."""
    cls = type(item)
    if cls in _SCALARS:
        return 0
    if cls in _SIZED:
        return len(item)
    if isinstance(item, _CONTAINERS):
        try:
            n = len(item)
            if _level >= 2 or not n:
                return 8 * n
            elements = item.values() if isinstance(item, dict) else item
            held = looked = 0
            for x in elements:
                if looked == _MAX_LOOK:
                    break
                held += item_nbytes(x, _level + 1)
                looked += 1
            return 8 * n + (held * n // looked if looked else 0)
        except Exception:  # a user's container subclass that fails to iterate
            return 0
    try:
        n = getattr(item, "nbytes", 0)
    except Exception:
        return 0
    return n if isinstance(n, int) else 0


def _cut(buf: list[Any]) -> list[Any]:
    """Take everything out of an open batch (under its port's _lock)."""
    n = len(buf)
    batch = buf[:n]
    del buf[:n]
    return batch


class Port:
    """A stage's input channel and the count of stages still writing to it.

    A *batched* port (capacity not given, no byte budget) moves items in
    lists. Each producing stage appends to its own open batch in the port
    (its :class:`Lane`), which it ships into the channel once it holds
    ``limit`` items, or at once when the consumer is *hungry* (it found the
    channel and every open batch empty and is about to wait). A consumer
    that finds the channel empty takes what the open batches hold, however
    little. So every item is, as soon as it is produced, where its consumer
    can reach it: no producer holds items back while it waits or runs user
    code.

    Batches adapt to the pace of the two sides: a consumer that keeps up gets
    short batches without delay, one that falls behind gets full ones, with
    one channel hand-off per batch instead of per item. The channel counts
    batches: at most ``capacity * limit`` items wait in it, plus the open
    batches.

    Order: a stage emits one item at a time (one worker, a reorder buffer's
    single emitter, or a broadcast under its locks) and ships synchronously,
    so while a batch it cut is on its way to the channel nothing newer of
    that stage is in its open batch for the consumer to overtake it with.
    This is why each producing stage has a lane of its own: in a shared one,
    a ``merge`` partner's newer items could be taken while an older batch
    holding them was still in flight. (An unordered stage with several
    workers promises no order.)

    Appending to an open batch takes no lock (``list.append`` is atomic);
    taking a batch out of it (copy the first ``n``, delete them) is done
    under ``_lock``, so an append that lands meanwhile stays for the next
    batch. The consumer sets ``hungry`` *before* it looks at the open batches
    and a producer reads it *after* it appended, so one of the two always
    sees a new item: it is never left behind while the consumer waits. Only
    the consumer (when it found items) and a producer that is about to send
    a batch clear ``hungry``; a producer that found its open batch already
    taken leaves it as it is.
    """

    __slots__ = ("channel", "_writers", "_lock", "auto", "batched", "limit", "lanes",
                 "hungry", "branch_lock")

    def __init__(self, channel: Channel, writers: int, auto: bool = False,
                 batch: int = 0) -> None:
        self.channel = channel
        self._writers = writers
        # True while the channel's capacity was not given and no large item
        # has been through it yet (see Outlet._fit)
        self.auto = auto
        # batch > 0: items travel in lists of up to `limit` (see the class doc)
        self.batched = batch > 0
        self.limit = batch
        self.lanes: list[Lane] = []
        self.hungry = False
        # Guards _writers, `lanes` and taking batches out of open batches;
        # held for a few list operations, never while sending or waiting.
        self._lock = threading.Lock()
        # Shared by the ports that are branches of one stream (the same
        # producers feed them all), when there are several; see Outlet.
        self.branch_lock: threading.Lock | None = None

    def lane(self) -> Lane:
        """A new producing stage's open batch in this port."""
        lane = Lane(self)
        with self._lock:
            self.lanes.append(lane)
        return lane

    def writer_done(self, lane: Lane | None, ctx: Context | None = None,
                    failed: bool = False) -> None:
        """A producing stage has finished: it ships its open batch, and the
        last one closes the channel. A stage that ``failed`` ships nothing and
        closes nothing: its error must reach the run at once, not wait for
        room downstream, and a consumer must not take the early end for an
        error of its own (a zip would report its inputs' lengths). The run is
        ending: the cancel wakes the consumers, and what waited is dropped."""
        try:
            if lane is not None and not failed:
                lane.ship(ctx)
        finally:
            with self._lock:
                self._writers -= 1
                last = self._writers == 0
            if last and not failed:
                self.channel.close()

    # -- consumer side ---------------------------------------------------------------
    def take_batch(self, ctx: Context) -> list[Any]:
        """The next batch: from the channel, else the open ones, else wait.
        Raises ChannelClosed once the producers are done and all is taken."""
        channel = self.channel
        ok, batch = channel._poll()
        if ok:
            return batch
        self.hungry = True  # before looking: see the class doc
        with self._lock:
            # Look at the channel again: a producer that saw us hungry may
            # have shipped a batch since, and appended newer items to its
            # open batch after it; the shipped one comes first.
            ok, batch = channel._poll()
            if not ok:
                lanes = self.lanes
                batch = _cut(lanes[0].open) if len(lanes) == 1 else [
                    x for lane in lanes for x in _cut(lane.open)]
        if batch:
            self.hungry = False
            return batch
        return channel.recv(ctx=ctx)

    def depth(self) -> int:
        """Items waiting: in the channel and, when batched, in the open batches."""
        if not self.batched:
            return len(self.channel)
        return (sum(len(b) for b in self.channel._snapshot())
                + sum(len(lane.open) for lane in self.lanes))


class Lane:
    """One producing stage's open batch in a batched :class:`Port`."""

    __slots__ = ("port", "open")

    def __init__(self, port: Port) -> None:
        self.port = port
        self.open: list[Any] = []

    def put(self, item: Any, ctx: Context) -> float:
        """Append ``item`` to the open batch; ship the batch when it is full
        or the consumer is waiting (may block on backpressure). Returns the
        seconds it was blocked (0.0 when it did not ship)."""
        buf = self.open
        buf.append(item)
        port = self.port
        if len(buf) < port.limit and not port.hungry:
            return 0.0
        return self.ship(ctx)

    def ship(self, ctx: Context | None) -> float:
        """Send what the open batch holds into the channel (blocking while it
        is full); the seconds it was blocked."""
        port = self.port
        with port._lock:
            batch = _cut(self.open)
            if not batch:
                # The consumer took it first. Leave `hungry` alone: it may
                # have set it again since, and be waiting for the next item.
                return 0.0
            port.hungry = False  # what it waits for is on its way
        t = _clock()
        try:
            port.channel.send(batch, ctx=ctx)
        except BaseException:
            # Cancelled on the way: put the batch back in front, so that no
            # item of this stage reaches the consumer ahead of it (what a
            # cancelled run collected stays a prefix, in order).
            with port._lock:
                self.open[:0] = batch
            raise
        return _clock() - t


class Outlet:
    """Sends each output to every consumer's port (broadcast), in order.

    A broadcast sends one item to all its ports before the next item goes
    out, whichever worker sends it, so that every consumer sees the items in
    the same order: ``fg.zip(s.map(f), s.map(g))`` pairs ``f(x)`` with
    ``g(x)`` even when ``s`` comes from an unordered stage with several
    workers, and when ``s`` is a merge of several stages. The branch locks
    of its ports make it so: ports fed by the same producers (the branches
    of one stream) share one, which every one of those producers holds while
    it sends an item to all its ports (taken in one global order). A port
    that is the only branch of its stream has none: two stages that
    broadcast into one merged port do not wait for each other there, or
    ``zip(x, y)`` next to ``x.merge(y)`` would deadlock (x holding the merge
    port while it waits for the zip, which waits for y).
    """

    __slots__ = ("ports", "lanes", "_ctx", "_single", "single_lane", "_locks", "_auto",
                 "fit_above")

    def __init__(self, ports: list[Port], ctx: Context) -> None:
        self.ports = ports
        #: this stage's open batch in each batched port (None: unbatched)
        self.lanes = [p.lane() if p.batched else None for p in ports]
        self._ctx = ctx
        self._auto = [p for p in ports if p.auto]
        #: items of more bytes than this resize the auto-sized ports (see _fit)
        self.fit_above = self._threshold()
        one = ports[0] if len(ports) == 1 else None
        self._single = one.channel if one is not None and not one.batched else None
        #: the lane, when the stage feeds one batched port
        self.single_lane = self.lanes[0] if one is not None and one.batched else None
        # Held while one item goes to all the ports. Who waits: the stage's
        # other workers, and the other producers of the same streams. Who
        # notifies: the holder, once its sends returned or raised; its sends
        # honour the run's context, so a cancel frees it.
        self._locks = tuple(sorted({id(p.branch_lock): p.branch_lock for p in ports
                                    if p.branch_lock is not None}.items()))

    def send(self, item: Any) -> None:
        """Blocks while a consumer's port is full (backpressure); raises the
        run's Cancelled/DeadlineExceeded when the run ends."""
        if self._auto:
            n = item_nbytes(item)
            if n > self.fit_above:
                self._fit(n)
        lane = self.single_lane
        if lane is not None:
            lane.put(item, self._ctx)
            return
        single = self._single
        if single is not None:
            single.send(item, ctx=self._ctx)
            return
        locks = self._locks
        taken = 0
        try:
            for _, lock in locks:
                lock.acquire()
                taken += 1
            for port, lane in zip(self.ports, self.lanes, strict=True):
                if lane is not None:
                    lane.put(item, self._ctx)
                else:
                    self._put(port, item)
        finally:
            for _, lock in locks[:taken]:
                lock.release()

    def _put(self, port: Port, item: Any) -> None:
        port.channel.send(item, ctx=self._ctx)

    def _fit(self, n: int) -> None:
        """Ports whose capacity was not given are sized by the largest item
        seen so far: batches of at most SMALL_ITEMS_BATCH items and about
        BATCH_BYTES, and from the first item over SMALL_ITEM_BYTES no batches
        and DEFAULT_CAPACITY items, for the rest of the run. Many small items
        make few hand-offs; large ones stay few in memory. ``n``: the bytes
        of the item that asks (``item_nbytes``, already known to the caller)."""
        for port in self._auto:
            # under the port's lock: another producer of a merge, or another
            # worker, may be fitting the same port for another item
            with port._lock:
                if not port.auto:
                    continue
                if n > SMALL_ITEM_BYTES:
                    port.channel._set_capacity(DEFAULT_CAPACITY)
                    port.limit = 1 if port.batched else 0
                    port.auto = False
                elif port.batched:
                    port.limit = max(1, min(port.limit, BATCH_BYTES // max(n, 1)))
        self._auto = [p for p in self._auto if p.auto]
        self.fit_above = self._threshold()

    def _threshold(self) -> int:
        above = 1 << 62
        for port in self._auto:
            above = min(above, SMALL_ITEM_BYTES,
                        BATCH_BYTES // port.limit if port.batched else SMALL_ITEM_BYTES)
        return above

    def done(self, failed: bool = False) -> None:
        """This stage will send nothing more (``failed``: it ended by an error).
        Every port is told, even when shipping into one of them raises (the
        run was cancelled meanwhile); the first such error is raised after."""
        error: BaseException | None = None
        for port, lane in zip(self.ports, self.lanes, strict=True):
            try:
                port.writer_done(lane, self._ctx, failed)
            except BaseException as exc:
                if error is None:
                    error = exc
                failed = True  # the run is ending: ship nothing more
        if error is not None:
            raise error


class Intake:
    """Takes numbered items from a port, for one or several workers.

    From a batched port it takes a batch at a time and hands out its items
    one by one, to whichever worker asks next.

    With ``window`` set (ordered stages with several workers), a worker may
    take item ``n`` only while fewer than ``window`` taken items are still
    waiting to be emitted: :meth:`release` returns a slot after emission. The
    slots are a channel of tokens, so waiting for one honours the context.
    """

    __slots__ = ("port", "channel", "_ctx", "_seq", "_lock", "_slots", "_pending")

    def __init__(self, port: Port, ctx: Context, window: int | None = None) -> None:
        self.port = port
        self.channel = port.channel
        self._ctx = ctx
        self._seq = 0
        # items of the batch being handed out, last first (pop() is cheap)
        self._pending: list[Any] = []
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
        """``(index, item)``; raises ChannelClosed at the end of the stream,
        and the run's Cancelled/DeadlineExceeded once it ends (even while
        items of a batch already taken remain)."""
        ctx = self._ctx
        if ctx._err is not None:
            ctx.check()
        with self._lock:
            if self._slots is not None:
                self._slots.recv(ctx=ctx)
                try:
                    item = self._next(ctx)
                except BaseException:
                    self._slots.send(None)
                    raise
            else:
                item = self._next(ctx)
            seq = self._seq
            self._seq = seq + 1
        return seq, item

    def take_many(self) -> tuple[int, list[Any]]:
        """``(index of the first, items)``: the rest of the batch being handed
        out, or the next batch (one item from an unbatched port). For a stage
        with one worker and no window. Raises ChannelClosed at the end."""
        ctx = self._ctx
        if ctx._err is not None:  # the run is over: take nothing more
            ctx.check()
        with self._lock:
            pending = self._pending
            if pending:
                pending.reverse()
                items = pending
                self._pending = []
            elif self.port.batched:
                items = self.port.take_batch(self._ctx)
            else:
                items = [self.channel.recv(ctx=self._ctx)]
            seq = self._seq
            self._seq = seq + len(items)
        return seq, items

    def _next(self, ctx: Context) -> Any:
        pending = self._pending
        if pending:
            return pending.pop()
        if not self.port.batched:
            return self.channel.recv(ctx=ctx)
        batch = self.port.take_batch(ctx)
        if len(batch) == 1:
            return batch[0]
        batch.reverse()
        item = batch.pop()
        self._pending = batch
        return item

    def depth(self) -> int:
        """Items waiting for this stage: in its port and taken but not yet handed out."""
        return self.port.depth() + len(self._pending)

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
