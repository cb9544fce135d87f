"""The stall watchdog: when no item has moved for a while, say who waits on what.

Like Go's deadlock report, which names every goroutine and what it is
blocked on (``goroutine 7 [chan send]``), the note lists each live worker
thread of the run and where it is: sending to a full channel, receiving from
an empty one, waiting for a slot of an ordered stage's reorder window, or
inside the stage function (with the function and line). It reads the
threads' current frames (``sys._current_frames``): the workers pay nothing.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from types import FrameType

from ..channel import Channel
from ..runtime.cpu import SOURCE_CALLERS, STAGE_CALLERS
from ..runtime.observe import Observer, RunView

__all__ = ["StallWatchdog", "describe_workers"]

log = logging.getLogger("flowgpu.stall")

_SEND = Channel.send.__code__
_RECV = Channel.recv.__code__


class StallWatchdog(Observer):
    """Notes a stall when no stage took in or sent out an item for
    ``stall_timeout`` seconds; checks every ``stall_timeout / 4`` seconds.

    A stall is logged (logger ``flowgpu.stall``, WARNING), appended to
    ``report.notes`` and to :attr:`stalls`, and passed to ``on_stall(note)``
    if given (called on the monitor thread). One note per stall: the next
    comes only after items moved again. The watchdog never cancels the run.
    """

    def __init__(self, stall_timeout: float,
                 on_stall: Callable[[str], None] | None = None) -> None:
        if stall_timeout <= 0:
            raise ValueError(f"stall_timeout must be > 0, not {stall_timeout!r}")
        self.stall_timeout = float(stall_timeout)
        self.interval = self.stall_timeout / 4
        self.on_stall = on_stall
        self.stalls: list[str] = []
        self._moved = -1
        self._since = 0.0
        self._reported = False

    def on_start(self, view: RunView) -> None:
        self._moved, self._since, self._reported = -1, view.elapsed(), False

    def on_tick(self, view: RunView) -> None:
        moved = sum(w.items_in + w.items_out for s in view.stages.values() for w in s.stats)
        now = view.elapsed()
        if moved != self._moved:
            self._moved, self._since, self._reported = moved, now, False
            return
        if self._reported or now - self._since < self.stall_timeout:
            return
        self._reported = True
        lines = describe_workers(view)
        note = (f"stall: no item moved for {now - self._since:.1f} s in run {view.name!r}; "
                + "; ".join(lines))
        log.warning("%s", "\n  ".join([note.split(";")[0]] + lines))
        view.notes.append(note)
        self.stalls.append(note)
        if self.on_stall is not None:
            self.on_stall(note)


def describe_workers(view: RunView) -> list[str]:
    """One line per live worker thread: ``"decode#0 [chan send] to resize[0] (full 8/8)"``."""
    frames = sys._current_frames()
    lines = []
    for name, stage in view.stages.items():
        for w, st in enumerate(stage.stats):
            frame = frames.get(st.thread_id) if st.thread_id is not None else None
            if frame is None:
                continue
            lines.append(f"{name}#{w} {_where(frame)}")
    return lines


def _where(frame: FrameType) -> str:
    """What a worker's innermost frames say it is doing."""
    inner: FrameType | None = None
    f: FrameType | None = frame
    while f is not None:
        code = f.f_code
        if code is _SEND or code is _RECV:
            ch = f.f_locals.get("self")
            return _channel_state(ch, sending=code is _SEND)
        if code in STAGE_CALLERS and inner is not None:
            return (f"[in stage function] {inner.f_code.co_name} "
                    f"({inner.f_code.co_filename}:{inner.f_lineno})")
        if code in SOURCE_CALLERS and inner is not None:
            return (f"[in source] {inner.f_code.co_name} "
                    f"({inner.f_code.co_filename}:{inner.f_lineno})")
        inner, f = f, f.f_back
    return f"[running] {frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})"


def _channel_state(ch: object, *, sending: bool) -> str:
    if not isinstance(ch, Channel):
        return "[chan send]" if sending else "[chan receive]"
    depth, cap = len(ch), ch.capacity
    if ch.name is None:  # the token channel of an ordered stage's reorder window
        return ("[reorder window] waiting for earlier items to be emitted" if not sending
                else "[reorder window] returning a slot")
    if sending:
        state = "no receiver (unbuffered)" if cap == 0 else f"full {depth}/{cap}"
        return f"[chan send] to {ch.name} ({state})"
    return f"[chan receive] from {ch.name} (empty{', closed' if ch.closed else ''})"
