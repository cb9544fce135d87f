"""A live run's numbers: stage statistics so far and a JSON-ready snapshot."""

from __future__ import annotations

import time
from typing import Any

from ..report import StageStats, find_bottleneck
from ..runtime.observe import RunView

__all__ = ["live_stats", "snapshot", "healthy"]


def live_stats(view: RunView) -> dict[str, StageStats]:
    """Each stage's statistics so far, merged from its workers' live counters
    (read without a lock: at most one item behind)."""
    now = time.perf_counter()
    out: dict[str, StageStats] = {}
    for name, stage in view.stages.items():
        node = view.plan.nodes[name]
        s = StageStats(name=name, kind=stage.kind, workers=stage.workers, device=stage.device,
                       inputs=tuple(p for port in node.inputs for p in port), role=node.role)
        s.merge(stage.stats)
        if stage.started:
            s.wall_s = (stage.ended or now) - stage.started
        out[name] = s
    return out


def healthy(view: RunView) -> bool:
    """True while the run goes on or ended well; False once it failed, was
    cancelled or ran out of time."""
    err = view.ctx.err
    if err is None:
        return True
    # A run that ended well cancels its group with a plain "finished" note,
    # after the last worker returned; anything else is a failure.
    return view.finished.is_set() and isinstance(err.reason, str) and "finished" in err.reason


def snapshot(view: RunView) -> dict[str, Any]:
    """The run now, as plain data (what ``/status`` serves)."""
    stats = live_stats(view)
    found = find_bottleneck(stats)
    return {
        "graph": view.name,
        "elapsed_s": round(view.elapsed(), 3),
        "running": not view.finished.is_set(),
        "healthy": healthy(view),
        "error": None if view.ctx.err is None else str(view.ctx.err),
        "bottleneck": found[1] if found else None,
        "stages": {name: {
            "kind": s.kind, "device": s.device, "workers": s.workers,
            "items_in": s.items_in, "items_out": s.items_out, "errors": s.errors,
            "busy_s": round(s.busy_s, 4), "starved_s": round(s.starved_s, 4),
            "blocked_s": round(s.blocked_s, 4), "utilisation": round(s.utilisation, 4),
            "depth": view.depth(name), "depth_max": s.depth_max,
            "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
        } for name, s in stats.items()},
        "notes": list(view.notes),
    }
