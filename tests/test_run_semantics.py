"""Running a graph: backpressure, exactly once, ordering, errors, cancellation, operators.

The pipelines here are stopped at exact points with gates (threading.Event)
and released when the test has seen what it needs; ``parked.wait_for(n)``
waits until the engine itself reports ``n`` parked channel operations.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest
from sources import Counted

import flowgpu as fg

WORKERS = [1, 2, 4]
CAPACITIES = [0, 1, 8]
# None: sized by the engine, small items in micro-batches (no exact bound to test)
ANY_CAPACITY = [*CAPACITIES, None]


def wait_n(sem: threading.Semaphore, n: int, timeout: float = 10.0) -> None:
    for _ in range(n):
        assert sem.acquire(timeout=timeout), "a stage did not get there"


# -- backpressure --------------------------------------------------------------------
@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize("map_workers", WORKERS)
@pytest.mark.parametrize("sink_workers", [1, 2])
def test_backpressure_bounds_how_far_the_source_runs_ahead(capacity, map_workers,
                                                           sink_workers, ordered, parked):
    gate = threading.Event()
    entered = threading.Semaphore(0)
    got = []
    lock = threading.Lock()

    def slow_sink(x):
        entered.release()
        gate.wait()
        with lock:
            got.append(x)

    # An ordered stage with several workers holds up to its reorder window
    # (2 x workers) of taken but not yet emitted items; otherwise one per worker.
    window = ordered and map_workers > 1
    map_holds = 2 * map_workers if window else map_workers
    # The source holds the item it is sending; each channel is full.
    bound = 1 + capacity + map_holds + capacity + sink_workers
    # Parked when stuck: the source's send, and either every map worker's send
    # or (with a window) the emitting worker's send and one worker waiting for a slot.
    stuck = 1 + (2 if window else map_workers)
    src = Counted(bound + 50)
    g = fg.Graph()
    s = g.source(src).map(lambda x: x, workers=map_workers, capacity=capacity, ordered=ordered)
    s.sink(slow_sink, workers=sink_workers, capacity=capacity)

    def release_when_stuck():
        wait_n(entered, sink_workers)
        parked.wait_for(stuck)
        pulled.append(src.pulled)
        gate.set()

    pulled: list[int] = []
    t = threading.Thread(target=release_when_stuck)
    t.start()
    try:
        g.run()
    finally:
        gate.set()
        t.join()
    assert pulled == [bound]
    assert sorted(got) == list(range(bound + 50))
    if ordered and sink_workers == 1:
        assert got == list(range(bound + 50))


# -- exactly once --------------------------------------------------------------------
@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("capacity", ANY_CAPACITY)
@pytest.mark.parametrize("workers", WORKERS)
def test_exactly_once(workers, capacity, ordered):
    n = 200
    g = fg.Graph()
    s = g.source(range(n)).map(lambda x: x * 2, workers=workers, capacity=capacity,
                               ordered=ordered)
    s = s.filter(lambda x: x % 3 != 0, workers=workers, capacity=capacity, ordered=ordered)
    s.collect("out", capacity=capacity)
    out = g.run()["out"]
    expected = [x * 2 for x in range(n) if (x * 2) % 3 != 0]
    assert sorted(out) == expected
    if ordered:
        assert out == expected


@pytest.mark.parametrize("capacity", ANY_CAPACITY)
@pytest.mark.parametrize("workers", WORKERS)
def test_exactly_once_per_branch_with_broadcast_and_merge(workers, capacity):
    n = 100
    g = fg.Graph()
    src = g.source(range(n))
    a = src.map(lambda x: ("a", x), workers=workers, capacity=capacity)
    b = src.map(lambda x: ("b", x), workers=workers, capacity=capacity)
    a.merge(b).collect("both", capacity=capacity)
    out = g.run()["both"]
    assert collections.Counter(out) == collections.Counter(
        [("a", x) for x in range(n)] + [("b", x) for x in range(n)])


def test_sink_with_workers_sees_every_item_once():
    seen = []
    lock = threading.Lock()

    def keep(x):
        with lock:
            seen.append(x)

    g = fg.Graph()
    g.source(range(100)).sink(keep, workers=4, capacity=0)
    g.run()
    assert sorted(seen) == list(range(100))


# -- ordering --------------------------------------------------------------------------
@pytest.mark.parametrize("capacity", CAPACITIES)
def test_ordered_keeps_order_when_item_0_is_slowest_and_window_is_bounded(capacity, parked):
    workers, n = 4, 40
    window = 2 * workers
    gate = threading.Event()
    cond = threading.Condition()
    others = [0]

    def f(x):
        if x == 0:
            gate.wait()
        else:
            with cond:
                others[0] += 1
                cond.notify_all()
        return x

    src = Counted(n)
    g = fg.Graph()
    g.source(src).map(f, workers=workers, capacity=capacity, ordered=True).collect("out")
    seen: list[tuple[int, int]] = []

    def release_when_stuck():
        with cond:
            assert cond.wait_for(lambda: others[0] >= window - 1, 10)
        # the source on its send, one worker waiting for a window slot, collect on recv
        parked.wait_for(3)
        seen.append((others[0], src.pulled))
        gate.set()

    t = threading.Thread(target=release_when_stuck)
    t.start()
    try:
        out = g.run()["out"]
    finally:
        gate.set()
        t.join()
    assert out == list(range(n))
    taken_while_held, pulled = seen[0]
    assert taken_while_held == window - 1
    assert pulled == window + capacity + 1


def test_unordered_delivers_as_workers_finish():
    n = 30
    gate = threading.Event()
    got = []

    def f(x):
        if x == 0:
            gate.wait()
        return x

    def sink(x):
        got.append(x)
        if len(got) == n - 1:
            gate.set()  # everything but item 0 has arrived

    g = fg.Graph()
    g.source(range(n)).map(f, workers=4, ordered=False).sink(sink)
    try:
        g.run()
    finally:
        gate.set()
    assert got[-1] == 0
    assert sorted(got) == list(range(n))


@pytest.mark.parametrize("workers", WORKERS)
def test_ordered_flat_map_and_filter_keep_order(workers):
    g = fg.Graph()
    s = g.source(range(50)).flat_map(lambda x: [x] * (x % 3), workers=workers)
    s.filter(lambda x: x % 2 == 0, workers=workers).collect("out")
    assert g.run()["out"] == [x for x in range(50) for _ in range(x % 3) if x % 2 == 0]


# -- first error wins ------------------------------------------------------------------
def test_first_error_is_stage_error_raised_promptly_with_feeder_blocked(parked):
    boom = ValueError("bad item")
    failed_at = []

    def f(x):
        if x == 3:
            parked.wait_for(2)  # the source is parked on our full input; collect on recv
            failed_at.append(time.monotonic())
            raise boom
        return x

    src = Counted(None)  # endless: only cancellation stops it
    g = fg.Graph()
    g.source(src).map(f, name="checker", capacity=1).collect("out")
    with pytest.raises(fg.StageError) as info:
        g.run()
    elapsed = time.monotonic() - failed_at[0]
    assert elapsed < 1.0
    err = info.value
    assert err.stage == "checker"
    assert err.item_index == 3
    assert err.item_summary == "3"
    assert err.__cause__ is boom
    assert src.closed.is_set()  # the generator's finally ran
    assert err.report["out"] == [0, 1, 2]  # what was collected before the failure


@pytest.mark.parametrize("workers", WORKERS)
def test_only_first_error_is_raised(workers):
    def f(x):
        raise KeyError(x)

    g = fg.Graph()
    g.source(range(20)).map(f, workers=workers, name="always").collect("out")
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert info.value.stage == "always"
    assert isinstance(info.value.__cause__, KeyError)


def test_source_generator_raising_midway():
    delivered = threading.Event()
    got = []
    finished = threading.Event()

    def numbers():
        try:
            yield from range(5)
            assert delivered.wait(10)
            raise OSError("disk gone")
        finally:
            finished.set()

    def sink(x):
        got.append(x)
        if len(got) == 5:
            delivered.set()

    g = fg.Graph()
    g.source(numbers, name="reader").sink(sink)
    with pytest.raises(fg.StageError) as info:
        g.run()
    err = info.value
    assert err.stage == "reader"
    assert err.item_index == 5
    assert isinstance(err.__cause__, OSError)
    assert got == [0, 1, 2, 3, 4]
    assert finished.is_set()


def test_source_function_raising_before_iterating():
    def broken():
        raise RuntimeError("no input")

    g = fg.Graph()
    g.source(broken, name="broken").collect("out")
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert info.value.stage == "broken"
    assert isinstance(info.value.__cause__, RuntimeError)


def test_stage_returning_none_passes_none_on():
    g = fg.Graph()
    g.source(range(3)).map(lambda x: None).collect("out")
    assert g.run()["out"] == [None, None, None]


def test_stage_raising_stop_iteration_is_stage_error():
    def f(x):
        if x == 2:
            raise StopIteration
        return x

    g = fg.Graph()
    g.source(range(5)).map(f, name="stopper").collect("out")
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert info.value.stage == "stopper"
    assert info.value.item_index == 2
    assert isinstance(info.value.__cause__, StopIteration)


def test_source_iterable_raising_stop_iteration_oddly_is_not_silent():
    class Weird:
        def __iter__(self):
            return self

        def __next__(self):
            raise ValueError("broken iterator")

    g = fg.Graph()
    g.source(lambda: Weird(), name="weird").collect("out")
    with pytest.raises(fg.StageError):
        g.run()


# -- error policies ------------------------------------------------------------------
@pytest.mark.parametrize("workers", WORKERS)
def test_skip_lists_the_item_and_the_rest_complete(workers):
    def f(x):
        if x % 4 == 1:
            raise ValueError(f"odd one {x}")
        return x

    g = fg.Graph()
    g.source(range(20)).map(f, name="picky", workers=workers, on_error="skip").collect("out")
    report = g.run()
    assert report["out"] == [x for x in range(20) if x % 4 != 1]
    skipped = sorted(report.errors, key=lambda e: e.item)
    assert [e.item for e in skipped] == [1, 5, 9, 13, 17]
    assert all(e.stage == "picky" for e in skipped)
    assert all(isinstance(e.__cause__, ValueError) for e in skipped)
    assert report.stages["picky"].errors == 5


def test_retry_succeeds_on_second_attempt():
    attempts = collections.Counter()
    lock = threading.Lock()

    def flaky(x):
        with lock:
            attempts[x] += 1
            first = attempts[x] == 1
        if first:
            raise ConnectionError("try again")
        return x

    g = fg.Graph()
    g.source(range(6)).map(flaky, on_error="retry", retries=2, workers=2).collect("out")
    report = g.run()
    assert report["out"] == list(range(6))
    assert all(attempts[x] == 2 for x in range(6))
    assert report.errors == []


def test_retry_raises_after_exhausting():
    calls = []

    def broken(x):
        calls.append(x)
        raise ConnectionError("down")

    g = fg.Graph()
    g.source([7]).map(broken, name="net", on_error="retry", retries=2).collect("out")
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert calls == [7, 7, 7]  # the call and two retries
    assert info.value.stage == "net"
    assert isinstance(info.value.__cause__, ConnectionError)


# -- operators -------------------------------------------------------------------------
def test_flat_map():
    g = fg.Graph()
    g.source(range(4)).flat_map(lambda x: range(x)).collect("out")
    assert g.run()["out"] == [0, 0, 1, 0, 1, 2]


def test_filter():
    g = fg.Graph()
    g.source(range(10)).filter(lambda x: x % 3 == 0).collect("out")
    assert g.run()["out"] == [0, 3, 6, 9]


@pytest.mark.parametrize("n,size", [(10, 3), (9, 3), (0, 4), (2, 5)])
def test_batch_with_last_partial_and_unbatch(n, size):
    g = fg.Graph()
    batches = g.source(range(n)).batch(size)
    batches.collect("batches")
    batches.unbatch().collect("flat")
    report = g.run()
    assert report["batches"] == [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    assert report["flat"] == list(range(n))


def test_merge_fan_in():
    g = fg.Graph()
    a = g.source(range(0, 50), name="a")
    b = g.source(range(100, 150), name="b")
    c = g.source(range(200, 250), name="c")
    a.merge(b, c).collect("out")
    out = g.run()["out"]
    assert sorted(out) == [*range(50), *range(100, 150), *range(200, 250)]
    for lo in (0, 100, 200):  # each producer's order survives the merge
        assert [x for x in out if lo <= x < lo + 50] == list(range(lo, lo + 50))


@pytest.mark.parametrize("capacity", ANY_CAPACITY)
def test_broadcast_stream_used_twice(capacity):
    g = fg.Graph()
    s = g.source(range(30)).map(lambda x: x, capacity=capacity)
    s.map(lambda x: -x, capacity=capacity).collect("neg")
    s.collect("same", capacity=capacity)
    report = g.run()
    assert report["same"] == list(range(30))
    assert report["neg"] == [-x for x in range(30)]


def test_zip_pairs_items():
    g = fg.Graph()
    a = g.source(range(5))
    b = a.map(lambda x: x * x)
    fg.zip(a, b).collect("pairs")
    assert g.run()["pairs"] == [(x, x * x) for x in range(5)]


@pytest.mark.parametrize("short_first", [True, False])
def test_zip_of_unequal_lengths_is_stage_error(short_first):
    g = fg.Graph()
    short = g.source(range(3), name="short")
    long_ = g.source(range(5), name="long")
    streams = (short, long_) if short_first else (long_, short)
    fg.zip(*streams, name="pair").collect("out")
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert info.value.stage == "pair"
    assert info.value.item_index == 3


def test_sink_sees_every_item():
    got = []
    g = fg.Graph()
    g.source(range(7)).sink(got.append)
    report = g.run()
    assert got == list(range(7))
    assert report.stages[list(report.stages)[-1]].items_in == 7


def test_report_counts():
    g = fg.Graph()
    g.source(range(10), name="src").filter(lambda x: x < 4, name="small").collect("out")
    report = g.run()
    assert report.stages["src"].items_out == 10
    assert report.stages["small"].items_in == 10
    assert report.stages["small"].items_out == 4


# -- cancellation, deadlines, interrupts -------------------------------------------
def test_keyboard_interrupt_stops_the_run_and_the_next_run_works(interrupt_main):
    started = threading.Event()

    def stage(x):
        if x == 0:
            started.set()
            interrupt_main.send()
        fg.current_context().done.wait()
        return x

    g = fg.Graph()
    s = g.source(range(100)).map(stage, workers=2)
    s.map(lambda x: x, workers=2).collect("out")
    with pytest.raises(KeyboardInterrupt):
        g.run()
    assert started.is_set()
    assert not [t for t in threading.enumerate() if t.name.startswith("flowgpu:")]
    again = fg.Graph()
    again.source(range(5)).map(lambda x: x + 1, workers=2).collect("out")
    assert again.run()["out"] == [1, 2, 3, 4, 5]


def test_run_timeout_is_deadline_exceeded():
    def wait_for_the_end(x):
        fg.current_context().done.wait()
        return x

    g = fg.Graph()
    g.source(range(3)).map(wait_for_the_end).collect("out")
    t0 = time.monotonic()
    with pytest.raises(fg.DeadlineExceeded) as info:
        g.run(timeout=0.2)
    assert 0.18 <= time.monotonic() - t0 < 1.0
    assert isinstance(info.value, TimeoutError)


def test_ctx_cancelled_from_another_thread():
    started = threading.Event()
    ctx = fg.Context()

    def wait_for_cancel(x):
        started.set()
        fg.current_context().done.wait()
        return x

    def cancel_when_started():
        assert started.wait(10)
        ctx.cancel("operator stop")

    t = threading.Thread(target=cancel_when_started)
    t.start()
    g = fg.Graph()
    g.source(range(3)).map(wait_for_cancel).collect("out")
    try:
        with pytest.raises(fg.Cancelled) as info:
            g.run(ctx=ctx)
    finally:
        t.join()
    assert info.value.reason == "operator stop"
    assert not isinstance(info.value, fg.DeadlineExceeded)


def test_already_cancelled_ctx():
    ctx = fg.Context()
    ctx.cancel("before")
    g = fg.Graph()
    g.source(range(3)).collect("out")
    with pytest.raises(fg.Cancelled):
        g.run(ctx=ctx)


def test_stage_raising_its_own_timeout_error_is_stage_error():
    def f(x):
        raise TimeoutError("my socket")

    g = fg.Graph()
    g.source([1]).map(f, name="net").collect("out")
    with pytest.raises(fg.StageError) as info:
        g.run(timeout=30)
    assert not isinstance(info.value, fg.DeadlineExceeded)
    assert isinstance(info.value.__cause__, TimeoutError)


def test_replay_calls_the_function_on_the_failing_item_again():
    calls = []

    def f(x):
        calls.append(x)
        if x == 3:
            raise ValueError(x)
        return x

    g = fg.Graph()
    g.source(range(6)).map(f).collect("out")
    with pytest.raises(fg.StageError) as info:
        g.run()
    calls.clear()
    with pytest.raises(ValueError):
        info.value.replay()
    assert calls == [3]
    assert info.value.item == 3


def test_run_leaves_no_thread_after_success():
    g = fg.Graph()
    g.source(range(20)).map(lambda x: x, workers=4).collect("out")
    g.run()
    assert not [t for t in threading.enumerate() if t.name.startswith("flowgpu:")]


def test_cancel_cuts_a_retry_backoff_short():
    first_failure = threading.Event()

    def flaky(x):
        first_failure.set()
        raise ConnectionError("down")

    def other(x):
        assert first_failure.wait(10)  # `flaky` is now in its 10-second backoff
        raise ValueError("other branch")

    g = fg.Graph()
    s = g.source([1])
    s.map(flaky, on_error="retry", retries=1, backoff=10.0, name="flaky").collect("a")
    s.map(other, name="other").collect("b")
    t0 = time.monotonic()
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert time.monotonic() - t0 < 1.0
    assert info.value.stage == "other"


def test_deadline_cuts_a_retry_backoff_short():
    def down(x):
        raise ConnectionError("down")

    g = fg.Graph()
    g.source([1]).map(down, on_error="retry", retries=1, backoff=10.0).collect("out")
    t0 = time.monotonic()
    with pytest.raises(fg.DeadlineExceeded):
        g.run(timeout=0.1)
    assert 0.09 <= time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("workers", WORKERS)
def test_skip_in_ordered_flat_map_keeps_order_of_the_rest(workers):
    def explode(x):
        if x % 5 == 0:
            raise ValueError(x)
        return [x, x]

    g = fg.Graph()
    g.source(range(30)).flat_map(explode, workers=workers, on_error="skip").collect("out")
    report = g.run()
    assert report["out"] == [y for x in range(30) if x % 5 for y in (x, x)]
    assert sorted(e.item for e in report.errors) == [0, 5, 10, 15, 20, 25]
