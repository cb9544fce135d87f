"""Micro-batches between stages whose capacity is not given (runtime/flow.py: Port).

Batches are internal: the user's items, including lists, come out as they
went in, in order, exactly once; no item is held back from a consumer that
waits for it (a stage or source that waits on downstream progress still
runs); memory stays bounded by items and by bytes.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sources import pulled_while_sink_is_held

import flowgpu as fg
from flowgpu.graph import (
    BATCH_BYTES,
    DEFAULT_CAPACITY,
    SMALL_ITEM_BYTES,
    SMALL_ITEMS_BATCH,
    SMALL_ITEMS_CAPACITY,
)


@pytest.mark.parametrize("workers", [1, 3])
def test_list_and_tuple_items_come_out_unchanged(workers):
    items = [[], [1], [1, 2], (), (3,), [[4]], None, "s", [None]] * 40
    g = fg.Graph("lists")
    g.source(items).map(lambda x: x, workers=workers).filter(lambda x: True).collect("o")
    assert g.run()["o"] == items


def test_unbatch_of_user_lists_still_flattens_one_level():
    g = fg.Graph("unbatch")
    g.source([[1, 2], [], [[3]]]).unbatch().collect("o")
    assert g.run()["o"] == [1, 2, [3]]


@pytest.mark.parametrize("middle", [0, 1, 2])
def test_a_source_waiting_for_the_sink_to_see_each_item_runs_to_the_end(middle):
    """Ping-pong through an event: item i+1 is made only after the sink got i."""
    seen = threading.Semaphore(0)
    got: list[int] = []

    def ping():
        for i in range(300):
            yield i
            assert seen.acquire(timeout=10), f"the sink never saw item {i}"

    def keep(x):
        got.append(x)
        seen.release()

    g = fg.Graph("pingpong")
    s = g.source(ping)
    for _ in range(middle):
        s = s.map(lambda x: x)
    s.sink(keep)
    g.run(timeout=60)
    assert got == list(range(300))


def test_a_stage_waiting_for_downstream_progress_is_not_starved_of_its_own_outputs():
    """A map whose call for item i waits until the sink took item i - 1."""
    done = [threading.Event() for _ in range(200)]

    def wait_for_previous(x):
        if x:
            assert done[x - 1].wait(10), f"item {x - 1} never reached the sink"
        return x

    g = fg.Graph("feedback")
    g.source(range(200)).map(wait_for_previous).sink(lambda x: done[x].set())
    g.run(timeout=60)
    assert all(e.is_set() for e in done)


def test_a_slow_source_items_reach_the_sink_one_by_one():
    """No batch waits to fill: each item reaches the sink before the next is made."""
    order: list[str] = []
    arrived = threading.Semaphore(0)

    def slow():
        for i in range(20):
            order.append(f"made {i}")
            yield i
            assert arrived.acquire(timeout=10)

    def sink(x):
        order.append(f"got {x}")
        arrived.release()

    g = fg.Graph("slow")
    g.source(slow).map(lambda x: x).sink(sink)
    g.run(timeout=60)
    assert order == [f"{w} {i}" for i in range(20) for w in ("made", "got")]


def test_mid_sized_items_get_smaller_batches_so_bytes_stay_bounded(parked):
    size = 16 * 1024  # bytes: under the no-batching threshold, above BATCH_BYTES / 256
    per_batch = BATCH_BYTES // size
    assert per_batch < SMALL_ITEMS_BATCH
    batches = SMALL_ITEMS_CAPACITY // SMALL_ITEMS_BATCH
    pulled = pulled_while_sink_is_held(lambda i: np.full(size, i % 256, np.uint8), parked,
                                       (batches + 4) * per_batch)
    # channel full of batches, one batch being shipped, the sink's batch
    assert pulled <= (batches + 2) * per_batch + 1
    assert pulled * size <= (batches + 2) * BATCH_BYTES + size


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_counters_are_exact_with_batches(workers, ordered):
    g = fg.Graph("counts")
    s = g.source(range(5000)).map(lambda x: x + 1, name="inc", workers=workers, ordered=ordered)
    s = s.filter(lambda x: x % 3, name="keep", workers=workers, ordered=ordered)
    s = s.flat_map(lambda x: [x] * (x % 3), name="repeat", workers=workers, ordered=ordered)
    s.collect("o")
    rep = g.run()
    kept = [x + 1 for x in range(5000) if (x + 1) % 3]
    want = [y for x in kept for y in [x] * (x % 3)]
    assert sorted(rep["o"]) == sorted(want)
    if ordered:
        assert rep["o"] == want
    st = rep.stages
    assert (st["inc"].items_in, st["inc"].items_out) == (5000, 5000)
    assert (st["keep"].items_in, st["keep"].items_out) == (5000, len(kept))
    assert (st["repeat"].items_in, st["repeat"].items_out) == (len(kept), len(want))
    assert st["collect:o"].items_in == len(want)


def test_an_error_in_the_middle_of_a_batch_names_its_item_and_keeps_earlier_results():
    def check(x):
        if x == 777:
            raise ValueError("bad item")
        return x

    g = fg.Graph("err")
    g.source(range(5000)).map(check).collect("o")
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert info.value.stage == "check" and info.value.item == 777
    partial = info.value.report["o"]
    assert partial == list(range(len(partial))) and len(partial) <= 777


@pytest.mark.parametrize("policy", ["skip", "retry"])
def test_error_policies_inside_a_batch(policy):
    calls: dict[int, int] = {}

    def flaky(x):
        calls[x] = calls.get(x, 0) + 1
        if x % 100 == 7 and (policy == "skip" or calls[x] == 1):
            raise ValueError(f"flaky {x}")
        return x

    g = fg.Graph("policy")
    g.source(range(1000)).map(flaky, on_error=policy).collect("o")
    rep = g.run()
    if policy == "skip":
        assert rep["o"] == [x for x in range(1000) if x % 100 != 7]
        assert [e.item for e in rep.errors] == list(range(7, 1000, 100))
    else:
        assert rep["o"] == list(range(1000))
        assert all(calls[x] == (2 if x % 100 == 7 else 1) for x in range(1000))


def test_batching_is_off_under_a_byte_budget_and_every_item_still_arrives():
    g = fg.Graph("budget")
    g.source(range(3000)).map(lambda x: x * 2).collect("o")
    rep = g.run(max_inflight_bytes=1 << 20)
    assert rep["o"] == [x * 2 for x in range(3000)]


@pytest.mark.parametrize(("workers", "ordered"), [(1, True), (2, True), (2, False), (4, True)])
def test_after_a_failure_a_stage_makes_no_call_on_the_rest_of_its_batch(workers, ordered):
    failed = threading.Event()
    late: list[int] = []

    def fail_at_50(x):
        if x == 50:
            failed.set()
            raise ValueError("boom")
        return x

    def slow_sink(x):
        ctx = fg.current_context()
        if ctx.err is not None:
            late.append(x)
        if failed.is_set():
            ctx.done.wait(5)  # hold until the cancel lands, mid-batch

    g = fg.Graph("stop")
    src = g.source(range(2000))
    src.map(fail_at_50).collect("o")
    src.sink(slow_sink, workers=workers, ordered=ordered)
    with pytest.raises(fg.StageError):
        g.run(timeout=60)
    # one worker: none; several: at most one call each that took its item
    # just before the cancel landed
    assert len(late) <= workers - 1


def test_a_deadline_stops_a_busy_chain_of_cheap_stages():
    import itertools

    g = fg.Graph("forever")
    g.source(itertools.count).map(lambda x: x + 1).filter(lambda x: x % 2).sink(lambda x: None)
    with pytest.raises(fg.DeadlineExceeded):
        g.run(timeout=0.3)


def test_a_late_ship_that_finds_nothing_keeps_the_consumer_hungry():
    """The interleaving that once stranded items, step by step in one thread:
    a producer sees the consumer hungry and goes to ship, but the consumer
    takes the item itself, comes back hungry and waits; the producer's ship
    then finds nothing, and must not clear ``hungry``, or the next item
    stays in the open batch while the consumer waits for ever."""
    from flowgpu.channel import Channel
    from flowgpu.runtime.flow import Port

    ctx = fg.Context()
    port = Port(Channel(4), writers=1, auto=True, batch=256)
    lane = port.lane()
    port.hungry = True          # consumer: about to look at the open batch
    lane.open.append("x0")      # producer: appends, sees hungry, goes to ship...
    assert port.take_batch(ctx) == ["x0"]  # ...but the consumer takes it first
    port.hungry = True          # consumer: back, finds nothing, about to wait
    assert lane.ship(ctx) == 0.0  # producer: its ship finds the batch gone
    assert port.hungry
    lane.put("x1", ctx)         # so the next item goes straight to the waiter
    assert port.channel._poll() == (True, ["x1"])


@pytest.mark.parametrize("make", [
    lambda i: (i, np.ones(SMALL_ITEM_BYTES + 1, np.uint8)),   # a tuple holding an array
    lambda i: {"key": i, "pixels": np.ones(SMALL_ITEM_BYTES + 1, np.uint8)},
    lambda i: bytes(SMALL_ITEM_BYTES + 1),
    lambda i: [np.ones(SMALL_ITEM_BYTES // 2, np.uint8)] * 3,
    lambda i: [float(i)] * (SMALL_ITEM_BYTES // 8 + 1),   # a long list of Python floats
], ids=["tuple", "dict", "bytes", "list", "floats"])
def test_large_items_inside_containers_are_seen_as_large(make, parked):
    # held by the sink, DEFAULT_CAPACITY in the channel, one being sent
    assert pulled_while_sink_is_held(make, parked, 60) == 1 + DEFAULT_CAPACITY + 1


class _RunsFirst:
    """A lock that runs ``action`` (once) just before its first acquisition:
    it stands for another thread getting the CPU at that very moment."""

    def __init__(self, action):
        self._lock = threading.Lock()
        self._action = action

    def __enter__(self):
        action, self._action = self._action, None
        if action is not None:
            action()
        self._lock.acquire()

    def __exit__(self, *exc):
        self._lock.release()


def test_a_batch_shipped_while_the_consumer_looks_comes_before_newer_items():
    """The consumer found the channel empty and said it is hungry; before it
    looks at the open batch, the producer ships x0 into the channel and
    appends x1. The consumer must take x0 first, not x1 from the open batch."""
    from flowgpu.channel import Channel
    from flowgpu.runtime.flow import Port

    ctx = fg.Context()
    port = Port(Channel(4), writers=1, auto=True, batch=256)
    lane = port.lane()

    def producer():
        lane.put("x0", ctx)  # sees the consumer hungry: ships at once
        lane.put("x1", ctx)  # stays in the open batch

    port._lock = _RunsFirst(producer)
    assert port.take_batch(ctx) == ["x0"]
    assert port.take_batch(ctx) == ["x1"]


def test_a_failed_producer_leaves_its_port_without_waiting_for_room():
    """Its error must reach the run at once: shipping its open batch into a
    full channel could wait for ever on a consumer that waits for the cancel,
    and closing the channel would let a consumer take the early end for an
    error of its own. It ships nothing and closes nothing; the cancel that
    its error brings ends the consumer."""
    from flowgpu.channel import Channel
    from flowgpu.runtime.flow import Port

    ctx = fg.Context()
    port = Port(Channel(1), writers=1, auto=True, batch=2)
    lane = port.lane()
    lane.put(0, ctx)
    lane.put(1, ctx)  # a full batch: shipped, and now the channel is full
    lane.put(2, ctx)  # waits in the open batch
    port.writer_done(lane, ctx, failed=True)  # returns: nothing to wait for
    assert not port.channel.closed
    assert port.take_batch(ctx) == [0, 1]
    ctx.cancel()
    with pytest.raises(fg.Cancelled):
        port.channel.recv(ctx=ctx)


def test_merged_producers_ship_only_their_own_items():
    """Each producing stage has its own open batch in a merge's port. With one
    shared batch, B could cut a batch holding A's items and be slow to send
    it while A shipped newer items: A's order broken. A batch that is on its
    way must hold one producer's items only, so nothing of A can overtake it."""
    from flowgpu.channel import Channel
    from flowgpu.runtime.flow import Port

    ctx = fg.Context()
    port = Port(Channel(4), writers=2, auto=True, batch=2)
    a, b = port.lane(), port.lane()
    a.put(("A", 0), ctx)
    b.put(("B", 0), ctx)
    a.put(("A", 1), ctx)  # A's batch is full: shipped
    assert port.channel._snapshot() == [[("A", 0), ("A", 1)]]
    b.put(("B", 1), ctx)
    assert port.channel._snapshot() == [[("A", 0), ("A", 1)], [("B", 0), ("B", 1)]]


def test_a_source_that_handed_everything_over_at_once_is_not_the_bottleneck():
    """Batched, a short source ends at once: busy for all of its short life
    but limiting nothing. The slow stage is the bottleneck."""
    def slow(x):
        fg.current_context().done.wait(0.02)
        return x

    def items():
        for i in range(10):
            sum(range(50_000))  # work per item: the source is busy while it lives
            yield i

    g = fg.Graph("short-source")
    # 10 items on 3 workers: one works a round longer, so the stage is well
    # under 100% busy, while the source was busy for all of its life
    g.source(items, name="src").map(slow, name="slow", workers=3).collect("o")
    rep = g.run()
    assert rep.bottleneck_stage == "slow"
    assert rep.bottleneck.startswith("slow: 3 workers busy")


@pytest.mark.parametrize("observer", ["stall_timeout", "progress"])
def test_a_deadline_during_a_finished_sources_last_ship_ends_the_run(observer):
    """The source has pulled its last item and waits to ship its open batch
    into a full channel when the deadline strikes: its stage must still count
    as ended, or the run's observers wait for it for ever."""
    holding = threading.Event()

    def items():
        yield 0  # the sink is waiting: item 0 goes to it alone
        assert holding.wait(10)
        # then a full channel (4 batches) and a part batch left to ship at the end
        yield from range(1, SMALL_ITEMS_CAPACITY + SMALL_ITEMS_BATCH // 2)

    def hold(x):
        holding.set()
        fg.current_context().done.wait()

    g = fg.Graph("late-ship")
    g.source(items, name="src").sink(hold, name="hold")
    options = {"stall_timeout": 5} if observer == "stall_timeout" else {"progress": True}
    with pytest.raises(fg.DeadlineExceeded):
        g.run(timeout=0.5, **options)


@pytest.mark.parametrize("capacity", [None, 8])
def test_zip_of_two_sources_next_to_their_merge_completes(capacity):
    """x and y each feed the zip and the merge: x must not hold the merge's
    port while it waits for room in the zip, which waits for y."""
    g = fg.Graph("zip-and-merge")
    x = g.source(range(5000), name="x")
    y = g.source(range(5000, 10000), name="y")
    fg.zip(x, y, capacity=capacity).collect("z")
    x.merge(y).collect("m", capacity=capacity)
    rep = g.run(timeout=30)
    assert rep["z"] == list(zip(range(5000), range(5000, 10000)))
    assert sorted(rep["m"]) == list(range(10000))


@pytest.mark.parametrize("shape", ["broadcast", "traced"])
def test_a_source_feeding_two_stages_stops_pulling_at_the_first_error(shape, tmp_path):
    failed = threading.Event()
    after: list[int] = []

    def items():
        for i in range(1000):
            if failed.is_set():
                after.append(i)
            fg.current_context().done.wait(0.002)
            yield i

    def check(x):
        if x == 20:
            failed.set()
            raise ValueError("boom")
        return x

    g = fg.Graph("stop-source")
    src = g.source(items, name="src")
    src.map(check, name="check").collect("o")
    options = {}
    if shape == "broadcast":
        src.collect("all")
    else:
        options["trace"] = str(tmp_path / "trace.json")
    with pytest.raises(fg.StageError):
        g.run(timeout=60, **options)
    assert len(after) <= 2, after


def test_a_batch_whose_ship_is_cancelled_goes_back_in_front():
    """Else a later item of the same stage could be taken while the earlier
    ones were lost: what a cancelled run collected would not be a prefix."""
    from flowgpu.channel import Channel
    from flowgpu.runtime.flow import Port

    ctx = fg.Context()
    port = Port(Channel(1), writers=1, auto=True, batch=2)
    lane = port.lane()
    lane.put(0, ctx)
    lane.put(1, ctx)  # shipped: the channel is full
    lane.put(2, ctx)
    ctx.cancel()
    with pytest.raises(fg.Cancelled):
        lane.put(3, ctx)  # a full batch whose ship is cancelled
    lane.open.append(4)  # another worker's next item
    assert lane.open == [2, 3, 4]
