"""Run a graph: validate, plan, start one thread per worker, wait, report.

The run owns everything it starts. Its threads live in one
:class:`~flowgpu.TaskGroup` whose context is the run's context: the first
error, a cancel of the caller's context, the run's deadline or a
``KeyboardInterrupt`` in the calling thread cancels it, which wakes every
channel operation of every stage; ``run`` returns or raises only after every
thread has returned and every device resource is released.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import networkx as nx

from ..channel import Channel
from ..context import Context
from ..errors import FlowError, GraphError, StageError
from ..graph import Graph, StageSpec
from ..report import RunReport, StageStats
from ..taskgroup import TaskGroup
from .cpu import Hooks, StageRun
from .flow import Intake, Outlet, Port

__all__ = ["run"]


def run(graph: Graph, *, device: str = "auto", timeout: float | None = None,
        ctx: Context | None = None) -> RunReport:
    """Execute ``graph`` and return its :class:`RunReport`.

    Blocks until the run ends. ``timeout`` (seconds) is a deadline for the
    whole run; ``ctx`` a context whose cancellation cancels the run. Raises
    :class:`GraphError` before starting anything when the graph is invalid,
    :class:`StageError` for the first stage failure under ``on_error="raise"``,
    :class:`Cancelled` / :class:`DeadlineExceeded` when the run was cancelled
    or ran out of time, and re-raises ``KeyboardInterrupt`` after stopping
    every worker. A raised :class:`FlowError` carries the partial report as
    ``error.report`` (what was collected and skipped before the end).
    """
    nxg = graph.validate()
    order = list(nx.topological_sort(nxg))
    _check_sources(graph)
    run_ctx = Context(timeout, parent=ctx, name=graph.name)
    dead_letters: list[StageError] = []
    hooks = Hooks()
    # The stages work under the group's context, which the first failure cancels.
    group = TaskGroup(run_ctx, name=graph.name)
    stages = _wire(graph, order, group.ctx, dead_letters, hooks)
    start = time.perf_counter()
    try:
        with group as tg:
            for stage in stages.values():
                for w in range(stage.workers):
                    tg.go(stage.work, w, name=f"{stage.name}#{w}")
    except FlowError as exc:
        exc.report = _report(graph, stages, dead_letters, time.perf_counter() - start, device)
        raise
    finally:
        run_ctx.cancel("run ended")
    return _report(graph, stages, dead_letters, time.perf_counter() - start, device)


def _check_sources(graph: Graph) -> None:
    """A one-shot iterator can feed one run; say so instead of running on empty."""
    for spec in graph._stages.values():
        if spec.kind != "source" or callable(spec.fn):
            continue
        if iter(spec.fn) is spec.fn:  # an iterator, not a re-iterable
            if spec.extra.get("consumed"):
                raise GraphError(
                    f"source {spec.name!r} was given a one-shot iterator, which an earlier "
                    "run consumed; pass a list, or a function that returns a fresh "
                    "iterable (a generator function)", stages=(spec.name,))
            spec.extra["consumed"] = True


def _wire(graph: Graph, order: list[str], ctx: Context, dead_letters: list[StageError],
          hooks: Hooks) -> dict[str, StageRun]:
    """Make this run's channels and stage states, consumers' ports first."""
    specs = graph._stages
    ports: dict[str, list[Port]] = {name: [] for name in order}  # producer -> its consumers' ports
    intakes: dict[str, list[Intake]] = {}
    for name in order:
        spec = specs[name]
        needs_window = spec.ordered and spec.workers > 1 and spec.kind not in ("sink", "collect")
        stage_intakes = []
        for port_index, stream in enumerate(spec.inputs):
            ch: Channel = Channel(spec.capacity, name=f"{name}[{port_index}]")
            port = Port(ch, writers=len(stream.producers))
            for producer in stream.producers:
                ports[producer].append(port)
            window = 2 * spec.workers if needs_window else None
            stage_intakes.append(Intake(ch, ctx, window))
        intakes[name] = stage_intakes
    stages: dict[str, StageRun] = {}
    for name in order:
        spec = specs[name]
        outlet = Outlet(ports[name], ctx) if ports[name] else None
        stages[name] = StageRun(spec, ctx, intakes[name], outlet, _invoke(spec), dead_letters,
                                hooks)
    return stages


def _invoke(spec: StageSpec) -> Any:
    return spec.fn


def _report(graph: Graph, stages: dict[str, StageRun], dead_letters: list[StageError],
            duration: float, device: str) -> RunReport:
    stats: dict[str, StageStats] = {}
    collected: dict[str, list[Any]] = {}
    for name, stage in stages.items():
        s = StageStats(name=name, kind=stage.kind, workers=stage.workers, device=stage.device)
        s.merge(stage.stats)
        if stage.started:
            s.wall_s = (stage.ended or time.perf_counter()) - stage.started
        stats[name] = s
        if stage.kind == "collect":
            collected[stage.spec.extra["key"]] = stage.collected
    return RunReport(graph.name, collected, stats, list(dead_letters), duration, device)


def iter_stages(stages: dict[str, StageRun]) -> Iterator[StageRun]:
    return iter(stages.values())
