"""Channel: rendezvous, buffering, close, timeouts, contexts, and contention."""

from __future__ import annotations

import collections
import threading
import time

import pytest
from threads import catching, spawn

import flowgpu as fg
from flowgpu.channel import blocked_operations

CAPACITIES = [0, 1, 8]


# -- construction ------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [-1, 1.5, "3", True, None])
def test_invalid_capacity_is_value_error(capacity):
    with pytest.raises(ValueError):
        fg.Channel(capacity)


def test_default_capacity_is_rendezvous():
    assert fg.Channel().capacity == 0


# -- rendezvous and buffering --------------------------------------------------------
def test_rendezvous_send_completes_only_when_received(parked):
    ch = fg.Channel(0)
    sent = threading.Event()

    def sender():
        ch.send("x")
        sent.set()

    t = spawn(sender)
    parked.wait_for(1)  # the sender is parked: nobody has taken the item
    assert not sent.is_set()
    assert len(ch) == 0
    assert ch.recv() == "x"
    t.join()
    assert sent.is_set()


def test_rendezvous_recv_parks_until_send(parked):
    ch = fg.Channel(0)
    t, box = catching(ch.recv)
    parked.wait_for(1)
    ch.send(7)  # completes at once: a receiver is waiting
    t.join()
    assert box == {"value": 7}


def test_rendezvous_send_with_zero_timeout_and_no_receiver_times_out():
    ch = fg.Channel(0)
    with pytest.raises(fg.Timeout):
        ch.send(1, timeout=0)
    assert not ch.try_send(1)


@pytest.mark.parametrize("capacity", [1, 2, 8])
def test_buffered_send_does_not_block_until_full(capacity, parked):
    ch = fg.Channel(capacity)
    for i in range(capacity):
        ch.send(i, timeout=0)  # never blocks
    assert len(ch) == capacity
    assert not ch.try_send("extra")
    t = spawn(ch.send, "late")
    parked.wait_for(1)  # full: the sender parks
    assert ch.recv() == 0  # space opens and the parked item moves in, in order
    t.join()
    assert len(ch) == capacity
    assert [ch.recv() for _ in range(capacity)] == [*range(1, capacity), "late"]


def test_len_counts_buffered_items():
    ch = fg.Channel(3)
    assert len(ch) == 0
    ch.send(1)
    ch.send(2)
    assert len(ch) == 2
    ch.recv()
    assert len(ch) == 1


# -- timeouts, contexts ------------------------------------------------------------
@pytest.mark.parametrize("capacity", CAPACITIES)
def test_recv_timeout(capacity):
    ch = fg.Channel(capacity)
    t0 = time.monotonic()
    with pytest.raises(fg.Timeout):
        ch.recv(timeout=0.05)
    assert 0.04 <= time.monotonic() - t0 < 0.5
    assert len(ch._recvq) == 0


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_send_timeout(capacity):
    ch = fg.Channel(capacity)
    for i in range(capacity):
        ch.send(i)
    t0 = time.monotonic()
    with pytest.raises(fg.Timeout) as info:
        ch.send("x", timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert 0.04 <= time.monotonic() - t0 < 0.5
    assert len(ch._sendq) == 0
    assert len(ch) == capacity  # the timed-out item was not delivered


@pytest.mark.parametrize("op", ["send", "recv"])
@pytest.mark.parametrize("capacity", CAPACITIES)
def test_ctx_cancel_wakes_parked_op(op, capacity, parked):
    ch = fg.Channel(capacity)
    if op == "send":
        for i in range(capacity):
            ch.send(i)
    ctx = fg.Context()
    call = (lambda: ch.send("x", ctx=ctx)) if op == "send" else (lambda: ch.recv(ctx=ctx))
    t, box = catching(call)
    parked.wait_for(1)
    ctx.cancel("stop now")
    t.join()
    err = box["error"]
    assert type(err) is fg.Cancelled
    assert err.reason == "stop now"
    assert len(ch._sendq) == len(ch._recvq) == 0
    assert len(ch) == (capacity if op == "send" else 0)


def test_done_ctx_wins_over_ready_channel():
    ch = fg.Channel(1)
    ch.send(1)
    ctx = fg.Context()
    ctx.cancel("already")
    with pytest.raises(fg.Cancelled):
        ch.recv(ctx=ctx)
    with pytest.raises(fg.Cancelled):
        fg.Channel(1).send(1, ctx=ctx)
    assert len(ch) == 1


@pytest.mark.parametrize("op", ["send", "recv"])
def test_ctx_deadline_is_deadline_exceeded(op):
    ch = fg.Channel(0)
    ctx = fg.Context(timeout=0.05)
    t0 = time.monotonic()
    with pytest.raises(fg.DeadlineExceeded) as info:
        if op == "send":
            ch.send(1, ctx=ctx)
        else:
            ch.recv(ctx=ctx)
    assert 0.04 <= time.monotonic() - t0 < 0.5
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, fg.Cancelled)
    assert isinstance(ctx.err, fg.DeadlineExceeded)
    assert len(ch._sendq) == len(ch._recvq) == 0


def test_own_timeout_shorter_than_ctx_deadline_is_timeout():
    ch = fg.Channel(0)
    ctx = fg.Context(timeout=5)
    with pytest.raises(fg.Timeout):
        ch.recv(timeout=0.02, ctx=ctx)
    assert ctx.err is None


# -- close ---------------------------------------------------------------------------
def test_close_is_idempotent():
    ch = fg.Channel(1)
    ch.close()
    ch.close()
    assert ch.closed


@pytest.mark.parametrize("capacity", [1, 8])
def test_receivers_drain_buffer_then_get_closed(capacity):
    ch = fg.Channel(capacity)
    for i in range(capacity):
        ch.send(i)
    ch.close()
    assert [ch.recv() for _ in range(capacity)] == list(range(capacity))
    with pytest.raises(fg.ChannelClosed):
        ch.recv()
    with pytest.raises(fg.ChannelClosed):
        ch.recv(timeout=0)


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_send_on_closed_raises(capacity):
    ch = fg.Channel(capacity)
    ch.close()
    with pytest.raises(fg.ChannelClosed):
        ch.send(1)
    with pytest.raises(fg.ChannelClosed):
        ch.try_send(1)


@pytest.mark.parametrize("n", [1, 3])
def test_close_wakes_parked_receivers(n, parked):
    ch = fg.Channel(0)
    started = [catching(ch.recv) for _ in range(n)]
    parked.wait_for(n)
    ch.close()
    for t, box in started:
        t.join()
        assert isinstance(box["error"], fg.ChannelClosed)
    assert blocked_operations() == 0


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_close_wakes_parked_senders_and_drops_their_items(capacity, parked):
    ch = fg.Channel(capacity)
    for i in range(capacity):
        ch.send(i)
    started = [catching(ch.send, f"late{k}") for k in range(2)]
    parked.wait_for(2)
    ch.close()
    for t, box in started:
        t.join()
        assert isinstance(box["error"], fg.ChannelClosed)
    assert list(ch) == list(range(capacity))


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_iteration_until_closed(capacity):
    ch = fg.Channel(capacity)

    def produce():
        for i in range(20):
            ch.send(i)
        ch.close()

    t = spawn(produce)
    assert list(ch) == list(range(20))
    t.join()


# -- contention ------------------------------------------------------------------------
@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize("producers,consumers", [(1, 1), (4, 1), (1, 4), (4, 4)])
def test_no_lost_or_duplicated_items_under_contention(capacity, producers, consumers):
    per = 300
    ch = fg.Channel(capacity)
    received: list[list] = [[] for _ in range(consumers)]
    done = fg.Channel(producers)

    def produce(p):
        for i in range(per):
            ch.send((p, i))
        done.send(p)

    def consume(c):
        for item in ch:
            received[c].append(item)

    threads = [spawn(produce, p) for p in range(producers)]
    threads += [spawn(consume, c) for c in range(consumers)]
    for _ in range(producers):
        done.recv()
    ch.close()
    for t in threads:
        t.join()
    everything = [x for r in received for x in r]
    assert len(everything) == producers * per
    assert collections.Counter(everything) == collections.Counter(
        (p, i) for p in range(producers) for i in range(per))
    # FIFO: each consumer sees each producer's items in the order they were sent.
    for r in received:
        for p in range(producers):
            seq = [i for q, i in r if q == p]
            assert seq == sorted(seq)
    assert blocked_operations() == 0
    assert len(ch._recvq) == len(ch._sendq) == 0


def test_many_producers_one_consumer_keeps_per_producer_order():
    ch = fg.Channel(2)
    producers, per = 6, 200
    threads = [spawn(lambda p=p: [ch.send((p, i)) for i in range(per)]) for p in range(producers)]
    got = [ch.recv() for _ in range(producers * per)]
    for t in threads:
        t.join()
    for p in range(producers):
        assert [i for q, i in got if q == p] == list(range(per))


def test_timeouts_in_a_loop_leave_no_queue_entries():
    ch = fg.Channel(0)
    for _ in range(50):
        with pytest.raises(fg.Timeout):
            ch.recv(timeout=0.0005)
        with pytest.raises(fg.Timeout):
            ch.send(1, timeout=0.0005)
    assert len(ch._recvq) == len(ch._sendq) == 0
    assert blocked_operations() == 0


def test_item_without_bool_survives_removal_from_queue():
    class NoBool:
        def __eq__(self, other):
            raise TypeError("ambiguous")

    ch = fg.Channel(0)
    with pytest.raises(fg.Timeout):
        ch.send(NoBool(), timeout=0.01)
    assert len(ch._sendq) == 0


@pytest.mark.parametrize("timeout", [1e10, float("inf")])
def test_huge_timeout_waits_for_the_item(timeout, parked):
    ch = fg.Channel(0)
    t, box = catching(ch.recv, timeout)
    parked.wait_for(1)
    ch.send("late")
    t.join()
    assert box == {"value": "late"}


def test_context_with_infinite_timeout_can_be_cancelled(parked):
    ctx = fg.Context(timeout=float("inf"))
    ch = fg.Channel(0)
    t, box = catching(lambda: ch.recv(ctx=ctx))
    parked.wait_for(1)
    ctx.cancel("done")
    t.join()
    assert isinstance(box["error"], fg.Cancelled)
    assert ctx.done.wait(1e10)


def test_try_send_hands_over_to_a_parked_receiver(parked):
    ch = fg.Channel(0)
    t, box = catching(ch.recv)
    parked.wait_for(1)
    assert ch.try_send("now")
    t.join()
    assert box == {"value": "now"}


@pytest.mark.parametrize("op", ["send", "recv", "select"])
def test_keyboard_interrupt_while_parked_leaves_channel_clean(op, parked, interrupt_main):
    ch = fg.Channel(0)

    def interrupt():
        parked.wait_for(1)
        interrupt_main.send()

    t = spawn(interrupt)
    with pytest.raises(KeyboardInterrupt):
        if op == "send":
            ch.send(1)
        elif op == "recv":
            ch.recv()
        else:
            fg.select(ch.recv_case(), fg.Channel(0).send_case(2))
    t.join()
    assert len(ch._recvq) == len(ch._sendq) == 0
    assert blocked_operations() == 0
    assert ch.try_send(3) is False  # no stale receiver takes it
