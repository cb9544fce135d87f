"""The stall watchdog names who waits on what, Go-style; synchronised by events."""

from __future__ import annotations

import logging
import threading

import flowgpu as fg
from flowgpu import config
from flowgpu.observe import StallWatchdog, observers_for


def _stuck_graph(gate: threading.Event):
    def held(x):
        if x == 2:
            gate.wait()  # released by the test once the stall was noted
        return x

    g = fg.Graph("stuck")
    g.source(range(40)).map(held, capacity=2).collect("o", capacity=1)
    return g


def test_a_stall_is_noted_with_each_worker_and_channel(caplog):
    gate = threading.Event()
    notes: list[str] = []

    def on_stall(note: str) -> None:
        notes.append(note)
        gate.set()

    with caplog.at_level(logging.WARNING, logger="flowgpu.stall"):
        rep = _stuck_graph(gate).run(observers=[StallWatchdog(0.05, on_stall=on_stall)])
    assert rep["o"] == list(range(40))
    assert len(notes) == 1 and rep.notes == notes
    note = notes[0]
    assert "source#0 [chan send] to held[0] (full 2/2)" in note
    assert "held#0 [in stage function] held" in note
    assert "collect:o#0 [chan receive] from collect:o[0] (empty)" in note
    assert any("stall" in r.message for r in caplog.records)


def test_run_option_and_setting_build_the_watchdog():
    assert [type(o) for o in observers_for(stall_timeout=2.0)] == [StallWatchdog]
    assert observers_for(stall_timeout=0) == []
    assert StallWatchdog(2.0).interval == 0.5
    gate = threading.Event()
    gate.set()
    with config.override(stall_timeout=30.0):
        rep = _stuck_graph(gate).run()  # the watchdog runs and sees no stall
    assert rep.notes == []


def test_stall_timeout_from_run_overrides_the_setting():
    gate = threading.Event()
    seen = threading.Event()
    # The note goes to report.notes; the test releases the gate from a thread
    # that waits for the watchdog's log record (no sleeping).
    handler = _SetOnRecord(seen)
    logger = logging.getLogger("flowgpu.stall")
    logger.addHandler(handler)

    def release():
        seen.wait(10)
        gate.set()

    t = threading.Thread(target=release)
    t.start()
    try:
        with config.override(stall_timeout=0.0):
            rep = _stuck_graph(gate).run(stall_timeout=0.05)
    finally:
        gate.set()
        t.join()
        logger.removeHandler(handler)
    assert len(rep.notes) == 1 and "held#0 [in stage function]" in rep.notes[0]


class _SetOnRecord(logging.Handler):
    def __init__(self, event: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()
