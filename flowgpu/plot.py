"""``report.plot()``: where each stage's time went, as a matplotlib figure.

Left: a timeline, one row per stage, from its first worker's start to its
last worker's end, split into busy, starved (waiting for input) and blocked
(waiting for space downstream) in proportion. Right: the same shares of the
stage's worker time as bars, with the bottleneck stage marked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import RunReport

__all__ = ["plot_report"]

COLOURS = {"busy": "#2b8cbe", "starved": "#fdae6b", "blocked": "#de2d26", "other": "#d9d9d9"}


def _shares(s: Any) -> dict[str, float]:
    busy = s.utilisation
    starved, blocked = s.starved, s.blocked
    total = busy + starved + blocked
    if total > 1.0:  # clocks of threads that share the GIL overlap a little
        busy, starved, blocked = busy / total, starved / total, blocked / total
    return {"busy": busy, "starved": starved, "blocked": blocked,
            "other": max(0.0, 1.0 - busy - starved - blocked)}


def plot_report(report: RunReport, *, figsize: tuple[float, float] | None = None) -> Any:
    """A :class:`matplotlib.figure.Figure` of the run (no pyplot state is kept,
    so it displays once in Jupyter and can be saved with ``savefig``)."""
    from matplotlib.figure import Figure

    stages = list(report.stages.values())
    height = figsize[1] if figsize else 1.6 + 0.45 * len(stages)
    fig = Figure(figsize=(figsize[0] if figsize else 11, height), layout="constrained")
    timeline, bars = fig.subplots(1, 2, width_ratios=[3, 2], sharey=True)
    rows = range(len(stages))
    for y, s in zip(rows, stages):
        left = s.started_s
        for key, share in _shares(s).items():
            width = share * s.wall_s
            timeline.barh(y, width, left=left, color=COLOURS[key], height=0.6,
                          label=key if y == 0 else None)
            left += width
    timeline.set_yticks(list(rows), [f"{s.name} x{s.workers}" for s in stages])
    timeline.invert_yaxis()
    timeline.set_xlabel("seconds since the run started")
    timeline.set_title(f"{report.graph}: {report.duration_s:.3f} s on {report.device}")
    fig.legend(loc="outside lower center", ncols=4, fontsize="small", frameon=False)
    for y, s in zip(rows, stages):
        left = 0.0
        for key, share in _shares(s).items():
            bars.barh(y, share * 100, left=left, color=COLOURS[key], height=0.6)
            left += share * 100
    bars.set_xlim(0, 100)
    bars.set_xlabel("% of worker time")
    neck = report.bottleneck_stage
    if neck is not None:
        y = [s.name for s in stages].index(neck)
        bars.annotate("bottleneck", (100, y), xytext=(-4, 0), textcoords="offset points",
                      ha="right", va="center", color="white", fontweight="bold",
                      fontsize="small")
    bars.set_title("utilisation")
    return fig
