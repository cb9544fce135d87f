"""Randomised fault injection: random graphs, one fault each, every guarantee checked.

:func:`make_case` turns a seed into a :class:`Case`: a graph of one shape
(chain, diamond, fan-out/fan-in, zip, batch/unbatch) of 1-6 function stages
with 1-4 workers and capacities 0-8 (and, under the CUDA simulator, GPU
stages), plus one :class:`Fault`: an exception in the source, a stage or the
sink (raised, skipped under ``on_error="skip"``, or transient under
``"retry"``), a cancel, a run deadline while a stage waits, a slow stage, or
an early exit of the consumer (the sink cancels the run).

:func:`check_case` runs the graph with the fault armed and then again with
it disarmed, and returns a :class:`Result` listing every broken guarantee:

* the run ends within a bound (a watchdog cancels a run that does not and
  counts a hang);
* it raises the right error naming the right stage, or succeeds when the
  fault is one the graph tolerates;
* no thread it started is alive, no channel operation is parked, no pinned
  buffer is held (under the simulator);
* every item reached the sink at most as often as the sequential reference
  says (never duplicated), and exactly as often when the run succeeded
  (never lost);
* the source generator's ``finally`` ran;
* the same graph then runs clean and delivers the whole reference.

Items are ints that keep their identity through every stage (maps return
their input, filters drop some, a flat_map repeats some, batch + unbatch
regroup them, a zip pairs an item with itself), so the reference is a count
per item, computed stage by stage in :meth:`Case.reference`.

A case is reproducible from its seed alone:
``python benchmarks/soak.py --seed SEED --runs 1 -v``.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import random
import threading
import time
from typing import Any

import flowgpu as fg
from flowgpu import channel as _channel

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")

#: a run taking longer than this is a hang (the watchdog then cancels it)
HANG_S = 10.0
#: how late after its deadline a run may raise DeadlineExceeded
DEADLINE_SLACK_S = 1.0

FAULTS = ("raise", "skip", "retry", "cancel", "deadline", "slow", "consumer_exit")


class FaultError(Exception):
    """The exception the harness injects."""


@dataclasses.dataclass
class HStage:
    """One stage of a harness graph, as plain data (the reference reads it)."""

    name: str
    kind: str  # source map filter flat_map batch unbatch zip unzip gpu to_arr to_int sink
    inputs: tuple[str, ...] = ()  # producers (several: a merge; for zip: one per input)
    workers: int = 1
    capacity: int | None = 8  # None: sized by the engine (small items move in batches)
    ordered: bool = True
    mod: int = 1  # filter: drop x % mod == 0; flat_map: repeat x when x % mod == 0
    size: int = 1  # batch size


@dataclasses.dataclass
class Fault:
    kind: str
    stage: str
    item: int | None  # None: every item (slow), or unreachable
    timeout: float | None = None  # the run's deadline, for "deadline"
    armed: bool = True
    ctx: fg.Context | None = None
    tried: set = dataclasses.field(default_factory=set)  # retry: items failed once
    stuck: bool = False  # deadline: the waiting stage was never released

    def hit(self, stage: str, x: Any) -> None:
        """Called by every function stage before its work."""
        if not self.armed or stage != self.stage:
            return
        kind = self.kind
        if kind == "slow":
            fg.current_context().done.wait(0.002)
            return
        if x != self.item:
            return
        if kind in ("raise", "skip"):
            raise FaultError(f"injected at {stage} on {x}")
        if kind == "retry":
            if x not in self.tried:
                self.tried.add(x)
                raise FaultError(f"transient at {stage} on {x}")
        elif kind == "cancel":
            self.ctx.cancel("fault: cancel")
        elif kind == "consumer_exit":
            self.ctx.cancel("fault: consumer done")
        elif kind == "deadline":
            if not fg.current_context().done.wait(HANG_S):
                self.stuck = True


@dataclasses.dataclass
class Case:
    seed: int
    shape: str
    n: int
    stages: dict[str, HStage]
    fault: Fault
    gpu: bool = False

    def describe(self) -> str:
        parts = []
        for s in self.stages.values():
            extra = ""
            if s.kind in ("filter", "flat_map"):
                extra = f"%{s.mod}"
            elif s.kind == "batch":
                extra = f"({s.size})"
            parts.append(f"{s.name}[w{s.workers} c{s.capacity}{'' if s.ordered else ' u'}{extra}]"
                         f"<-{'+'.join(s.inputs) or '-'}")
        f = self.fault
        return (f"seed={self.seed} shape={self.shape} n={self.n} fault={f.kind}@{f.stage}"
                f"#{f.item} timeout={f.timeout} :: " + " ".join(parts))

    # -- the sequential reference ------------------------------------------------
    def reference(self, skip: tuple[str, int] | None = None
                  ) -> tuple[collections.Counter, dict[str, collections.Counter]]:
        """Per item: how often the sink's function completes on it (what it
        logs), and how often it enters each stage.

        ``skip=(stage, x)``: that stage drops item x (``on_error="skip"``).
        """
        arrivals: dict[str, collections.Counter] = {}
        outputs: dict[str, collections.Counter] = {}
        for s in self.stages.values():
            if s.kind == "source":
                cin = collections.Counter(range(self.n))
            elif s.kind == "zip":
                cin = outputs[s.inputs[0]].copy()
            else:
                cin = collections.Counter()
                for p in s.inputs:
                    cin.update(outputs[p])
            arrivals[s.name] = cin
            out = collections.Counter()
            for x, c in cin.items():
                if skip is not None and skip == (s.name, x):
                    continue
                if s.kind == "filter" and x % s.mod == 0:
                    continue
                out[x] = c * (2 if s.kind == "flat_map" and x % s.mod == 0 else 1)
            outputs[s.name] = +out
        return outputs["sink"], arrivals


# -- building ------------------------------------------------------------------------
def make_case(seed: int, gpu: bool | None = None) -> Case:
    """The case of ``seed``: a random graph and one fault (see the module doc)."""
    rng = random.Random(seed)
    gpu = SIMULATOR if gpu is None else gpu
    shapes = ["chain", "diamond", "fanout", "zip", "batch"]
    shape = rng.choice(shapes)
    n = rng.choice([0, 1, 2, 5, 10, 17, 30, 40])
    stages: dict[str, HStage] = {}
    budget = rng.randint(1, 6)  # function stages in the graph (the sink included)

    def opts() -> dict[str, Any]:
        return dict(workers=rng.randint(1, 4), capacity=rng.choice([None, None, 0, 1, 2, 4, 8]),
                    ordered=rng.random() < 0.6)

    def add(kind: str, inputs: tuple[str, ...], **kw: Any) -> str:
        name = f"s{len(stages)}_{kind}"
        o = opts()
        o.update(kw)
        if kind in ("batch", "zip", "source"):
            o["workers"] = 1
        stages[name] = HStage(name, kind, inputs, **o)
        return name

    def segment(head: str, k: int, plain: bool = False) -> str:
        """A chain of k function stages after ``head``; plain: maps only (zip branches)."""
        for _ in range(k):
            kinds = ["map"] if plain else ["map", "map", "filter", "flat_map"]
            if gpu and not plain:
                kinds.append("gpu")
            kind = rng.choice(kinds)
            if kind == "gpu":
                head = add("to_arr", (head,))
                head = add("gpu", (head,))
                if rng.random() < 0.3:
                    head = add("gpu", (head,))
                head = add("to_int", (head,))
            elif kind in ("filter", "flat_map"):
                head = add(kind, (head,), mod=rng.randint(2, 5))
            else:
                head = add(kind, (head,))
        return head

    src = add("source", ())
    left = budget - 1  # the sink is one
    if shape == "chain":
        tail = segment(src, left)
    elif shape == "diamond":
        a = rng.randint(0, left)
        head = segment(src, a)
        rest = left - a
        b1 = segment(head, max(1, rest // 2))
        b2 = segment(head, rest - rest // 2)  # 0 stages: the branch is the stream itself
        tail = (b1, b2)
    elif shape == "fanout":
        k = rng.randint(2, 3)
        branches = tuple(segment(src, max(1, left // k)) for _ in range(k))
        tail = branches
    elif shape == "zip":
        head = segment(src, rng.randint(0, max(0, left - 2)))
        a = segment(head, 1, plain=True)
        b = segment(head, 1, plain=True)
        for s in (a, b):
            stages[s].ordered = True
        z = add("zip", (a, b))
        tail = add("unzip", (z,))
    else:  # batch
        head = segment(src, rng.randint(0, left))
        bname = add("batch", (head,), size=rng.randint(1, 4))
        ub = add("unbatch", (bname,))
        tail = segment(ub, max(0, left - (len(stages) - 3)))
    inputs = tail if isinstance(tail, tuple) else (tail,)
    o = opts()
    stages["sink"] = HStage("sink", "sink", inputs, **o)

    case = Case(seed, shape, n, stages, Fault("slow", "sink", None), gpu)
    case.fault = _pick_fault(rng, case)
    return case


def _pick_fault(rng: random.Random, case: Case) -> Fault:
    fn_stages = [s for s in case.stages.values()
                 if s.kind not in ("batch", "unbatch", "zip")]
    stage = rng.choice(fn_stages)
    kind = rng.choice(FAULTS)
    if stage.kind == "source" and kind in ("skip", "retry"):
        kind = "raise"  # a source has no error policy
    if stage.kind == "gpu" and kind in ("skip", "retry", "cancel", "consumer_exit"):
        kind = "raise"  # GPU stages: the fault is a poisoned input (see build)
    if stage.kind == "gpu" and case.stages[stage.inputs[0]].kind != "to_arr":
        stage = case.stages[stage.inputs[0]]  # the poison enters at the first GPU stage
    if kind == "consumer_exit":
        stage = case.stages["sink"]
    if kind == "skip" and _in_zip_branch(case, stage.name):
        kind = "raise"  # a skip in one zip input would make the inputs differ in length
    _, arrivals = case.reference()
    reached = sorted(arrivals[stage.name])
    if kind == "slow":
        return Fault("slow", stage.name, None)
    if not reached:
        # nothing ever reaches the stage: the fault cannot fire; test a slow stage
        return Fault("slow", stage.name, None)
    item = rng.choice(reached)
    timeout = round(rng.uniform(0.03, 0.15), 3) if kind == "deadline" else None
    return Fault(kind, stage.name, item, timeout)


def _in_zip_branch(case: Case, name: str) -> bool:
    return any(s.kind == "zip" and name in s.inputs for s in case.stages.values())


@fg.elementwise
def _plus0(x):
    return x + 0.0


def build(case: Case, sink_log: list) -> fg.Graph:
    """The flowgpu graph of ``case``; the sink appends what it gets to ``sink_log``."""
    import numpy as np

    fault = case.fault
    g = fg.Graph(f"fault{case.seed}")
    streams: dict[str, fg.Stream] = {}
    closed = threading.Event()
    g.source_closed = closed  # type: ignore[attr-defined]
    n = case.n

    def source():
        try:
            for x in range(n):
                fault.hit("s0_source", x)
                yield x
        finally:
            closed.set()

    def stream_of(inputs: tuple[str, ...]) -> fg.Stream:
        s = streams[inputs[0]]
        return s.merge(*(streams[p] for p in inputs[1:])) if len(inputs) > 1 else s

    for s in case.stages.values():
        policy: dict[str, Any] = {}
        if fault.stage == s.name and fault.kind == "skip":
            policy = dict(on_error="skip")
        elif fault.stage == s.name and fault.kind == "retry":
            policy = dict(on_error="retry", retries=2, backoff=0.0)
        common = dict(name=s.name, workers=s.workers, capacity=s.capacity, ordered=s.ordered,
                      **policy)
        name = s.name
        if s.kind == "source":
            streams[name] = g.source(source, name=name, capacity=s.capacity)
            continue
        up = stream_of(s.inputs) if s.kind != "zip" else None
        if s.kind == "map":
            def f(x, _n=name):
                fault.hit(_n, x)
                return x
            streams[name] = up.map(f, **common)
        elif s.kind == "filter":
            def f(x, _n=name, _m=s.mod):
                fault.hit(_n, x)
                return x % _m != 0
            streams[name] = up.filter(f, **common)
        elif s.kind == "flat_map":
            def f(x, _n=name, _m=s.mod):
                fault.hit(_n, x)
                return [x, x] if x % _m == 0 else [x]
            streams[name] = up.flat_map(f, **common)
        elif s.kind == "batch":
            streams[name] = up.batch(s.size, name=name, capacity=s.capacity)
        elif s.kind == "unbatch":
            streams[name] = up.unbatch(**common)
        elif s.kind == "zip":
            streams[name] = fg.zip(*(streams[p] for p in s.inputs), name=name,
                                   capacity=s.capacity)
        elif s.kind == "unzip":
            def f(t, _n=name):
                a, b = t
                if a != b:
                    raise AssertionError(f"zip paired {a} with {b}")
                fault.hit(_n, a)
                return a
            streams[name] = up.map(f, **common)
        elif s.kind == "to_arr":
            target = _next_gpu(case, name)

            def f(x, _n=name, _target=target):
                fault.hit(_n, x)
                if (fault.armed and fault.kind == "raise" and fault.stage == _target
                        and x == fault.item):
                    return "poison"  # the GPU stage's fault: not an array
                return np.full(1, x, np.float64)
            streams[name] = up.map(f, **common)
        elif s.kind == "gpu":
            streams[name] = up.map(_plus0, name=name, capacity=s.capacity, device="gpu")
        elif s.kind == "to_int":
            def f(a, _n=name):
                x = int(a[0])
                fault.hit(_n, x)
                return x
            streams[name] = up.map(f, **common)
        elif s.kind == "sink":
            def f(x):
                fault.hit("sink", x)
                sink_log.append(x)
            up.sink(f, **common)
        else:  # pragma: no cover
            raise AssertionError(s.kind)
    return g


def _next_gpu(case: Case, to_arr: str) -> str:
    for s in case.stages.values():
        if s.kind == "gpu" and s.inputs == (to_arr,):
            return s.name
    return ""


# -- checking ------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    case: Case
    elapsed: float = 0.0
    outcome: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)
    hang: bool = False
    leak: bool = False
    lost: int = 0
    duplicated: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{'ok ' if self.ok else 'BAD'} {self.elapsed * 1000:7.1f} ms {self.outcome:18} "
        return head + self.case.describe() + "".join(f"\n    - {p}" for p in self.problems)


class PoolWatch:
    """Tracks the pinned pools the runs make (simulator only)."""

    def __init__(self) -> None:
        self.pools: list[Any] = []
        self._undo: Any = None

    def __enter__(self) -> PoolWatch:
        if SIMULATOR:
            from flowgpu.runtime import gpu as gpu_runtime

            real = gpu_runtime.PinnedPool

            def track(*a: Any, **k: Any) -> Any:
                pool = real(*a, **k)
                self.pools.append(pool)
                return pool

            gpu_runtime.PinnedPool = track
            self._undo = lambda: setattr(gpu_runtime, "PinnedPool", real)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._undo is not None:
            self._undo()

    def held(self) -> int:
        held = [p for p in self.pools if not p.closed or p.allocated_bytes]
        self.pools.clear()
        return len(held)


def _engine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("flowgpu:")]


def _run_once(case: Case, g: fg.Graph, ctx: fg.Context, timeout: float | None
              ) -> tuple[Any, BaseException | None, float, bool]:
    """Run ``g`` under a watchdog; (report, error, seconds, watchdog fired)."""
    finished = threading.Event()
    fired: list[bool] = []

    def watchdog() -> None:
        if not finished.wait(HANG_S):
            fired.append(True)
            ctx.cancel("watchdog")

    dog = threading.Thread(target=watchdog, name="fault-watchdog")
    dog.start()
    t0 = time.monotonic()
    report, error = None, None
    try:
        report = g.run(ctx=ctx, timeout=timeout, device="gpu" if case.gpu else "cpu")
    except BaseException as exc:  # noqa: BLE001 - every outcome is judged below
        error = exc
    finally:
        elapsed = time.monotonic() - t0
        finished.set()
        dog.join()
    return report, error, elapsed, bool(fired)


def _hygiene(res: Result, pools: PoolWatch, when: str) -> None:
    threads = _engine_threads()
    blocked = _channel.blocked_operations()
    held = pools.held()
    if threads or blocked or held:
        res.leak = True
        res.problems.append(f"{when}: leak: threads {threads}, {blocked} parked ops, "
                            f"{held} pinned pools held")


def _count(res: Result, got: collections.Counter, want: collections.Counter, exact: bool,
           when: str) -> None:
    dup = +(got - want)
    if dup:
        res.duplicated += sum(dup.values())
        res.problems.append(f"{when}: duplicated or unexpected items {dict(dup)}")
    if exact:
        lost = +(want - got)
        if lost:
            res.lost += sum(lost.values())
            res.problems.append(f"{when}: lost items {dict(lost)}")


def check_case(case: Case, pools: PoolWatch | None = None) -> Result:
    """Run ``case`` with its fault, then clean; the guarantees broken (see the module doc)."""
    pools = pools or PoolWatch()
    res = Result(case)
    fault = case.fault
    full, arrivals = case.reference()
    log: list[int] = []
    g = build(case, log)
    ctx = fg.Context()
    fault.ctx = ctx
    report, error, res.elapsed, fired = _run_once(case, g, ctx, fault.timeout)
    ctx.cancel("check done")
    if fired or fault.stuck:
        res.hang = True
        res.problems.append(f"hang: run took {res.elapsed:.2f}s (watchdog fired: {fired}, "
                            f"stage never released: {fault.stuck})")
    _hygiene(res, pools, "faulty run")
    if not g.source_closed.is_set():
        res.problems.append("the source generator's finally did not run")
    got = collections.Counter(log)
    kind = fault.kind
    res.outcome = "ok" if error is None else type(error).__name__
    tolerated = kind in ("skip", "retry", "slow") or fault.item is None
    if tolerated:
        want = full
        if kind == "skip":
            want, _ = case.reference(skip=(fault.stage, fault.item))
        if error is not None:
            res.problems.append(f"tolerated fault, but run raised {error!r}")
        else:
            _count(res, got, want, True, "faulty run")
            if kind == "skip":
                _check_skipped(res, report, arrivals)
    else:
        _count(res, got, full, False, "faulty run")
        _check_error(res, error)
    # the same graph, disarmed, runs clean
    fault.armed = False
    log.clear()
    g.source_closed.clear()
    ctx2 = fg.Context()
    fault.ctx = ctx2
    report, error, elapsed2, fired2 = _run_once(case, g, ctx2, None)
    ctx2.cancel("check done")
    if fired2:
        res.hang = True
        res.problems.append(f"hang in the clean rerun ({elapsed2:.2f}s)")
    _hygiene(res, pools, "clean rerun")
    if error is not None:
        res.problems.append(f"clean rerun raised {error!r}")
    else:
        _count(res, collections.Counter(log), full, True, "clean rerun")
    return res


def _check_skipped(res: Result, report: Any, arrivals: dict[str, collections.Counter]) -> None:
    fault = res.case.fault
    errors = report.errors
    want = arrivals[fault.stage][fault.item]
    if len(errors) != want:
        res.problems.append(f"skip: {len(errors)} errors listed, expected {want}")
    item = (fault.item, fault.item) if res.case.stages[fault.stage].kind == "unzip" else fault.item
    for e in errors:
        if e.stage != fault.stage or e.item != item:
            res.problems.append(f"skip: error names {e.stage!r} item {e.item!r}")
        elif not isinstance(e.__cause__, FaultError):
            res.problems.append(f"skip: cause is {e.__cause__!r}")
        else:
            try:
                e.replay()
            except FaultError:
                pass
            else:
                res.problems.append("skip: replay did not raise the stage's error again")


def _names(reported: str, stage: str) -> bool:
    """True when ``reported`` (a plan node: maybe fused, maybe an upload) runs ``stage``."""
    base = reported[:-len(".upload")] if reported.endswith(".upload") else reported
    return stage in base.split("+")


def _check_error(res: Result, error: BaseException | None) -> None:
    fault = res.case.fault
    kind = fault.kind
    if kind == "raise":
        stage = res.case.stages[fault.stage]
        if not isinstance(error, fg.StageError):
            res.problems.append(f"expected StageError from {fault.stage}, got {error!r}")
            return
        if not _names(error.stage, fault.stage):
            res.problems.append(f"StageError names {error.stage!r}, not {fault.stage!r}: {error}")
        cause = error.__cause__
        want = fg.KernelError if stage.kind == "gpu" else FaultError
        if not isinstance(cause, want):
            res.problems.append(f"StageError's cause is {cause!r}, not a {want.__name__}")
        want_item = (fault.item, fault.item) if stage.kind == "unzip" else fault.item
        if stage.kind not in ("source", "gpu") and error.item != want_item:
            res.problems.append(f"StageError keeps item {error.item!r}, not {want_item!r}")
    elif kind in ("cancel", "consumer_exit"):
        reason = "fault: cancel" if kind == "cancel" else "fault: consumer done"
        if not isinstance(error, fg.Cancelled) or isinstance(error, fg.DeadlineExceeded):
            res.problems.append(f"expected Cancelled, got {error!r}")
        elif error.reason != reason:
            res.problems.append(f"Cancelled with reason {error.reason!r}, not {reason!r}")
    elif kind == "deadline":
        if not isinstance(error, fg.DeadlineExceeded):
            res.problems.append(f"expected DeadlineExceeded, got {error!r}")
        elif not (fault.timeout * 0.9 <= res.elapsed <= fault.timeout + DEADLINE_SLACK_S):
            res.problems.append(f"DeadlineExceeded after {res.elapsed:.3f}s for a "
                                f"{fault.timeout}s deadline")


@dataclasses.dataclass
class Figures:
    runs: int = 0
    failed: int = 0
    hangs: int = 0
    leaks: int = 0
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0
    by_fault: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    by_shape: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    by_outcome: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def add(self, r: Result) -> None:
        self.runs += 1
        self.failed += not r.ok
        self.hangs += r.hang
        self.leaks += r.leak
        self.lost += r.lost
        self.duplicated += r.duplicated
        self.by_fault[r.case.fault.kind] += 1
        self.by_shape[r.case.shape] += 1
        self.by_outcome[r.outcome] += 1

    def __str__(self) -> str:
        return (f"runs {self.runs}, failed {self.failed}, hangs {self.hangs}, leaks {self.leaks}, "
                f"lost {self.lost}, duplicated {self.duplicated}, {self.seconds:.1f} s\n"
                f"  faults: {dict(sorted(self.by_fault.items()))}\n"
                f"  shapes: {dict(sorted(self.by_shape.items()))}\n"
                f"  outcomes: {dict(sorted(self.by_outcome.items()))}")


def run_many(seeds: Any, *, gpu: bool | None = None, verbose: bool = False,
             out: Any = None) -> tuple[Figures, list[Result]]:
    """Check the case of each seed; the figures and the failed results."""
    figures = Figures()
    failures: list[Result] = []
    t0 = time.monotonic()
    with PoolWatch() as pools:
        for seed in seeds:
            r = check_case(make_case(seed, gpu), pools)
            figures.add(r)
            if not r.ok:
                failures.append(r)
            if out is not None and (verbose or not r.ok):
                print(r, file=out, flush=True)
    figures.seconds = time.monotonic() - t0
    return figures, failures
