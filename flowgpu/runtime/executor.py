"""Run a graph: validate, plan, start one thread per worker, wait, report.

The run owns everything it starts. Its threads live in one
:class:`~flowgpu.TaskGroup` whose context is the run's context: the first
error, a cancel of the caller's context, the run's deadline or a
``KeyboardInterrupt`` in the calling thread cancels it, which wakes every
channel operation of every stage; ``run`` returns or raises only after every
thread has returned and every device resource is released.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from .. import config
from .. import device as devices
from ..channel import Channel
from ..context import Context, current_context
from ..errors import FlowError, GraphError, StageError
from ..graph import BUDGETED_CAPACITY, SMALL_ITEMS_BATCH, SMALL_ITEMS_CAPACITY, Graph
from ..report import RunReport, StageStats, device_segments
from ..taskgroup import TaskGroup
from .budget import BudgetedIntake, BudgetedOutlet, ByteBudget
from .cpu import StageRun
from .flow import Intake, Outlet, Port
from .hooks import RunHooks
from .observe import Observer, RunView, monitor
from .plan import Plan, PlanNode, cpu_invoke, make_plan

__all__ = ["run"]


def run(graph: Graph, *, device: str = "auto", timeout: float | None = None,
        ctx: Context | None = None, fuse: bool = True, pin: str | None = None,
        max_buffers: int = 6, max_inflight_bytes: int | dict[str, int] | None = None,
        observers: Sequence[Observer] = (), progress: bool = False,
        trace: str | os.PathLike | None = None, stall_timeout: float | None = None,
        serve: Any = None, metrics: bool = True) -> RunReport:
    """Execute ``graph`` and return its :class:`RunReport`.

    Blocks until the run ends.

    - ``device``: where numeric stages run unless they say otherwise:
      ``"auto"`` (the GPU when present; ``FLOWGPU_DEVICE`` decides what auto
      means), ``"cpu"`` or ``"gpu"`` (:class:`DeviceUnavailable` without one).
    - ``timeout``: a deadline for the whole run, in seconds.
    - ``ctx``: a :class:`Context` whose cancellation cancels the run (default:
      :func:`flowgpu.current_context`, so a run nested in a stage stops with
      the outer run).
    - ``fuse``: compile consecutive ``@elementwise`` stages into one kernel.
    - ``pin``: ``"none"``, ``"gpu-local"``, ``"spread"`` or ``"compact"``:
      which CPUs each stage's worker threads run on (stages' ``cpus=``
      always apply).
    - ``max_buffers``: pinned host buffers for GPU transfers (bounds the
      items in flight between upload and download).
    - ``max_inflight_bytes``: a byte budget for the array items waiting in
      the run's channels (an int for host and device alike, or
      ``{"host": n, "device": m}``); see :mod:`flowgpu.runtime.budget`.
    - ``observers``: :class:`~flowgpu.runtime.observe.Observer` objects that
      watch the run (progress, traces, live status...).
    - ``progress``: a tqdm bar per sink (``tqdm.auto``: a widget in Jupyter).
    - ``trace``: a path; write a Chrome trace-event JSON of the run there
      (open it in Perfetto or chrome://tracing), also when the run fails.
    - ``stall_timeout``: seconds without any item moving before the stall
      watchdog logs which stage waits on which channel (kept in
      ``report.notes``); ``None``: ``FLOWGPU_STALL_TIMEOUT``; 0: off.
    - ``serve``: a port (0: any free one), ``"host:port"`` or a
      :class:`flowgpu.observe.StatusServer`: serve ``/health``, ``/metrics``
      and ``/status`` over HTTP while the run is alive.
    - ``metrics``: ``False`` skips the per-item clocks, depths and byte counts
      of the map-like stages (for the last few percent of throughput).

    Raises :class:`GraphError` or :class:`DeviceUnavailable` before starting
    anything when the graph cannot run; :class:`StageError` for the first
    stage failure under ``on_error="raise"`` (a :class:`KernelError` too when
    a kernel failed); :class:`Cancelled` / :class:`DeadlineExceeded` when the
    run was cancelled or ran out of time; and re-raises ``KeyboardInterrupt``
    after stopping every worker. A raised :class:`FlowError` carries the
    partial report as ``error.report``: what was collected and skipped
    before the end is not lost.
    """
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device={device!r}: expected 'auto', 'cpu' or 'gpu'")
    if device == "gpu":
        devices.resolve("gpu")  # DeviceUnavailable now, even if no stage is numeric
    observers = list(observers)
    if stall_timeout is None:
        stall_timeout = config.settings.stall_timeout
    if progress or trace or serve is not None or stall_timeout:
        from ..observe import observers_for

        observers += observers_for(progress=progress, trace=trace,
                                   stall_timeout=stall_timeout, serve=serve)
    nxg = graph.validate()
    plan = make_plan(graph, nxg, device, fuse)
    hooks = RunHooks(plan, pin, max_buffers)  # pinning plan: GraphError before any thread
    _check_sources(graph)
    # Without ctx, a run started inside a stage (or a task group's task) runs
    # under that stage's context, so that cancelling the outer run (its error,
    # its deadline, a Ctrl-C) stops the inner one too instead of waiting for
    # it forever. Outside any run this is the background context.
    run_ctx = Context(timeout, parent=ctx if ctx is not None else current_context(),
                      name=graph.name)
    dead_letters: list[StageError] = []
    # The stages work under the group's context, which the first failure cancels.
    group = TaskGroup(run_ctx, name=graph.name)
    start = time.perf_counter()
    stages: dict[str, StageRun] = {}
    view: RunView | None = None
    budgets: dict[str, ByteBudget] | None = None
    report: RunReport | None = None
    error: BaseException | None = None
    try:
        spans = any(getattr(o, "wants_spans", False) for o in observers)
        budgets = _budgets(max_inflight_bytes)
        stages = _wire(plan, group.ctx, dead_letters, hooks, spans, budgets, metrics)
        view = RunView(plan, stages, group.ctx)
        _count_down(stages, view.finished)
        for o in observers:
            o.on_start(view)
        with group as tg:
            if any(o.interval for o in observers):
                tg.go(monitor, view, observers, name="monitor")
            for stage in stages.values():
                for w in range(stage.workers):
                    tg.go(stage.work, w, name=f"{stage.name}#{w}")
    except BaseException as exc:
        error = exc
        if isinstance(exc, FlowError):
            exc.report = _report(plan, stages, dead_letters, time.perf_counter() - start, hooks)
        raise
    finally:
        run_ctx.cancel("run ended")
        hooks.close()
        if view is not None:
            view.finished.set()
            if error is None:
                report = _report(plan, stages, dead_letters, time.perf_counter() - start, hooks)
                if budgets is not None:
                    report.inflight_peak_bytes = {k: b.peak for k, b in budgets.items()}
            else:
                report = getattr(error, "report", None)
            if report is not None:
                report.notes = view.notes
            for o in observers:
                o.on_end(view, report, error)
    return report


def _count_down(stages: dict[str, StageRun], finished: threading.Event) -> None:
    """Set ``finished`` when the last worker of the last stage has returned."""
    lock = threading.Lock()  # guards left; nobody waits on it
    left = [len(stages)]

    def stage_ended() -> None:
        with lock:
            left[0] -= 1
            done = left[0] == 0
        if done:
            finished.set()

    for stage in stages.values():
        stage._on_end = stage_ended


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


def _budgets(limit: int | dict[str, int] | None) -> dict[str, ByteBudget] | None:
    if limit is None:
        return None
    if isinstance(limit, dict):
        unknown = set(limit) - {"host", "device"}
        if unknown:
            raise ValueError(f"max_inflight_bytes: unknown keys {sorted(unknown)}; "
                             "use 'host' and 'device'")
        big = 1 << 62
        return {k: ByteBudget(limit.get(k, big), k) for k in ("host", "device")}
    return {k: ByteBudget(limit, k) for k in ("host", "device")}


def _wire(plan: Plan, ctx: Context, dead_letters: list[StageError],
          hooks: RunHooks, trace: bool = False,
          budgets: dict[str, ByteBudget] | None = None,
          metrics: bool = True) -> dict[str, StageRun]:
    """Make this run's channels and stage states."""
    nodes = plan.nodes
    ports: dict[str, list[Port]] = {name: [] for name in nodes}  # producer -> consumers' ports
    intakes: dict[str, list[Intake]] = {}
    # the ports fed by the same producers: the branches of one stream
    branches: dict[tuple[str, ...], list[Port]] = {}
    for name, node in nodes.items():
        spec = node.spec
        needs_window = spec.ordered and spec.workers > 1 and node.kind not in ("sink", "collect")
        stage_intakes = []
        for k, producers in enumerate(node.inputs):
            auto = spec.capacity is None
            # capacity not given: small items move in batches (see flow.Port);
            # under a byte budget every item is counted as it moves, so not there
            batched = auto and budgets is None
            capacity = (SMALL_ITEMS_CAPACITY // SMALL_ITEMS_BATCH if batched
                        else BUDGETED_CAPACITY if auto else spec.capacity)
            ch: Channel = Channel(capacity, name=f"{name}[{k}]")
            port = Port(ch, writers=len(producers), auto=auto,
                        batch=SMALL_ITEMS_BATCH if batched else 0)
            branches.setdefault(tuple(sorted(producers)), []).append(port)
            for producer in producers:
                ports[producer].append(port)
            window = 2 * spec.workers if needs_window else None
            stage_intakes.append(Intake(port, ctx, window) if budgets is None
                                 else BudgetedIntake(port, ctx, window, budgets))
        intakes[name] = stage_intakes
    for group in branches.values():
        if len(group) > 1:  # a stream used twice or more: its branches keep one order
            lock = threading.Lock()
            for port in group:
                port.branch_lock = lock
    stages: dict[str, StageRun] = {}
    for name, node in nodes.items():
        outlet = None
        if ports[name]:
            outlet = (Outlet(ports[name], ctx) if budgets is None
                      else BudgetedOutlet(ports[name], ctx, budgets))
        stages[name] = StageRun(node.spec, ctx, intakes[name], outlet, _invoke(node, hooks, ctx),
                                dead_letters, hooks, device=node.device, trace=trace,
                                metrics=metrics)
    return stages


def _invoke(node: PlanNode, hooks: RunHooks, ctx: Context) -> Any:
    if node.role != "stage" or (node.device == "gpu" and node.ops):
        return hooks.gpu_invoke(node, ctx)
    if node.ops:
        return cpu_invoke(node)
    return node.spec.fn


def _report(plan: Plan, stages: dict[str, StageRun], dead_letters: list[StageError],
            duration: float, hooks: RunHooks) -> RunReport:
    stats: dict[str, StageStats] = {}
    collected: dict[str, list[Any]] = {}
    for name, stage in stages.items():
        node = plan.nodes[name]
        s = StageStats(name=name, kind=stage.kind, workers=stage.workers, device=stage.device,
                       inputs=tuple(p for port in node.inputs for p in port), role=node.role)
        s.merge(stage.stats)
        if stage.started:
            s.wall_s = (stage.ended or time.perf_counter()) - stage.started
            s.started_s = max(0.0, stage.started - (time.perf_counter() - duration))
        stats[name] = s
        if stage.kind == "collect":
            collected[stage.spec.extra["key"]] = stage.collected
    devices = sorted({n.device for n in plan.nodes.values() if n.ops or n.role != "stage"})
    report = RunReport(plan.graph.name, collected, stats, list(dead_letters), duration,
                       "+".join(devices) if devices else "cpu")
    report.fused = list(plan.fused_groups)
    report.segments = device_segments(plan.nodes, stats)
    report.pinning = hooks.pin_plan
    return report
