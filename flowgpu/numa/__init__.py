"""NUMA nodes, GPU locality, and pinning host threads near the GPU they feed.

``topology()`` reads the machine; ``plan_pinning()`` decides, per stage, the
CPUs its workers run on; ``pin_current_thread()`` applies that in a worker.
"""

from __future__ import annotations

from .cpulist import format_cpulist, parse_cpulist
from .machine import GpuInfo, NumaNode, Topology
from .pinning import (
    POLICIES,
    PinPlan,
    StageSlot,
    call_on_cpus,
    numba_threads_for,
    pin_current_thread,
    plan_pinning,
)
from .sysfs import topology

__all__ = [
    "NumaNode",
    "GpuInfo",
    "Topology",
    "topology",
    "parse_cpulist",
    "format_cpulist",
    "POLICIES",
    "StageSlot",
    "PinPlan",
    "plan_pinning",
    "pin_current_thread",
    "numba_threads_for",
    "call_on_cpus",
]
