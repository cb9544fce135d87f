"""RunReport: what a run produced and how it went, stage by stage."""

from __future__ import annotations

import dataclasses
import html
from typing import Any

from .errors import StageError

__all__ = ["RunReport", "StageStats", "WorkerStats", "SegmentStats", "device_segments"]


class WorkerStats:
    """Counters of one worker thread; merged into its stage's StageStats at the end.

    One object per worker, so counting takes no lock.
    """

    __slots__ = ("items_in", "items_out", "errors", "busy_s", "starved_s", "blocked_s",
                 "cpus", "spans", "thread_id", "takes", "depth_sum", "depth_max",
                 "bytes_in", "bytes_out")

    def __init__(self) -> None:
        self.items_in = 0
        self.items_out = 0
        self.errors = 0
        self.busy_s = 0.0
        self.starved_s = 0.0
        self.blocked_s = 0.0
        self.cpus: frozenset[int] | None = None
        #: (item index, start, end) per item on perf_counter's clock, when tracing
        self.spans: list[tuple[int, float, float]] | None = None
        self.thread_id: int | None = None
        #: input-channel depth seen at each take (after it): count, sum, max
        self.takes = 0
        self.depth_sum = 0
        self.depth_max = 0
        #: ``nbytes`` of the array items taken in and sent out
        self.bytes_in = 0
        self.bytes_out = 0


@dataclasses.dataclass
class StageStats:
    """Per-stage metrics. Times are seconds summed over the stage's workers."""

    name: str
    kind: str
    workers: int
    device: str = "cpu"
    items_in: int = 0
    items_out: int = 0
    errors: int = 0
    busy_s: float = 0.0  # inside the stage function
    starved_s: float = 0.0  # waiting for input
    blocked_s: float = 0.0  # waiting for space downstream (backpressure)
    wall_s: float = 0.0
    cpus: frozenset[int] | None = None
    depth_max: int = 0  # most items seen waiting in the input channel(s) at a take
    depth_mean: float = 0.0  # mean of the same, over the stage's takes
    bytes_in: int = 0  # nbytes of the array items taken in
    bytes_out: int = 0  # nbytes of the array items sent out
    started_s: float = 0.0  # when its first worker started, seconds after the run's start
    inputs: tuple[str, ...] = ()  # the stages feeding this one
    role: str = "stage"  # stage | upload | download (device-segment edges)

    @property
    def utilisation(self) -> float:
        """Busy time over the time the workers existed (0..1)."""
        denom = self.workers * self.wall_s
        return self.busy_s / denom if denom > 0 else 0.0

    @property
    def starved(self) -> float:
        """Share of the workers' time spent waiting for input (0..1)."""
        denom = self.workers * self.wall_s
        return min(1.0, self.starved_s / denom) if denom > 0 else 0.0

    @property
    def blocked(self) -> float:
        """Share of the workers' time spent waiting for space downstream (0..1)."""
        denom = self.workers * self.wall_s
        return min(1.0, self.blocked_s / denom) if denom > 0 else 0.0

    def merge(self, workers: list[WorkerStats]) -> None:
        takes = depth_sum = 0
        for w in workers:
            takes += w.takes
            depth_sum += w.depth_sum
            self.depth_max = max(self.depth_max, w.depth_max)
            self.bytes_in += w.bytes_in
            self.bytes_out += w.bytes_out
            self.items_in += w.items_in
            self.items_out += w.items_out
            self.errors += w.errors
            self.busy_s += w.busy_s
            self.starved_s += w.starved_s
            self.blocked_s += w.blocked_s
            if w.cpus is not None:
                self.cpus = (self.cpus or frozenset()) | w.cpus
        if takes:
            self.depth_mean = depth_sum / takes


@dataclasses.dataclass
class SegmentStats:
    """One device segment: its nodes and where its host-side time went.

    ``transfer_s`` is the busy time of its upload and download nodes (staging
    through pinned buffers, the copies, and the download's wait for the
    segment's last event); ``kernel_s`` that of its GPU stages, which on a real
    GPU is the time to *enqueue* their work (the kernels themselves overlap
    with it and show up in the download's wait). Under the CUDA simulator
    everything is synchronous, so ``kernel_s`` is the compute time.
    """

    nodes: tuple[str, ...]
    transfer_s: float = 0.0
    kernel_s: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0


def device_segments(nodes: dict[str, Any], stats: dict[str, StageStats]) -> list[SegmentStats]:
    """Group the plan's GPU nodes (uploads and downloads included) into segments."""
    on_gpu = [n for n, node in nodes.items() if node.device == "gpu"]
    seen: set[str] = set()
    segments = []
    for start in on_gpu:
        if start in seen:
            continue
        members, todo = [], [start]
        while todo:  # connected component over producer/consumer edges
            n = todo.pop()
            if n in seen or n not in nodes or nodes[n].device != "gpu":
                continue
            seen.add(n)
            members.append(n)
            todo += [p for port in nodes[n].inputs for p in port]
            todo += [m for m, other in nodes.items()
                     if any(n in port for port in other.inputs)]
        seg = SegmentStats(tuple(n for n in nodes if n in members))
        for n in seg.nodes:
            st, role = stats.get(n), nodes[n].role
            if st is None:
                continue
            if role == "stage":
                seg.kernel_s += st.busy_s
            else:
                seg.transfer_s += st.busy_s
            if role == "upload":
                seg.bytes_up += st.bytes_in
            elif role == "download":
                seg.bytes_down += st.bytes_out
        segments.append(seg)
    return segments


def find_bottleneck(stages: dict[str, StageStats]) -> tuple[StageStats, str] | None:
    """The stage that limits throughput and the advice; None for an idle run.

    The busiest stage limits throughput when its consumers wait for it
    (downstream starved) and its producers wait for room in its channel
    (upstream blocked); the advice depends on what kind of stage it is.
    Busy is measured over the whole run, not over the stage's own life: a
    source that handed all its items over at once and ended was busy for
    all of its short life, yet limited nothing.
    """
    cands = [s for s in stages.values() if s.kind != "collect" and s.wall_s > 0]
    if not cands:
        return None
    span = max(s.wall_s for s in stages.values())

    def busy(s: StageStats) -> float:
        return s.busy_s / (s.workers * span)

    top = max(cands, key=busy)
    top_busy = busy(top)
    if top_busy < 0.05:
        return None
    consumers = [s for s in stages.values() if top.name in s.inputs]
    down = max((c.starved for c in consumers), default=0.0)
    up = max((stages[p].blocked for p in top.inputs if p in stages), default=0.0)
    plural = "s" if top.workers != 1 else ""
    facts = [f"{top.workers} worker{plural} busy {top_busy:.0%}"]
    if consumers:
        facts.append(f"downstream starved {down:.0%}")
    if up >= 0.05:
        facts.append(f"upstream blocked {up:.0%}")
    if top_busy < 0.5:
        advice = "the busiest stage, but none is saturated: the run is short or waits elsewhere"
    elif top.kind == "source":
        advice = ("the source is the limit: make it faster, or emit chunks and expand "
                  "them in a flat_map with workers")
    elif top.role in ("upload", "download"):
        advice = "transfers are the limit: batch items into fewer, larger arrays"
    elif top.device == "gpu":
        advice = "the GPU stage is the limit: batch items into larger arrays"
    elif top.kind in ("batch", "zip"):
        advice = "a single-threaded batch/zip is the limit: do less per item upstream"
    else:
        advice = "add workers"
    return top, f"{top.name}: {', '.join(facts)}: {advice}"


class RunReport:
    """The result of ``Graph.run``.

    ``report["name"]`` is the list gathered by ``collect("name")``;
    ``report.stages[stage]`` the metrics of a stage; ``report.errors`` the
    items skipped under ``on_error="skip"`` (a dead-letter list of
    :class:`StageError`, each with ``stage``, ``item_index``, ``item`` and the
    exception as ``exception``/``__cause__``).
    """

    def __init__(self, graph: str, collected: dict[str, list[Any]],
                 stages: dict[str, StageStats], errors: list[StageError],
                 duration_s: float, device: str) -> None:
        self.graph = graph
        self.collected = collected
        self.stages = stages
        self.errors = errors
        self.duration_s = duration_s
        self.device = device
        self.fused: list[tuple[str, ...]] = []  # stage groups compiled into one kernel
        self.pinning: Any = None  # the PinPlan, when threads were pinned
        self.notes: list[str] = []  # what observers (the stall watchdog...) noticed
        #: with max_inflight_bytes: the most bytes that waited in channels at once
        self.inflight_peak_bytes: dict[str, int] = {}
        self.segments: list[SegmentStats] = []  # device segments: transfer and kernel time

    def __getitem__(self, name: str) -> list[Any]:
        try:
            return self.collected[name]
        except KeyError:
            known = ", ".join(sorted(self.collected)) or "none"
            raise KeyError(f"no collect named {name!r} in this run (collected: {known})") from None

    def __contains__(self, name: str) -> bool:
        return name in self.collected

    @property
    def bottleneck(self) -> str | None:
        """The stage that limits throughput, with a reason a user can act on:
        ``"decode: 4 workers busy 97%, downstream starved 80%: add workers"``.
        None when no stage was busy (nothing to act on)."""
        found = find_bottleneck(self.stages)
        return found[1] if found else None

    @property
    def bottleneck_stage(self) -> str | None:
        """The name of the stage :attr:`bottleneck` talks about."""
        found = find_bottleneck(self.stages)
        return found[0].name if found else None

    def rows(self) -> list[dict[str, Any]]:
        """One dict per stage: the columns of :meth:`summary` and the HTML table."""
        return [{
            "stage": s.name, "kind": s.kind, "device": s.device, "workers": s.workers,
            "in": s.items_in, "out": s.items_out, "errors": s.errors,
            "busy_s": round(s.busy_s, 4), "starved_s": round(s.starved_s, 4),
            "blocked_s": round(s.blocked_s, 4), "util": f"{s.utilisation:.0%}",
            "depth": f"{s.depth_mean:.1f}/{s.depth_max}",
            "MB_in": round(s.bytes_in / 1e6, 2), "MB_out": round(s.bytes_out / 1e6, 2),
        } for s in self.stages.values()]

    def plot(self, **options: Any) -> Any:
        """A matplotlib figure: a timeline per stage and utilisation bars
        (see :func:`flowgpu.plot.plot_report`; needs matplotlib)."""
        from .plot import plot_report

        return plot_report(self, **options)

    def summary(self) -> str:
        """A plain-text table of the stages, the run time and the bottleneck."""
        rows = self.rows()
        heads = list(rows[0]) if rows else []
        cells = [[str(r[h]) for h in heads] for r in rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
        lines = [f"run of {self.graph!r} on {self.device}: {self.duration_s:.3f} s, "
                 f"{len(self.errors)} skipped item(s)"]
        lines.append("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
        for seg in self.segments:
            lines.append(f"device segment {' > '.join(seg.nodes)}: transfers "
                         f"{seg.transfer_s:.3f} s, kernels {seg.kernel_s:.3f} s (host side)")
        if self.bottleneck:
            lines.append(f"bottleneck: {self.bottleneck}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = self.rows()
        heads = list(rows[0]) if rows else []
        th = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[h]))}</td>" for h in heads)
                      + "</tr>" for r in rows)
        caption = html.escape(f"{self.graph}: {self.duration_s:.3f} s on {self.device}"
                              + (f"; bottleneck {self.bottleneck}" if self.bottleneck else ""))
        return f"<table><caption>{caption}</caption><tr>{th}</tr>{trs}</table>"

    def __repr__(self) -> str:
        return (f"<RunReport {self.graph!r}: {self.duration_s:.3f} s, "
                f"collected {sorted(self.collected)}, {len(self.errors)} skipped>")
