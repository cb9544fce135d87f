"""TaskGroup: first error after all tasks end, cancel of siblings, deadline, closed group."""

from __future__ import annotations

import threading
import time

import pytest

import flowgpu as fg


def test_all_tasks_run_and_group_returns():
    out = fg.Channel(10)
    with fg.TaskGroup() as tg:
        for i in range(5):
            tg.go(out.send, i)
    assert sorted(out.recv() for _ in range(5)) == list(range(5))
    assert tg.error is None


def test_first_error_raised_after_all_tasks_returned(parked):
    ch = fg.Channel(0)
    ended = []
    boom = ValueError("boom")

    def blocked():
        try:
            ch.recv(ctx=tg.ctx)
        finally:
            ended.append("blocked")

    def fails():
        parked.wait_for(1)  # the sibling is parked on the channel
        raise boom

    with pytest.raises(ValueError) as info:
        with fg.TaskGroup() as tg:
            tg.go(blocked)
            tg.go(fails)
    assert info.value is boom
    assert ended == ["blocked"]  # the sibling had returned before the raise
    assert tg.ctx.err.reason is boom  # its failure cancelled the group


def test_only_the_first_of_several_errors_is_raised(parked):
    gate = threading.Event()

    def first():
        raise KeyError("first")

    def second():
        gate.wait()
        raise KeyError("second")

    with pytest.raises(KeyError, match="first"):
        with fg.TaskGroup() as tg:
            tg.go(second)
            tg.go(first)
            tg.ctx.done.wait()
            gate.set()


def test_cancelled_siblings_blocked_on_channels_wake(parked):
    a, b = fg.Channel(0), fg.Channel(3)
    for i in range(3):
        b.send(i)
    errors = []

    def recv_forever():
        try:
            a.recv(ctx=tg.ctx)
        except fg.Cancelled as exc:
            errors.append(exc)
            raise

    def send_forever():
        try:
            b.send("x", ctx=tg.ctx)
        except fg.Cancelled as exc:
            errors.append(exc)
            raise

    def fail():
        parked.wait_for(2)
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        with fg.TaskGroup() as tg:
            tg.go(recv_forever)
            tg.go(send_forever)
            tg.go(fail)
    assert len(errors) == 2
    assert all(isinstance(e.reason, RuntimeError) for e in errors)


def test_body_exception_propagates_and_cancels(parked):
    ch = fg.Channel(0)
    got = []

    def wait_for_cancel():
        try:
            ch.recv(ctx=tg.ctx)
        except fg.Cancelled as exc:
            got.append(exc)

    with pytest.raises(ZeroDivisionError):
        with fg.TaskGroup() as tg:
            tg.go(wait_for_cancel)
            parked.wait_for(1)
            1 / 0  # noqa: B018
    assert len(got) == 1
    assert isinstance(got[0].reason, ZeroDivisionError)


def test_deadline_is_deadline_exceeded():
    ch = fg.Channel(0)
    t0 = time.monotonic()
    with pytest.raises(fg.DeadlineExceeded):
        with fg.TaskGroup(fg.Context(timeout=0.1)) as tg:
            tg.go(lambda: ch.recv(ctx=tg.ctx))
    assert 0.09 <= time.monotonic() - t0 < 0.8


def test_parent_cancel_reaches_tasks(parked):
    parent = fg.Context()
    ch = fg.Channel(0)
    with pytest.raises(fg.Cancelled, match="outer"):
        with fg.TaskGroup(parent) as tg:
            tg.go(lambda: ch.recv(ctx=tg.ctx))
            parked.wait_for(1)
            parent.cancel("outer")


def test_current_context_in_task_is_group_ctx():
    seen = []
    with fg.TaskGroup() as tg:
        tg.go(lambda: seen.append(fg.current_context()))
    assert seen == [tg.ctx]


def test_go_after_exit_raises_runtime_error():
    with fg.TaskGroup() as tg:
        pass
    with pytest.raises(RuntimeError):
        tg.go(lambda: None)


def test_group_ctx_cancelled_after_exit():
    with fg.TaskGroup() as tg:
        tg.go(lambda: None)
    assert tg.ctx.done.is_set()


def test_tasks_started_from_tasks_are_waited_for():
    out = fg.Channel(4)

    def parent_task():
        tg.go(out.send, "child")
        out.send("parent")

    with fg.TaskGroup() as tg:
        tg.go(parent_task)
    assert sorted([out.recv(), out.recv()]) == ["child", "parent"]


class _InterruptedStart(threading.Thread):
    """A thread whose start() is hit by Ctrl-C, before or after the thread exists."""

    def start(self):
        if self.name.endswith(":interrupt-before"):
            raise KeyboardInterrupt
        super().start()
        if self.name.endswith(":interrupt-after"):
            raise KeyboardInterrupt


@pytest.mark.parametrize("when", ["before", "after"])
def test_keyboard_interrupt_in_go_while_starting_a_thread(when, monkeypatch, parked):
    monkeypatch.setattr(threading, "Thread", _InterruptedStart)
    ch = fg.Channel(0)
    cancelled = []

    def blocked():
        try:
            ch.recv(ctx=tg.ctx)
        except fg.Cancelled:
            cancelled.append(True)

    with pytest.raises(KeyboardInterrupt):
        with fg.TaskGroup() as tg:
            tg.go(blocked)
            parked.wait_for(1)
            tg.go(lambda: None, name=f"interrupt-{when}")
    assert cancelled == [True]
    assert tg._running == 0
    assert tg._all_done.is_set()


def test_far_deadline_does_not_overflow():
    with fg.TaskGroup(fg.Context(timeout=1e12)) as tg:
        tg.go(lambda: None)
    assert tg.error is None


def test_keyboard_interrupt_while_waiting_cancels_tasks_then_is_raised(interrupt_main):
    reasons = []

    def interrupt_then_wait():
        interrupt_main.send()
        tg.ctx.done.wait()
        reasons.append(tg.ctx.err.reason)

    with pytest.raises(KeyboardInterrupt):
        with fg.TaskGroup() as tg:
            tg.go(interrupt_then_wait)
    # The interrupt lands in the block's body or in its exit's wait.
    (reason,) = reasons
    assert isinstance(reason, KeyboardInterrupt) or reason == "KeyboardInterrupt"
    assert "Cancelled(" not in repr(reason)
