"""Chrome trace-event JSON of a run, for Perfetto and chrome://tracing.

Tracks (one "thread" each in the viewer):

* ``<stage>#<k>``: worker ``k`` of a host stage; one span per item, from the
  moment it was taken to the moment the stage function returned (time
  waiting on channels is the gap between spans).
* ``stream <stage>``: a GPU stage, which runs on its own CUDA stream. Its
  spans are the host-side time to *enqueue* each item's work (the kernels
  run asynchronously after it; under the CUDA simulator, where streams are
  synchronous, they are the compute time).
* ``stream <stage>.upload`` / ``.download``: the transfers into and out of a
  device segment, one span per item (``cat: "transfer"``); a download span
  includes waiting for the segment's work on that item to finish.
* a counter per stage, ``depth <stage>``: the items waiting in its input
  channel(s), sampled every ``interval`` seconds.

Times are microseconds since the run started.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..runtime.observe import Observer, RunView

__all__ = ["TraceRecorder", "chrome_trace"]


class TraceRecorder(Observer):
    """Record per-item spans and channel depths; write them at the end of the
    run (successful or not) to ``path`` as Chrome trace-event JSON.

    Turns on per-item spans in the workers (``wants_spans``): a list append
    per item. ``events`` holds the trace events after the run.
    """

    wants_spans = True

    def __init__(self, path: str | os.PathLike | None, interval: float = 0.02) -> None:
        self.path = path
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.events: list[dict[str, Any]] = []

    def on_start(self, view: RunView) -> None:
        if self.path is not None:
            # Fail before the run, not after it: open (and so create) the file now.
            try:
                open(self.path, "a", encoding="utf-8").close()
            except OSError as exc:
                path, self.path = self.path, None  # on_end must not try again
                raise ValueError(f"trace={str(path)!r} cannot be written: {exc}") from exc
        self.samples = [(0.0, {n: view.depth(n) for n in view.stages})]

    def on_tick(self, view: RunView) -> None:
        self.samples.append((view.elapsed(), {n: view.depth(n) for n in view.stages}))

    def on_end(self, view: RunView, report: Any, error: BaseException | None) -> None:
        self.on_tick(view)
        self.events = chrome_trace(view, self.samples)
        if self.path is not None:
            doc = {"traceEvents": self.events, "displayTimeUnit": "ms",
                   "otherData": {"graph": view.name,
                                 "error": None if error is None else repr(error)}}
            with open(self.path, "w", encoding="utf-8") as f:
                json.dump(doc, f)


def _track(view: RunView, name: str, worker: int) -> tuple[str, str]:
    """(track label, span category) of a worker of node ``name``."""
    node = view.plan.nodes[name]
    if node.role in ("upload", "download"):
        return f"stream {name}", "transfer"
    if node.device == "gpu":
        return f"stream {name}", "kernel"
    return f"{name}#{worker}", "stage"


def chrome_trace(view: RunView, samples: list[tuple[float, dict[str, int]]]) -> list[dict]:
    """The trace events of a finished run: metadata, spans, depth counters."""
    pid = os.getpid()
    t0 = view.started
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": pid, "args": {"name": f"flowgpu {view.name}"}}]
    tid = 0
    for name, stage in view.stages.items():
        for w, st in enumerate(stage.stats):
            tid += 1
            label, cat = _track(view, name, w)
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                           "args": {"name": label}})
            events.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid,
                           "args": {"sort_index": tid}})
            span_name = view.plan.nodes[name].role if cat == "transfer" else name
            for seq, start, end in st.spans or ():
                events.append({"name": span_name, "cat": cat, "ph": "X", "pid": pid,
                               "tid": tid, "ts": round((start - t0) * 1e6, 3),
                               "dur": round((end - start) * 1e6, 3),
                               "args": {"item": seq, "stage": name}})
    for t, depths in samples:
        for name, depth in depths.items():
            if view.stages[name].kind == "source":
                continue
            events.append({"name": f"depth {name}", "cat": "channel", "ph": "C", "pid": pid,
                           "ts": round(t * 1e6, 3), "args": {"items": depth}})
    return events
