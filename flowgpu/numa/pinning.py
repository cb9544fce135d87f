"""Which CPUs each stage's worker threads run on, and pinning a thread to them.

:func:`plan_pinning` turns a pinning policy and the machine's
:class:`~flowgpu.numa.machine.Topology` into a :class:`PinPlan`; the
runtime then calls :func:`pin_current_thread` once at the start of each worker
thread, never on the caller's thread.

A stage gets **one set of CPUs shared by all its workers** (not one CPU per
worker): the kernel schedules the workers, and the Numba threads of a
parallel kernel in that stage (:func:`numba_threads_for`), inside that set.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..errors import GraphError
from .cpulist import format_cpulist
from .machine import Topology

__all__ = [
    "POLICIES",
    "StageSlot",
    "PinPlan",
    "plan_pinning",
    "pin_current_thread",
    "numba_threads_for",
    "call_on_cpus",
]

#: the pinning policies ``run(pin=...)`` accepts (None means "none")
POLICIES = ("none", "gpu-local", "spread", "compact")

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class StageSlot:
    """A stage as the pinning planner sees it.

    ``gpu`` is the index of the GPU whose device segment the stage feeds or
    drains (None for a stage that touches no GPU); ``cpus`` is the user's
    ``cpus=`` override (None when not given), which every policy obeys.
    """

    name: str
    workers: int
    gpu: int | None = None
    cpus: frozenset[int] | None = None


@dataclasses.dataclass
class PinPlan:
    """The CPUs of each stage (None: not pinned) and notes on what was decided."""

    policy: str
    cpus: dict[str, frozenset[int] | None]
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def is_noop(self) -> bool:
        """True when no stage is pinned."""
        return all(c is None for c in self.cpus.values())


def plan_pinning(stages: Sequence[StageSlot], policy: str | None, topo: Topology) -> PinPlan:
    """Decide which CPUs each stage's workers run on.

    Every policy gives a stage with a ``cpus=`` override exactly that set,
    and leaves the override out of the division below (other stages may get
    the same CPUs). The other stages, in the order given:

    - ``"none"`` (or None): not pinned.
    - On a machine where fewer than two NUMA nodes hold allowed CPUs
      (``topo.is_single_node``), every other policy pins nothing either and
      says so in ``notes``: there is no locality to gain.
    - ``"compact"``: CPUs are ordered node by node (node 0's allowed CPUs in
      ascending order, then node 1's...). Each stage takes the next
      ``max(1, workers)`` CPUs of that order (all of them if it has fewer),
      wrapping round to the start when they run out: the pipeline packs onto
      as few CPUs and nodes as it has workers.
    - ``"spread"``: CPUs are ordered round-robin across nodes (node 0's first
      CPU, node 1's first, node 0's second...). With ``k`` stages and ``n``
      allowed CPUs, ``k <= n``: every CPU goes to exactly one stage; each
      stage gets one, and the other ``n - k`` are shared out in proportion to
      ``max(1, workers)`` (largest remainder, ties to the earlier stage); the
      stages then take consecutive runs of that order, so each spans the
      nodes. ``k > n``: stage ``i`` gets the ``i mod n``-th CPU alone.
    - ``"gpu-local"``: a stage that feeds or drains GPU ``g`` gets
      ``topo.gpus[g].cpus``, the allowed CPUs of that GPU's node (stages on
      the same node share them). The other stages are spread, as above, over
      the allowed CPUs no GPU stage got; over all allowed CPUs if none is
      left. A GPU whose node is unknown lends its stages every allowed CPU
      and claims none; a GPU index the topology does not list is treated as
      no GPU. Both leave a note.

    Raises ``GraphError`` (naming the stages) for a policy that is not one of
    :data:`POLICIES`, two stages with one name, or a ``cpus=`` that is empty,
    names a CPU the machine does not have, or one this process may not use.
    """
    policy = "none" if policy is None else policy
    if policy not in POLICIES:
        raise GraphError(
            f"pin={policy!r} is not a pinning policy; expected one of "
            + ", ".join(repr(p) for p in POLICIES)
        )
    _check_stages(stages, topo)
    plan = PinPlan(policy, {s.name: s.cpus for s in stages})
    auto = [s for s in stages if s.cpus is None]
    if policy == "none" or not auto:
        return plan
    if topo.is_single_node:
        plan.notes.append(f"{policy} on a single-node machine: no-op")
        return plan
    allowed = topo.allowed_cpus
    if policy == "compact":
        plan.cpus.update(_compact(auto, _node_order(topo, allowed)))
    elif policy == "spread":
        plan.cpus.update(_spread(auto, _round_robin(topo, allowed)))
    else:
        _gpu_local(auto, topo, plan)
    return plan


def _check_stages(stages: Sequence[StageSlot], topo: Topology) -> None:
    seen: set[str] = set()
    for s in stages:
        if s.name in seen:
            raise GraphError(f"two stages are named {s.name!r}", stages=(s.name,))
        seen.add(s.name)
    bad: list[str] = []
    problems: list[str] = []
    for s in stages:
        if s.cpus is None:
            continue
        cpus = s.cpus
        if not cpus or not all(isinstance(c, int) and not isinstance(c, bool) for c in cpus):
            problems.append(f"stage {s.name!r}: cpus= must be a non-empty set of CPU numbers")
        elif missing := cpus - topo.cpus:
            problems.append(
                f"stage {s.name!r}: cpus= names CPU(s) {format_cpulist(missing)} that this "
                f"machine does not have (it has {format_cpulist(topo.cpus)})"
            )
        elif denied := cpus - topo.allowed_cpus:
            problems.append(
                f"stage {s.name!r}: cpus= names CPU(s) {format_cpulist(denied)} that this "
                f"process may not use (allowed: {format_cpulist(topo.allowed_cpus)})"
            )
        else:
            continue
        bad.append(s.name)
    if problems:
        raise GraphError("; ".join(problems), stages=tuple(bad))


def _node_order(topo: Topology, pool: frozenset[int]) -> list[list[int]]:
    """The CPUs of ``pool``, grouped by node in node order, ascending in each."""
    groups = [sorted(n.cpus & pool) for n in topo.nodes]
    stray = pool - topo.cpus  # cannot happen with a consistent topology; kept, not lost
    return [g for g in groups if g] + ([sorted(stray)] if stray else [])


def _round_robin(topo: Topology, pool: frozenset[int]) -> list[int]:
    groups = _node_order(topo, pool)
    order: list[int] = []
    for i in range(max((len(g) for g in groups), default=0)):
        order.extend(g[i] for g in groups if i < len(g))
    return order


def _compact(stages: Sequence[StageSlot], groups: list[list[int]]) -> dict[str, frozenset[int]]:
    order = [c for g in groups for c in g]
    n, pos = len(order), 0
    out = {}
    for s in stages:
        size = min(max(1, s.workers), n)
        out[s.name] = frozenset(order[(pos + i) % n] for i in range(size))
        pos = (pos + size) % n
    return out


def _spread(stages: Sequence[StageSlot], order: list[int]) -> dict[str, frozenset[int]]:
    n, k = len(order), len(stages)
    if k > n:
        return {s.name: frozenset({order[i % n]}) for i, s in enumerate(stages)}
    weights = [max(1, s.workers) for s in stages]
    total, spare = sum(weights), n - k
    sizes = [1 + spare * w // total for w in weights]
    # Largest remainder: the CPUs the floors left over go to the stages that
    # lost the most to rounding; ties to the earlier stage, so plans are exact.
    by_remainder = sorted(range(k), key=lambda i: (-(spare * weights[i] % total), i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    out, pos = {}, 0
    for s, size in zip(stages, sizes, strict=True):
        out[s.name] = frozenset(order[pos : pos + size])
        pos += size
    return out


def _gpu_local(auto: Sequence[StageSlot], topo: Topology, plan: PinPlan) -> None:
    gpus = {g.index: g for g in topo.gpus}
    claimed: set[int] = set()
    others: list[StageSlot] = []
    near_gpu = 0
    for s in auto:
        g = gpus.get(s.gpu) if s.gpu is not None else None
        if g is None:
            if s.gpu is not None:
                plan.notes.append(
                    f"stage {s.name!r} feeds GPU {s.gpu}, which the topology does not list: "
                    "spread with the CPU stages"
                )
            others.append(s)
            continue
        near_gpu += 1
        plan.cpus[s.name] = g.cpus
        if g.numa_node is None:
            plan.notes.append(
                f"GPU {g.index}'s NUMA node is unknown: stage {s.name!r} may run on any "
                "allowed CPU"
            )
        else:
            claimed |= g.cpus
    if not near_gpu:
        plan.notes.append("gpu-local: no stage feeds or drains a GPU; all stages spread")
    if not others:
        return
    remaining = topo.allowed_cpus - claimed
    if not remaining:
        remaining = topo.allowed_cpus
        plan.notes.append("every allowed CPU is near a GPU: the other stages share them")
    plan.cpus.update(_spread(others, _round_robin(topo, remaining)))


def pin_current_thread(cpus: frozenset[int] | None) -> None:
    """Restrict the calling thread (only it; Linux affinity is per thread) to ``cpus``.

    A no-op for None, and on platforms without ``os.sched_setaffinity``
    (macOS, Windows). Call it first thing in a worker thread; never on the
    caller's thread. Raises ``OSError`` when the kernel refuses (none of
    ``cpus`` is allowed to this process); a plan from :func:`plan_pinning`
    never asks for that.
    """
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return
    os.sched_setaffinity(0, cpus)


def numba_threads_for(cpus: frozenset[int] | None) -> int:
    """How many threads a Numba parallel kernel in a stage pinned to ``cpus`` may use.

    ``len(cpus)`` capped by ``numba.config.NUMBA_NUM_THREADS`` (at least 1);
    the cap alone for an unpinned stage. The worker passes it to
    ``numba.set_num_threads``, which is per thread, so stages do not
    oversubscribe each other's CPUs.
    """
    import numba  # imported late: it costs hundreds of milliseconds

    cap = int(numba.config.NUMBA_NUM_THREADS)
    if cpus is None:
        return cap
    return max(1, min(len(cpus), cap))


def call_on_cpus(cpus: frozenset[int] | None, fn: Callable[..., _T], *args: Any) -> _T:
    """Call ``fn(*args)`` on a short-lived thread pinned to ``cpus``; return its result.

    For first-touching memory from the right NUMA node (a GPU's pinned host
    buffers are touched by a thread on that GPU's node, so the kernel places
    their pages there). With ``cpus`` None, calls ``fn`` on the calling
    thread. Blocks until ``fn`` returns, even if interrupted (so the thread
    never outlives the call); re-raises what ``fn`` raised.
    """
    if cpus is None:
        return fn(*args)
    result: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            pin_current_thread(cpus)
            result.append(fn(*args))
        except BaseException as exc:  # handed back to the caller, not lost
            failure.append(exc)

    t = threading.Thread(target=target, name="flowgpu-first-touch")
    t.start()
    try:
        t.join()
    finally:
        t.join()  # a KeyboardInterrupt in the first join must not leak the thread
    if failure:
        raise failure[0]
    return result[0]
