"""select: ready cases, random choice, default, timeout, close, wake-up, no stale entries."""

from __future__ import annotations

import threading
import time

import pytest
from threads import catching

import flowgpu as fg
from flowgpu.channel import blocked_operations


def test_recv_case_takes_ready_item():
    a, b = fg.Channel(1), fg.Channel(1)
    b.send("hello")
    assert fg.select(a.recv_case(), b.recv_case()) == (1, "hello")
    assert len(b) == 0


def test_send_case_puts_item_where_there_is_room():
    full, free = fg.Channel(1), fg.Channel(1)
    full.send("old")
    assert fg.select(full.send_case("x"), free.send_case("y")) == (1, None)
    assert free.recv() == "y"
    assert full.recv() == "old"


def test_send_case_hands_item_to_parked_receiver(parked):
    ch = fg.Channel(0)
    t, box = catching(ch.recv)
    parked.wait_for(1)
    assert fg.select(ch.send_case(42), timeout=1) == (0, None)
    t.join()
    assert box == {"value": 42}


def test_random_choice_among_ready_cases():
    a, b = fg.Channel(1), fg.Channel(1)
    chosen = set()
    for _ in range(200):
        a.try_send("a")
        b.try_send("b")
        i, v = fg.select(a.recv_case(), b.recv_case())
        assert v == "ab"[i]
        chosen.add(i)
        if chosen == {0, 1}:
            break
    assert chosen == {0, 1}


def test_default_returns_none_none_when_nothing_ready():
    a, b = fg.Channel(0), fg.Channel(1)
    b.send(1)
    assert fg.select(a.recv_case(), b.send_case(2), default=True) == (None, None)
    assert len(a._recvq) == len(b._sendq) == 0


def test_timeout_raises_timeout():
    a = fg.Channel(0)
    t0 = time.monotonic()
    with pytest.raises(fg.Timeout):
        fg.select(a.recv_case(), timeout=0.05)
    assert 0.04 <= time.monotonic() - t0 < 0.5


def test_recv_from_closed_and_drained_reports_case_index():
    a, b = fg.Channel(0), fg.Channel(0)
    b.close()
    with pytest.raises(fg.ChannelClosed) as info:
        fg.select(a.recv_case(), b.recv_case())
    assert info.value.case_index == 1


def test_send_on_closed_reports_case_index():
    a, b = fg.Channel(0), fg.Channel(0)
    a.close()
    with pytest.raises(fg.ChannelClosed) as info:
        fg.select(b.recv_case(), a.send_case(1))
    assert info.value.case_index == 1


def test_close_wakes_parked_select_with_case_index(parked):
    a, b = fg.Channel(0), fg.Channel(0)
    t, box = catching(fg.select, a.recv_case(), b.recv_case())
    parked.wait_for(1)
    b.close()
    t.join()
    assert box["error"].case_index == 1
    assert len(a._recvq) == len(b._recvq) == 0


@pytest.mark.parametrize("which", [0, 1, 2])
def test_parked_select_woken_by_send_on_any_channel(which, parked):
    chans = [fg.Channel(0), fg.Channel(1), fg.Channel(8)]
    t, box = catching(fg.select, *(c.recv_case() for c in chans))
    parked.wait_for(1)
    chans[which].send("item")
    t.join()
    assert box == {"value": (which, "item")}
    for c in chans:
        assert len(c._recvq) == 0
        assert len(c) == 0


def test_parked_select_send_case_woken_by_receiver(parked):
    a, b = fg.Channel(0), fg.Channel(0)
    t, box = catching(fg.select, a.send_case("to-a"), b.send_case("to-b"))
    parked.wait_for(1)
    assert b.recv() == "to-b"
    t.join()
    assert box == {"value": (1, None)}
    assert len(a._sendq) == len(b._sendq) == 0
    with pytest.raises(fg.Timeout):
        a.recv(timeout=0)  # the losing case's item was not left behind


def test_repeated_timed_out_selects_leave_no_stale_entries():
    a, b = fg.Channel(0), fg.Channel(1)
    b.send("full")
    for _ in range(100):
        with pytest.raises(fg.Timeout):
            fg.select(a.recv_case(), b.send_case(1), timeout=0.0005)
    assert len(a._recvq) == 0
    assert len(b._sendq) == 0
    assert blocked_operations() == 0


def test_select_after_win_leaves_no_entries_on_losing_channels(parked):
    a, b = fg.Channel(0), fg.Channel(0)
    for _ in range(20):
        t, box = catching(fg.select, a.recv_case(), b.recv_case())
        parked.wait_for(1)
        a.send("x")
        t.join()
        assert box == {"value": (0, "x")}
        assert len(a._recvq) == len(b._recvq) == 0


def test_ctx_cancel_wakes_select(parked):
    a, b = fg.Channel(0), fg.Channel(0)
    ctx = fg.Context()
    t, box = catching(lambda: fg.select(a.recv_case(), b.send_case(1), ctx=ctx))
    parked.wait_for(1)
    ctx.cancel("bye")
    t.join()
    assert isinstance(box["error"], fg.Cancelled)
    assert box["error"].reason == "bye"
    assert len(a._recvq) == len(b._sendq) == 0


def test_ctx_deadline_in_select():
    ctx = fg.Context(timeout=0.05)
    with pytest.raises(fg.DeadlineExceeded):
        fg.select(fg.Channel(0).recv_case(), ctx=ctx)


def test_select_needs_cases():
    with pytest.raises(ValueError):
        fg.select()
    with pytest.raises(TypeError):
        fg.select(fg.Channel(0))


def test_selects_on_both_ends_of_two_channels_do_not_deadlock():
    a, b = fg.Channel(0), fg.Channel(0)
    n = 300
    got = []

    def left():
        for i in range(n):
            fg.select(a.send_case(i), b.send_case(i))

    t = threading.Thread(target=left)
    t.start()
    for _ in range(n):
        got.append(fg.select(b.recv_case(), a.recv_case())[1])
    t.join()
    assert got == list(range(n))
    assert len(a._sendq) == len(b._sendq) == len(a._recvq) == len(b._recvq) == 0
