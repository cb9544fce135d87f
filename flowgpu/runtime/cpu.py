"""Host stages: the loop each worker thread runs, and the error policy.

A :class:`StageRun` is one stage's state for one run: its intakes, its
outlet, its workers' counters and, for ordered stages with several workers,
its reorder buffer. Each worker thread calls :meth:`StageRun.work`; the last
worker to finish closes the stage's outlet, which closes the consumers' ports
once their other writers are done too.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from ..channel import ChannelClosed
from ..context import Context
from ..errors import Cancelled, KernelError, StageError, StageKernelError
from ..graph import StageSpec
from ..report import WorkerStats
from .flow import _SCALARS, Intake, Lane, Outlet, ReorderBuffer, item_nbytes

__all__ = ["StageRun", "Hooks"]

_clock = time.perf_counter


class Hooks:
    """Called by every worker thread; each defaults to nothing.

    ``worker_start(stage, worker_index) -> cpus or None`` runs first in the
    worker's own thread (pinning lives there); ``collected_value(item)`` is what
    a ``collect`` keeps of an item (a device collect unwraps device items);
    ``unwraps_collected`` is False when that is always the item itself.
    """

    unwraps_collected = False

    def worker_start(self, stage: StageRun, worker: int) -> frozenset[int] | None:
        return None

    def collected_value(self, item: Any) -> Any:
        return item


class StageRun:
    """One stage, for one run."""

    def __init__(self, spec: StageSpec, ctx: Context, intakes: list[Intake],
                 outlet: Outlet | None, invoke: Callable[[Any], Any] | None,
                 dead_letters: list[StageError], hooks: Hooks, device: str = "cpu",
                 trace: bool = False, on_end: Callable[[], None] | None = None,
                 metrics: bool = True) -> None:
        self.spec = spec
        self.name = spec.name
        self.kind = spec.kind
        self.ctx = ctx
        self.intakes = intakes
        self.outlet = outlet
        self.invoke = invoke
        self.device = device
        self.hooks = hooks
        self.dead_letters = dead_letters
        self.workers = spec.workers
        # metrics=False: the worker loops that can skip their per-item clocks do
        self.metrics = metrics
        self.stats = [WorkerStats() for _ in range(spec.workers)]
        if trace:
            for st in self.stats:
                st.spans = []
        self._on_end = on_end
        self.collected: list[Any] = []
        self.started = self.ended = 0.0
        self._alive = spec.workers
        self._failed = False  # a worker ended by an error
        self._lock = threading.Lock()  # guards _alive; nobody waits on it
        # one worker between batched ports, untraced: a batch at a time
        self.chained = spec.workers == 1 and not trace and (
            (spec.kind == "source" and outlet is not None and outlet.single_lane is not None)
            or (spec.kind in _CHAIN_LOOPS and len(intakes) == 1 and intakes[0].port.batched
                and (outlet is None or outlet.single_lane is not None)))
        self.reorder: ReorderBuffer | None = None
        if spec.ordered and spec.workers > 1 and outlet is not None:
            self.reorder = ReorderBuffer(outlet.send, intakes[0].release)

    # -- the thread's entry point ------------------------------------------------
    def work(self, worker: int) -> None:
        st = self.stats[worker]
        st.thread_id = threading.get_ident()
        with self._lock:
            if not self.started:
                self.started = _clock()
        failed = False
        try:
            st.cpus = self.hooks.worker_start(self, worker)
            loop = _CHAIN_LOOPS.get(self.kind) if self.chained else None
            (loop or _LOOPS[self.kind])(self, st)
        except BaseException:
            failed = True
            raise
        finally:
            with self._lock:
                self._alive -= 1
                self._failed = self._failed or failed
                last = self._alive == 0
                if last:
                    self.ended = _clock()
            if last:
                try:
                    if self.outlet is not None:
                        # a failed stage ships nothing more: its error must not
                        # wait for room downstream before it reaches the run
                        self.outlet.done(failed=self._failed)
                finally:
                    # even when the last ship was cut short by a cancel: the
                    # run's observers wait for every stage to have ended
                    if self._on_end is not None:
                        self._on_end()

    # -- the error policy ----------------------------------------------------------
    def apply(self, seq: int, item: Any, st: WorkerStats) -> list[Any]:
        """Run the stage function on one item; the outputs as a list.

        ``on_error="raise"`` raises StageError; ``"skip"`` records it in the
        dead letters and returns no output; ``"retry"`` calls again after
        ``backoff * 2**k`` seconds (waiting on the run's context, so a cancel
        cuts it short), then raises like ``"raise"``.
        """
        try:
            return self._call(item)
        except Exception as exc:
            return self.recover(seq, item, exc, st)

    def recover(self, seq: int, item: Any, exc: Exception, st: WorkerStats) -> list[Any]:
        """The stage function raised ``exc`` on item ``seq``: apply the error
        policy (see :meth:`apply`); the item's outputs if a retry succeeds."""
        spec = self.spec
        attempt = 0
        while True:
            if isinstance(exc, Cancelled) and self.ctx.err is not None:
                raise exc  # the run is ending; not this item's fault
            if spec.on_error == "retry" and attempt < spec.retries:
                attempt += 1
                if self.ctx.done.wait(spec.backoff * 2 ** (attempt - 1)):
                    self.ctx.check()
                try:
                    return self._call(item)
                except Exception as again:
                    exc = again
                    continue
            cls = StageKernelError if isinstance(exc, KernelError) else StageError
            err = cls(self.name, seq, item, cause=exc, fn=self._replay_fn())
            if spec.on_error == "skip":
                st.errors += 1
                self.dead_letters.append(err)
                return []
            raise err from exc

    def _call(self, item: Any) -> list[Any]:
        kind = self.kind
        fn = self.invoke
        if kind == "map":
            return [fn(item)]
        if kind == "filter":
            return [item] if fn(item) else []
        if kind == "flat_map":
            return list(fn(item))
        if kind == "unbatch":
            return list(item)
        fn(item)  # sink
        return []

    def _replay_fn(self) -> Callable[[Any], Any]:
        fn = self.invoke
        if self.kind == "flat_map":
            return lambda item: list(fn(item))
        if self.kind == "unbatch":
            return list
        return fn


# Timing every item costs a few hundred nanoseconds, which is a lot next to a
# channel hop of a microsecond or two. When a stage's items are that cheap
# (its timed items took under _FAST seconds on average, waits included), only
# about one item in 32 is timed, and the untimed ones after it are credited
# with its times, channel depth and bytes. The gaps are random (16 to 47
# items), so that a periodic pattern (bursts from a reorder window) cannot
# lock onto them and bias the estimate. Item counts stay exact; stages with
# slower items, short streams and traced runs time every item.
_FAST = 50e-6
_SKIP_MIN = 16
_WARMUP = 64  # items timed before sampling may start (a run's start is bursty)


def _credit(st: WorkerStats, last: tuple, n: int) -> None:
    """Count ``n`` untimed items as copies of the ``last`` timed one."""
    starved, busy, blocked, depth, bytes_in, bytes_out = last
    st.starved_s += starved * n
    st.busy_s += busy * n
    st.blocked_s += blocked * n
    st.takes += n
    st.depth_sum += depth * n
    st.bytes_in += bytes_in * n
    st.bytes_out += bytes_out * n


def _map_loop(stage: StageRun, st: WorkerStats) -> None:
    """map, flat_map, filter, unbatch and sink: take, apply, emit.

    Timed items (all of them, or one in about 32 once items prove cheap) get
    four clock reads; ``run(metrics=False)`` reads no clock at all.
    """
    intake = stage.intakes[0]
    outlet = stage.outlet
    reorder = stage.reorder
    release = intake.release
    apply = stage.apply
    spans = st.spans
    # items left untimed before the next timed one; -1: never time (metrics off)
    skip = 0 if stage.metrics or spans is not None else -1
    untimed = 0  # items untimed since the last timed one, to credit
    last: tuple = ()
    timed, timed_s = 0, 0.0  # items timed, and their cycle times summed
    gap = random.Random().getrandbits
    try:
        while True:
            timing = skip == 0
            if timing:
                if untimed:
                    _credit(st, last, untimed)
                    untimed = 0
                t0 = _clock()
            elif skip > 0:
                skip -= 1
            try:
                seq, item = intake.take()
            except ChannelClosed:
                return
            st.items_in += 1
            if timing:
                t1 = _clock()
                depth = intake.depth()
            outs = apply(seq, item, st)
            if timing:
                t2 = _clock()
            st.items_out += len(outs)
            if reorder is not None:
                reorder.put(seq, outs)
            else:
                if outlet is not None:
                    for out in outs:
                        outlet.send(out)
                release()
            if not timing:
                if skip >= 0:
                    untimed += 1
                continue
            t3 = _clock()
            if spans is not None:
                spans.append((seq, t1, t2))
            bytes_in = item_nbytes(item)
            bytes_out = 0
            for out in outs:
                bytes_out += item_nbytes(out)
            last = (t1 - t0, t2 - t1, t3 - t2, depth, bytes_in, bytes_out)
            _credit(st, last, 1)
            if depth > st.depth_max:
                st.depth_max = depth
            timed += 1
            timed_s += t3 - t0
            if spans is None and timed >= _WARMUP and timed_s < _FAST * timed:
                skip = _SKIP_MIN + gap(5)
    finally:
        if untimed:
            _credit(st, last, untimed)


def _chain_loop(stage: StageRun, st: WorkerStats) -> None:
    """map, flat_map, filter, unbatch and sink with one worker between
    batched ports: a batch of inputs at a time, one clock read per batch.

    Each output goes into the consumer's open batch as soon as it is made
    (never held back while the stage function runs on the next item), so
    what a blocked stage function waits for downstream is never stranded
    here. Errors go through the same policy as one item at a time.
    """
    intake = stage.intakes[0]
    outlet = stage.outlet
    lane = outlet.single_lane if outlet is not None else None
    put = lane.put if lane is not None else None
    ctx = stage.ctx
    kind = stage.kind
    fn = stage.invoke
    recover = stage.recover
    nbytes = item_nbytes
    while True:
        taken = _take_batch(intake, st)
        if taken is None:
            return
        seq, items = taken
        t1 = _clock()
        blocked = 0.0
        bytes_in = bytes_out = 0
        if kind == "map" and lane is not None:
            blocked, bytes_in, bytes_out = _map_batch(stage, seq, items, lane, st)
            items = ()
        for item in items:
            if ctx._err is not None:  # cancelled: not one more call
                ctx.check()
            st.items_in += 1
            bytes_in += nbytes(item)
            try:
                if kind == "map":
                    outs = (fn(item),)
                elif kind == "filter":
                    outs = (item,) if fn(item) else ()
                elif kind == "flat_map":
                    outs = list(fn(item))
                elif kind == "unbatch":
                    outs = list(item)
                else:
                    fn(item)  # sink
                    outs = ()
            except Exception as exc:
                outs = recover(seq, item, exc, st)
            seq += 1
            for out in outs:
                b = nbytes(out)
                if b > outlet.fit_above:
                    outlet._fit(b)
                bytes_out += b
                blocked += put(out, ctx)
                st.items_out += 1
        st.busy_s += _clock() - t1 - blocked
        st.blocked_s += blocked
        st.bytes_in += bytes_in
        st.bytes_out += bytes_out


def _take_batch(intake: Intake, st: WorkerStats) -> tuple[int, list[Any]] | None:
    """The next batch for a one-worker stage on a batched port, its wait and
    the channel's depth counted; None at the end of the stream."""
    t0 = _clock()
    try:
        seq, items = intake.take_many()
    except ChannelClosed:
        return None
    n = len(items)
    depth = intake.depth()
    st.starved_s += _clock() - t0
    st.takes += n
    st.depth_sum += depth * n
    if depth > st.depth_max:
        st.depth_max = depth
    return seq, items


def _map_batch(stage: StageRun, seq: int, items: list[Any], lane: Lane,
               st: WorkerStats) -> tuple[float, int, int]:
    """The map case of :func:`_chain_loop`, with the port's append inlined
    (this loop is most of a cheap pipeline's time). Returns the seconds
    blocked shipping the outputs, and the bytes in and out."""
    fn = stage.invoke
    outlet = stage.outlet
    ctx = stage.ctx
    port = lane.port
    buf = lane.open
    limit = port.limit
    nbytes = item_nbytes
    plain = _SCALARS
    blocked = 0.0
    bytes_in = bytes_out = 0
    for item in items:
        if ctx._err is not None:  # cancelled: not one more call
            ctx.check()
        st.items_in += 1
        if type(item) not in plain:
            bytes_in += nbytes(item)
        try:
            out = fn(item)
        except Exception as exc:
            for out in stage.recover(seq, item, exc, st):  # none when skipped
                blocked += lane.put(out, ctx)
                bytes_out += nbytes(out)
                st.items_out += 1
            seq += 1
            continue
        seq += 1
        st.items_out += 1
        if type(out) not in plain:
            b = nbytes(out)
            if b > outlet.fit_above:
                outlet._fit(b)
                limit = port.limit
            bytes_out += b
        buf.append(out)
        if len(buf) >= limit or port.hungry:
            blocked += lane.ship(ctx)
    return blocked, bytes_in, bytes_out


def _collect_chain_loop(stage: StageRun, st: WorkerStats) -> None:
    """collect from a batched port: a batch at a time."""
    intake = stage.intakes[0]
    out = stage.collected
    finish = stage.hooks.collected_value
    plain = not stage.hooks.unwraps_collected
    nbytes = item_nbytes
    while True:
        taken = _take_batch(intake, st)
        if taken is None:
            return
        items = taken[1]
        t1 = _clock()
        for item in items:
            st.bytes_in += nbytes(item)
        if plain:
            out.extend(items)
        else:
            out.extend(finish(item) for item in items)
        st.items_in += len(items)
        st.busy_s += _clock() - t1


def _source_loop(stage: StageRun, st: WorkerStats) -> None:
    spec = stage.spec
    outlet = stage.outlet
    spans = st.spans
    index = 0
    it = None
    ended = False  # True once the iterator is exhausted
    # Cheap items are timed one in about 32, as in _map_loop.
    skip = untimed = timed = 0
    timed_s = 0.0
    last: tuple = (0.0, 0.0, 0)  # busy, blocked, bytes of the last timed item
    gap = random.Random().getrandbits
    try:
        try:
            items = spec.fn() if callable(spec.fn) else spec.fn
            it = iter(items)
        except Exception as exc:
            raise StageError(stage.name, None, cause=exc, has_item=False) from exc
        if stage.chained:
            try:
                _pump(stage, st, it)
            finally:
                index = st.items_out
            ended = True
            return
        ctx = stage.ctx
        while True:
            if ctx._err is not None:  # cancelled: pull nothing more
                ctx.check()
            timing = not skip
            if timing:
                t0 = _clock()
            else:
                skip -= 1
            try:
                item = next(it)
            except StopIteration:
                ended = True
                return
            except Exception as exc:
                if isinstance(exc, Cancelled) and stage.ctx.err is not None:
                    raise
                raise StageError(stage.name, index, cause=exc, has_item=False) from exc
            if not timing:
                outlet.send(item)
                index += 1
                st.items_out = index
                untimed += 1
                continue
            if untimed:
                _credit_source(st, last, untimed)
                untimed = 0
            t1 = _clock()
            if spans is not None:
                spans.append((index, t0, t1))
            nbytes = item_nbytes(item)
            outlet.send(item)
            t2 = _clock()
            st.busy_s += t1 - t0
            st.blocked_s += t2 - t1
            st.bytes_out += nbytes
            index += 1
            st.items_out = index
            timed += 1
            timed_s += t2 - t0
            if spans is None and timed >= _WARMUP and timed_s < _FAST * timed:
                skip = _SKIP_MIN + gap(5)
                last = (t1 - t0, t2 - t1, nbytes)
    finally:
        if untimed:
            _credit_source(st, last, untimed)
        # Close the generator here, in the thread that ran it, so that its
        # `finally` runs now, whatever ended the loop.
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:
                # A failing close() is the source's error when the loop ended
                # cleanly; when the run is already failing, that error wins.
                if ended:
                    raise StageError(stage.name, index, cause=exc, has_item=False) from exc


def _pump(stage: StageRun, st: WorkerStats, it: Any) -> None:
    """The source loop into one batched port, with the port's append inlined
    (see _map_batch). Returns when the iterator is exhausted; the counters
    are brought up to date at each shipped batch and at the end."""
    outlet = stage.outlet
    lane = outlet.single_lane
    port = lane.port
    ctx = stage.ctx
    buf = lane.open
    limit = port.limit
    plain = _SCALARS
    nbytes = item_nbytes
    index = 0
    bytes_out = 0
    mark = _clock()
    try:
        while True:
            if ctx._err is not None:  # cancelled: pull nothing more
                ctx.check()
            try:
                item = next(it)
            except StopIteration:
                return
            except Exception as exc:
                if isinstance(exc, Cancelled) and stage.ctx.err is not None:
                    raise
                raise StageError(stage.name, index, cause=exc, has_item=False) from exc
            index += 1
            st.items_out = index
            if type(item) not in plain:
                b = nbytes(item)
                if b > outlet.fit_above:
                    outlet._fit(b)
                    limit = port.limit
                bytes_out += b
            buf.append(item)
            if len(buf) >= limit or port.hungry:
                blocked = lane.ship(ctx)
                if blocked:
                    now = _clock()
                    st.busy_s += now - blocked - mark
                    st.blocked_s += blocked
                    mark = now
    finally:
        st.busy_s += _clock() - mark
        st.items_out = index
        st.bytes_out += bytes_out


def _credit_source(st: WorkerStats, last: tuple, n: int) -> None:
    busy, blocked, nbytes = last
    st.busy_s += busy * n
    st.blocked_s += blocked * n
    st.bytes_out += nbytes * n


def _batch_loop(stage: StageRun, st: WorkerStats) -> None:
    intake = stage.intakes[0]
    outlet = stage.outlet
    size = stage.spec.extra["size"]
    buf: list[Any] = []
    while True:
        t0 = _clock()
        try:
            _, item = intake.take()
        except ChannelClosed:
            break
        st.starved_s += _clock() - t0
        st.items_in += 1
        buf.append(item)
        if len(buf) == size:
            t1 = _clock()
            outlet.send(buf)
            st.blocked_s += _clock() - t1
            st.items_out += 1
            buf = []
    if buf:
        outlet.send(buf)
        st.items_out += 1


def _zip_loop(stage: StageRun, st: WorkerStats) -> None:
    intakes = stage.intakes
    outlet = stage.outlet
    names = [", ".join(s.producers) for s in stage.spec.inputs]
    row = 0
    while True:
        t0 = _clock()
        items = []
        for k, intake in enumerate(intakes):
            try:
                items.append(intake.take()[1])
            except ChannelClosed:
                if k == 0:
                    _check_all_ended(stage, intakes, names, row)
                    return
                raise StageError(stage.name, row, cause=ValueError(
                    f"input {k} ({names[k]}) ended after {row} items while input 0 "
                    f"({names[0]}) had more"), has_item=False) from None
        st.starved_s += _clock() - t0
        st.items_in += len(items)
        t1 = _clock()
        outlet.send(tuple(items))
        st.blocked_s += _clock() - t1
        st.items_out += 1
        row += 1


def _check_all_ended(stage: StageRun, intakes: list[Intake], names: list[str], row: int) -> None:
    for k in range(1, len(intakes)):
        try:
            intakes[k].take()
        except ChannelClosed:
            continue
        raise StageError(stage.name, row, cause=ValueError(
            f"input 0 ({names[0]}) ended after {row} items while input {k} "
            f"({names[k]}) had more"), has_item=False)


def _collect_loop(stage: StageRun, st: WorkerStats) -> None:
    intake = stage.intakes[0]
    out = stage.collected
    finish = stage.hooks.collected_value
    while True:
        t0 = _clock()
        try:
            _, item = intake.take()
        except ChannelClosed:
            return
        t1 = _clock()
        st.starved_s += t1 - t0
        st.items_in += 1
        depth = intake.depth()
        st.takes += 1
        st.depth_sum += depth
        if depth > st.depth_max:
            st.depth_max = depth
        st.bytes_in += item_nbytes(item)
        out.append(finish(item))
        st.busy_s += _clock() - t1


# The loops whose per-item clocks and counters run(metrics=False) turns off;
# the others count too little per item to matter.

_LOOPS: dict[str, Callable[[StageRun, WorkerStats], None]] = {
    "source": _source_loop,
    "map": _map_loop,
    "flat_map": _map_loop,
    "filter": _map_loop,
    "unbatch": _map_loop,
    "sink": _map_loop,
    "batch": _batch_loop,
    "zip": _zip_loop,
    "collect": _collect_loop,
}

_CHAIN_LOOPS: dict[str, Callable[[StageRun, WorkerStats], None]] = {
    "map": _chain_loop,
    "flat_map": _chain_loop,
    "filter": _chain_loop,
    "unbatch": _chain_loop,
    "sink": _chain_loop,
    "collect": _collect_chain_loop,
}

#: code objects of the engine's frames that call a stage function, and a
#: source's iterator: the frame just inside one of them is the user's code
#: (the stall watchdog reports it)
STAGE_CALLERS = frozenset(f.__code__ for f in (StageRun._call, _chain_loop, _map_batch))
SOURCE_CALLERS = frozenset(f.__code__ for f in (_source_loop, _pump))
