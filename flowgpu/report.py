"""RunReport: what a run produced and how it went, stage by stage."""

from __future__ import annotations

import dataclasses
import html
from typing import Any

from .errors import StageError

__all__ = ["RunReport", "StageStats", "WorkerStats"]


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
        """The stage that limits throughput, with a reason a user can act on."""
        busy = [s for s in self.stages.values() if s.kind not in ("source", "collect")]
        if not busy:
            return None
        top = max(busy, key=lambda s: s.utilisation)
        if top.utilisation < 0.05:
            return None
        advice = "add workers" if top.utilisation > 0.8 else "it is the busiest stage"
        return (f"{top.name}: {top.workers} worker{'s' if top.workers != 1 else ''} busy "
                f"{top.utilisation:.0%}: {advice}")

    def rows(self) -> list[dict[str, Any]]:
        return [{
            "stage": s.name, "kind": s.kind, "device": s.device, "workers": s.workers,
            "in": s.items_in, "out": s.items_out, "errors": s.errors,
            "busy_s": round(s.busy_s, 4), "starved_s": round(s.starved_s, 4),
            "blocked_s": round(s.blocked_s, 4), "util": f"{s.utilisation:.0%}",
        } for s in self.stages.values()]

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
        if self.bottleneck:
            lines.append(f"bottleneck: {self.bottleneck}")
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
