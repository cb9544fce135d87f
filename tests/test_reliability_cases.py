"""Failure modes reported against peer tools, as named cases in flowgpu's terms.

Each test is one case of the reliability list (RELIABILITY.md), numbered as
there. The GPU halves of cases 10, 12, 13, 14 and 15 run under the CUDA
simulator in tests/sim/test_faults_sim.py. Pipelines are stopped at exact
points with gates and ``parked.wait_for(n)``; "slow" stages wait on the run's
context with a timeout, never sleep.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time

import numpy as np
import pytest
from sources import Counted

import flowgpu as fg
from flowgpu.kernels import etl, image


def _engine_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("flowgpu:")]


# 1 ------------------------------------------------------------------------------------
def test_case01_error_with_feeder_blocked_on_small_capacity_and_four_workers(parked):
    capacity, workers, failing = 1, 4, 5
    entered = threading.Semaphore(0)
    raised_at: list[float] = []
    src = Counted()

    def check(x):
        if x < failing:
            return x
        entered.release()
        if x == failing:
            for _ in range(workers):  # all four workers are inside check()
                assert entered.acquire(timeout=10)
            # parked: the feeder on the full input channel, the collect on its empty one
            parked.wait_for(2)
            raised_at.append(time.monotonic())
            raise ValueError("bad item")
        fg.current_context().done.wait()  # the others hold their item until the cancel
        return x

    g = fg.Graph()
    g.source(src, name="feed").map(check, name="check", workers=workers, capacity=capacity,
                                   ordered=False).collect("out", capacity=64)
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert time.monotonic() - raised_at[0] < 1.0
    assert info.value.stage == "check" and info.value.item == failing
    assert src.closed.is_set()  # the feeder was released and its generator closed
    past = src.pulled - (failing + 1)
    assert past <= capacity + workers, (past, src.pulled)


# 2 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 4])
def test_case02_first_stage_with_capacity_one_stays_bounded_ahead_of_a_slow_stage(workers):
    src = Counted(60)
    leads: list[int] = []

    def slow(x):
        leads.append(src.pulled - x)  # how far the source is ahead of this item
        fg.current_context().done.wait(0.001)
        return x

    g = fg.Graph()
    s = g.source(src).map(lambda x: x, name="first", capacity=1, workers=workers,
                          ordered=False)
    s.map(slow, capacity=1).collect("out", capacity=1)
    rep = g.run()
    assert sorted(rep["out"]) == list(range(60))
    # source's item in hand + first's input (1) + its workers + slow's input (1) + slow's item
    bound = 1 + 1 + workers + 1 + 1
    assert max(leads) <= bound, (max(leads), bound)


# 3 ------------------------------------------------------------------------------------
def test_case03_infinite_source_ten_results_then_stop():
    """No iteration API: the consuming sink cancels the run's context after ten results."""
    src = Counted(None)
    got: list[int] = []
    ctx = fg.Context()
    t0 = time.monotonic()
    took: list[float] = []

    def take(x):
        got.append(x)
        if len(got) == 10:
            took.append(time.monotonic() - t0)
            ctx.cancel("have ten")

    g = fg.Graph()
    capacity, workers = 2, 4
    g.source(src).map(lambda x: x * x, workers=workers, capacity=capacity).sink(
        take, capacity=capacity)
    with pytest.raises(fg.Cancelled) as info:
        g.run(ctx=ctx)
    assert info.value.reason == "have ten"
    assert got == [x * x for x in range(10)]
    assert took[0] < 1.0  # at once, not after the (endless) source
    # past the tenth: the source's item, the map's input and window, the sink's input
    assert src.pulled <= 10 + 1 + capacity + 2 * workers + capacity + 1, src.pulled
    assert src.closed.is_set()


# 4 ------------------------------------------------------------------------------------
def test_case04_deadline_while_worker_held_on_gate_no_item_starts_after():
    gate = threading.Event()
    started: list[tuple[int, bool]] = []
    run_ctx: list[fg.Context] = []
    done_at: list[float] = []

    def held(x):
        started.append((x, gate.is_set()))
        if not run_ctx:
            run_ctx.append(fg.current_context())
        gate.wait()  # not cooperative: only the gate lets it go
        return x

    def opener():
        while not run_ctx:
            if gate.wait(0.001):
                return
        run_ctx[0].done.wait()
        done_at.append(time.monotonic())
        gate.set()

    t = threading.Thread(target=opener)
    t.start()
    g = fg.Graph()
    g.source(range(50)).map(held, workers=2, capacity=4).collect("out")
    t0 = time.monotonic()
    try:
        with pytest.raises(fg.DeadlineExceeded):
            g.run(timeout=0.2)
    finally:
        gate.set()
        t.join()
    assert 0.18 <= done_at[0] - t0 < 0.7  # the run's context ended at its deadline
    assert all(not after for _, after in started)  # no item started once the gate opened
    assert len(started) <= 2


# 5 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("own", ["channel_timeout", "own_deadline", "builtin"])
def test_case05_stage_timeouts_of_its_own_are_stage_errors_not_the_run_deadline(own):
    def call(x):
        if own == "channel_timeout":
            fg.Channel(0).recv(timeout=0.01)
        elif own == "own_deadline":
            with fg.current_context().child(timeout=0.01) as mine:
                mine.done.wait()
                mine.check()
        else:
            raise TimeoutError("socket read timed out")
        return x

    g = fg.Graph()
    g.source([1, 2]).map(call, name="net").collect("out")
    with pytest.raises(fg.StageError) as info:
        g.run(timeout=30)
    assert info.value.stage == "net"
    assert not isinstance(info.value, fg.DeadlineExceeded)
    assert isinstance(info.value.__cause__, TimeoutError)


# 6 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["cancel", "interrupt"])
def test_case06_stop_while_four_workers_loop(how, request):
    before = threading.active_count()
    looping = threading.Semaphore(0)
    ctx = fg.Context()

    def spin(x):
        looping.release()
        c = fg.current_context()
        while not c.done.wait(0.005):  # a worker loop that looks at its context
            pass
        return x

    interrupter = request.getfixturevalue("interrupt_main") if how == "interrupt" else None

    def stopper():
        for _ in range(4):
            assert looping.acquire(timeout=10)
        stopped.append(time.monotonic())
        if interrupter is not None:
            interrupter.send()
        else:
            ctx.cancel("stop")

    stopped: list[float] = []
    t = threading.Thread(target=stopper)
    g = fg.Graph()
    g.source(range(100)).map(spin, workers=4).collect("out")
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt if interrupter else fg.Cancelled):
            g.run(ctx=ctx)
        ended = time.monotonic()
    finally:
        t.join()
    assert ended - stopped[0] < 1.0
    assert not _engine_threads()
    assert threading.active_count() == before
    again = fg.Graph()
    again.source(range(8)).map(lambda x: x + 1, workers=4).collect("out")
    assert again.run()["out"] == list(range(1, 9))


# 7 ------------------------------------------------------------------------------------
def test_case07_producer_dies_while_consumer_waits_in_a_run(parked):
    def produce(x):
        if x == 3:
            parked.wait_for(1)  # the sink is parked, waiting for item 3
            raise OSError("producer died")
        return x

    got = []
    g = fg.Graph()
    g.source(range(10)).map(produce, name="producer").sink(got.append, name="consumer")
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert info.value.stage == "producer" and isinstance(info.value.__cause__, OSError)
    assert got == [0, 1, 2]


def test_case07_producer_dies_while_consumer_waits_in_a_task_group(parked):
    ch: fg.Channel[int] = fg.Channel(0)
    consumer_error: list[BaseException] = []

    def producer(tg):
        parked.wait_for(1)
        raise OSError("producer died")

    def consumer(tg):
        try:
            ch.recv(ctx=tg.ctx)
        except fg.Cancelled as exc:
            consumer_error.append(exc)
            raise

    with pytest.raises(OSError, match="producer died"):
        with fg.TaskGroup() as tg:
            tg.go(consumer, tg)
            tg.go(producer, tg)
    assert isinstance(consumer_error[0].reason, OSError)  # released with the producer's error


# 8 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [0, 1, 8])
def test_case08_generator_source_feeds_each_item_once_to_several_workers(capacity):
    src = Counted(500)
    seen = collections.Counter()
    lock = threading.Lock()

    def keep(x):
        with lock:
            seen[x] += 1

    g = fg.Graph()
    g.source(src).map(lambda x: x, workers=4, capacity=capacity, ordered=False).sink(
        keep, workers=3, capacity=capacity)
    g.run()
    assert seen == collections.Counter(range(500))
    assert src.pulled == 500


# 9 ------------------------------------------------------------------------------------
def test_case09_consumer_stops_early_source_finally_runs_threads_exit():
    """Decision: without an iteration API, stopping early is a cancel of the run's context
    by the consumer; the run raises Cancelled with the consumer's reason (never a
    StageError), the source's ``finally`` runs, no thread is left, and what was collected
    before the stop is in ``err.report``."""
    src = Counted(None)
    ctx = fg.Context()

    def consume(x):
        if x == 4:
            ctx.cancel("consumer is done")

    g = fg.Graph()
    s = g.source(src).map(lambda x: x, workers=3)
    s.sink(consume)
    s.collect("seen")
    with pytest.raises(fg.Cancelled) as info:
        g.run(ctx=ctx)
    assert info.value.reason == "consumer is done"
    assert src.closed.is_set()
    assert not _engine_threads()
    seen = info.value.report["seen"]
    assert seen == list(range(len(seen)))  # a prefix, in order, nothing twice


def test_case09_consumer_stops_early_in_a_task_group():
    ch: fg.Channel[int] = fg.Channel(2)
    closed = threading.Event()

    def producer(ctx):
        try:
            for i in itertools.count():
                ch.send(i, ctx=ctx)
        finally:
            closed.set()

    def consumer(tg):
        for _ in range(5):
            ch.recv(ctx=tg.ctx)
        tg.ctx.cancel("consumer is done")

    with pytest.raises(fg.Cancelled, match="consumer is done"):
        with fg.TaskGroup() as tg:
            tg.go(producer, tg.ctx)
            tg.go(consumer, tg)
    assert closed.is_set()


# 10 -----------------------------------------------------------------------------------
def test_case10_items_growing_1000x_stay_within_the_byte_budget_on_the_host():
    budget, small, n = 300_000, 100, 60
    g = fg.Graph()
    src = g.source(lambda: (np.ones(small, np.uint8) for _ in range(n)))
    big = src.map(lambda a: np.ones(a.size * 1000, np.uint8), workers=4, name="grow")
    big.map(lambda a: int(a.sum()), workers=2).collect("sums")
    rep = g.run(max_inflight_bytes=budget)
    assert rep["sums"] == [small * 1000] * n
    # the budget plus one item and two per channel (see flowgpu.runtime.budget)
    assert rep.inflight_peak_bytes["host"] <= budget + (1 + 2 * 3) * small * 1000


# 11 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [0, 1])
def test_case11_blocking_read_and_the_work_never_share_a_thread(capacity):
    """Each stage has its own threads: a stage blocked reading what another stage of the
    same run produces (a side channel) cannot starve that stage, even with one worker
    everywhere and rendezvous channels."""
    side: fg.Channel[int] = fg.Channel(capacity)

    def reader(x):
        return side.recv(ctx=fg.current_context())

    def writer(x):
        side.send(x * 10, ctx=fg.current_context())

    g = fg.Graph()
    s = g.source(range(20), capacity=capacity)
    s.map(reader, workers=1, capacity=capacity).collect("read", capacity=capacity)
    s.sink(writer, workers=1, capacity=capacity)
    rep = g.run(timeout=20)
    assert rep["read"] == [x * 10 for x in range(20)]


# 12 -----------------------------------------------------------------------------------
def test_case12_result_written_into_a_strided_slice_changes_only_those_elements():
    base = np.arange(48, dtype=np.float32).reshape(6, 8)
    before = base.copy()
    view = base[1::2, ::3]

    def write_back(out):
        view[...] = out

    g = fg.Graph()
    g.source([view]).map(image.gain, k=2.0, device="cpu").sink(write_back)
    g.run()
    want = before.copy()
    want[1::2, ::3] *= 2
    np.testing.assert_array_equal(base, want)


# 13 -----------------------------------------------------------------------------------
def test_case13_empty_batches_give_empty_outputs_and_launch_nothing(monkeypatch):
    from flowgpu.backends import ops_elementwise

    launches = []
    real = ops_elementwise._loop
    monkeypatch.setattr(ops_elementwise, "_loop",
                        lambda *a, **k: launches.append(a[0]) or real(*a, **k))
    items = [np.zeros((0,), np.float32), np.zeros((0, 3), np.float32)]
    g = fg.Graph()
    g.source(items).map(image.gain, k=2.0, device="cpu").collect("o")
    rep = g.run()
    assert [(a.shape, a.dtype) for a in rep["o"]] == [((0,), np.float32), ((0, 3), np.float32)]
    assert launches == []
    # an empty final batch: a source of no items gives no batch at all; a short one stays short
    g = fg.Graph()
    g.source(range(0)).batch(4).collect("b")
    assert g.run()["b"] == []
    g = fg.Graph()
    g.source(range(5)).batch(4).map(lambda b: np.asarray(b, np.float32)).map(
        image.gain, k=3.0, device="cpu").collect("b")
    assert [list(a) for a in g.run()["b"]] == [[0, 3, 6, 9], [12]]


# 14: GPU only (a device fault), in tests/sim/test_faults_sim.py; on the CPU:
def test_case14_kernel_error_names_its_stage_not_a_later_one_and_stops_the_rest():
    later = []
    g = fg.Graph()
    items = [np.ones(4, np.float32), np.ones(4, np.float32), np.ones((2, 2, 2, 2, 2), object)]
    items += [np.ones(4, np.float32)] * 3
    s = g.source(items).map(image.gain, k=2.0, name="first", device="cpu")
    s.map(image.clip, name="second", device="cpu").sink(later.append)
    with pytest.raises(fg.KernelError) as info:
        g.run(fuse=False)
    assert isinstance(info.value, fg.StageError)
    assert info.value.stage == "first" and info.value.item_index == 2
    assert len(later) <= 2


# 15 -----------------------------------------------------------------------------------
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.25], np.float32)


def _ref_uint8(x):
    with np.errstate(invalid="ignore"):
        y = np.where(~(x > 0), 0, np.where(x >= 1, 255, np.floor(x * 255.0 + 0.5)))
    return y.astype(np.uint8)


ELEMENTWISE_REFS = [
    (image.gain, {"k": 2.0}, lambda x: x * np.float32(2.0)),
    # pow, as C and NumPy compute it for an array exponent (NumPy turns a scalar
    # ``x ** 0.5`` into sqrt, whose -inf and -0.0 differ from pow's)
    (image.gamma, {"g": 2.0}, lambda x: np.power(x, np.full_like(x, 0.5))),
    (image.clip, {}, lambda x: np.clip(x, np.float32(0), np.float32(1))),
    (image.normalise, {}, lambda x: (x - np.float32(0.5)) / np.float32(0.25)),
    (image.normalise, {"std": 0.0}, lambda x: (x - np.float32(0.5)) / np.float32(0.0)),
    (image.threshold, {}, lambda x: np.where(x > 0.5, 1, 0).astype(x.dtype)),
    (image.to_uint8, {}, _ref_uint8),
    (etl.delay_class, {}, lambda x: np.select(
        [x != x, x <= 0, x < 15, x < 60], [-1, 0, 1, 2], 3).astype(np.int8)),
]


@pytest.mark.parametrize("op,params,ref", ELEMENTWISE_REFS,
                         ids=[f"{op.name}-{i}" for i, (op, _, _) in enumerate(ELEMENTWISE_REFS)])
def test_case15_nan_and_inf_through_elementwise_kernels_match_numpy(op, params, ref):
    with np.errstate(all="ignore"):
        want = ref(SPECIALS)
    got = op(SPECIALS, device="cpu", **params)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)  # NaN == NaN here, and signs of inf count
    inside = fg.Graph()
    inside.source([SPECIALS]).map(op, device="cpu", **params).collect("o")
    np.testing.assert_array_equal(inside.run()["o"][0], want)


def test_case15_nan_and_inf_through_speed_and_group_kernels():
    dist = np.array([100.0, np.nan, np.inf, 100.0, 0.0], np.float64)
    air = np.array([60.0, 30.0, 30.0, 0.0, 0.0], np.float64)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(etl.speed_mph(dist, air, device="cpu"),
                                      dist / (air / 60.0))
    keys = np.array([0, 0, 1, 1, 2], np.int64)
    vals = np.array([1.0, np.nan, np.inf, 2.0, -np.inf])
    ok = ~np.isnan(vals)
    np.testing.assert_array_equal(etl.group_sum(keys, vals, n_groups=3, device="cpu"),
                                  np.bincount(keys[ok], vals[ok], minlength=3))
    np.testing.assert_array_equal(etl.group_max(keys, vals, n_groups=3, device="cpu"),
                                  [1.0, np.inf, -np.inf])


@pytest.mark.parametrize("op,params", [(image.grayscale, {}), (image.gaussian_blur, {}),
                                       (image.sobel, {}), (image.unsharp_mask, {}),
                                       (image.resize, {"height": 3, "width": 5})])
def test_case15_nan_spreads_through_index_kernels_like_numpy(op, params):
    img = np.full((6, 8, 3), 0.5, np.float32)
    img[2, 3, 1] = np.nan
    img[4, 6, 0] = np.inf
    with np.errstate(all="ignore"):
        out = op(img, device="cpu", **params)
    assert np.isnan(out).any()  # NaN is never silently dropped (no fast-math)
    clean = op(np.full((6, 8, 3), 0.5, np.float32), device="cpu", **params)
    assert np.isfinite(clean).all()


# -- found by attacking the engine ---------------------------------------------------------
@pytest.mark.parametrize("budget", [None, 10_000])
def test_zip_of_a_broadcast_from_an_unordered_multi_worker_stage_pairs_each_item_with_itself(
        budget):
    """Regression: each worker sent to the broadcast's ports one by one, so two
    workers could interleave and the two branches saw different orders: zip then
    paired x with y, silently."""
    g = fg.Graph()
    s = g.source(range(300)).map(lambda x: x, workers=4, ordered=False)
    m = s.merge(g.source(range(300, 400)).map(lambda x: x, workers=2, ordered=False))
    fg.zip(m.map(lambda x: x), m.map(lambda x: -x), capacity=0).collect("pairs")
    pairs = g.run(max_inflight_bytes=budget)["pairs"]
    assert len(pairs) == 400 and all(a == -b for a, b in pairs)


def test_nested_run_inside_a_stage_is_cancelled_with_the_outer_run():
    """Regression: a run started inside a stage ran under the background context,
    so the outer run's deadline could never stop it: the outer run hung."""
    def forever():
        yield from itertools.count()

    inner = fg.Graph("inner")
    inner.source(forever).map(lambda x: fg.current_context().done.wait() and x).collect("o")
    g = fg.Graph("outer")
    g.source([1]).map(lambda x: inner.run(), name="outer_stage").collect("o")
    t0 = time.monotonic()
    with pytest.raises(fg.DeadlineExceeded):
        g.run(timeout=0.2)
    assert time.monotonic() - t0 < 1.5


def test_nested_runs_and_concurrent_runs_of_one_graph():
    g = fg.Graph()
    g.source(range(100)).map(lambda x: x + 1, workers=3, capacity=1).filter(
        lambda x: x % 2, workers=2).collect("o")
    want = sum(x + 1 for x in range(100) if (x + 1) % 2)
    outer = fg.Graph()
    outer.source(range(4)).map(lambda _: sum(g.run()["o"]), workers=4).collect("sums")
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append(outer.run()["sums"]))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[want] * 4] * 4


def test_cancelling_the_run_context_from_inside_a_stage():
    def stop(x):
        if x == 3:
            fg.current_context().cancel("enough")
        return x

    g = fg.Graph()
    g.source(range(100)).map(stop, workers=2).collect("o")
    with pytest.raises(fg.Cancelled, match="enough"):
        g.run()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, GeneratorExit])
def test_base_exceptions_in_a_stage_end_the_run_and_are_raised_as_they_are(exc):
    """Not Exception subclasses, so not the item's fault: no StageError, no skip; the run
    stops every worker and re-raises it in the caller."""
    def f(x):
        if x == 2:
            raise exc()
        return x

    g = fg.Graph()
    g.source(range(50)).map(f, workers=3, on_error="skip").collect("o")
    with pytest.raises(exc):
        g.run()
    assert not _engine_threads()
