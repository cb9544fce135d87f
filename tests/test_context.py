"""Context: cancel with a reason, deadlines, children, and the run's context in stages."""

from __future__ import annotations

import threading
import time

import pytest

import flowgpu as fg
from flowgpu.context import background


def test_cancel_with_reason():
    ctx = fg.Context()
    assert ctx.err is None and not ctx.done.is_set()
    ctx.cancel("user asked")
    assert type(ctx.err) is fg.Cancelled
    assert ctx.err.reason == "user asked"
    assert ctx.reason == "user asked"
    assert ctx.done.is_set()
    assert ctx.done.wait(0)


def test_first_reason_wins():
    ctx = fg.Context()
    ctx.cancel("first")
    ctx.cancel("second")
    assert ctx.err.reason == "first"


def test_reason_can_be_an_exception():
    boom = ValueError("boom")
    ctx = fg.Context()
    ctx.cancel(boom)
    assert ctx.err.reason is boom


def test_check_raises_the_error():
    ctx = fg.Context()
    ctx.check()
    ctx.cancel("stop")
    with pytest.raises(fg.Cancelled) as info:
        ctx.check()
    assert info.value.reason == "stop"


def test_children_inherit_cancellation():
    parent = fg.Context()
    child = parent.child()
    grandchild = child.child()
    parent.cancel("root")
    for c in (child, grandchild):
        assert c.done.is_set()
        assert c.err.reason == "root"


def test_child_of_cancelled_parent_starts_cancelled():
    parent = fg.Context()
    parent.cancel("gone")
    assert parent.child().err.reason == "gone"


def test_cancelling_child_leaves_parent_running():
    parent = fg.Context()
    child = parent.child()
    child.cancel("only me")
    assert parent.err is None
    assert child not in parent._children


def test_child_deadline_never_later_than_parent():
    parent = fg.Context(timeout=0.5)
    later = parent.child(timeout=100)
    sooner = parent.child(timeout=0.1)
    plain = parent.child()
    assert later.deadline == parent.deadline
    assert plain.deadline == parent.deadline
    assert sooner.deadline < parent.deadline


def test_done_wait_returns_at_the_deadline():
    ctx = fg.Context(timeout=0.1)
    t0 = time.monotonic()
    assert ctx.done.wait() is True
    elapsed = time.monotonic() - t0
    assert 0.09 <= elapsed < 0.6
    assert isinstance(ctx.err, fg.DeadlineExceeded)
    assert isinstance(ctx.err, TimeoutError)


def test_done_wait_with_shorter_timeout_returns_false():
    ctx = fg.Context(timeout=5)
    t0 = time.monotonic()
    assert ctx.done.wait(0.05) is False
    assert 0.04 <= time.monotonic() - t0 < 0.5
    assert ctx.err is None


def test_done_wait_wakes_on_cancel_from_another_thread():
    ctx = fg.Context()
    woke = threading.Event()

    def waiter():
        ctx.done.wait()
        woke.set()

    t = threading.Thread(target=waiter)
    t.start()
    ctx.cancel("now")
    t.join()
    assert woke.is_set()


def test_parent_deadline_reaches_child_waiter():
    parent = fg.Context(timeout=0.05)
    child = parent.child()
    assert child.done.wait(2) is True
    assert isinstance(child.err, fg.DeadlineExceeded)


def test_check_after_deadline_raises_deadline_exceeded():
    ctx = fg.Context(timeout=0)
    with pytest.raises(fg.DeadlineExceeded):
        ctx.check()
    assert ctx.remaining() == 0.0


def test_with_block_cancels_at_exit():
    with fg.Context() as ctx:
        assert ctx.err is None
    assert isinstance(ctx.err, fg.Cancelled)


def test_invalid_timeout():
    with pytest.raises(ValueError):
        fg.Context(timeout=-1)
    with pytest.raises(ValueError):
        fg.Context(timeout=float("nan"))


def test_background_cannot_be_cancelled():
    with pytest.raises(ValueError):
        background().cancel()
    assert fg.current_context() is background()


def test_current_context_in_stage_is_the_runs_and_is_cancelled_on_failure():
    seen = []
    failing = threading.Event()

    def look(x):
        seen.append(fg.current_context())
        return x

    def fail(x):
        failing.set()
        raise ValueError("no")

    g = fg.Graph()
    s = g.source([1]).map(look)
    s.sink(fail)
    with pytest.raises(fg.StageError):
        g.run()
    assert failing.is_set()
    (ctx,) = seen
    assert ctx is not background()
    assert ctx.done.is_set()
    assert isinstance(ctx.err, fg.Cancelled)


def test_current_context_is_shared_by_every_stage_of_a_run():
    seen = set()
    lock = threading.Lock()

    def look(x):
        with lock:
            seen.add(id(fg.current_context()))
        return x

    g = fg.Graph()
    g.source(range(8)).map(look, workers=2).map(look, workers=2).collect("out")
    assert sorted(g.run()["out"]) == list(range(8))
    assert len(seen) == 1


def test_done_wait_with_huge_timeout_wakes_on_cancel():
    ctx = fg.Context(timeout=1e12)
    result = []
    t = threading.Thread(target=lambda: result.append(ctx.done.wait(1e10)))
    t.start()
    ctx.cancel("now")
    t.join()
    assert result == [True]
