"""What a machine is made of: NUMA nodes, GPUs, and the CPUs this process may use.

Plain values; :mod:`flowgpu.numa.sysfs` reads them from the machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .cpulist import format_cpulist

__all__ = ["NumaNode", "GpuInfo", "Topology"]


@dataclasses.dataclass(frozen=True)
class NumaNode:
    """One NUMA node: its CPUs (all of them, allowed or not), memory, distances.

    ``distances[j]`` is the kernel's relative distance to the j-th node listed
    in ``Topology.nodes`` (10 = local); empty when the kernel does not say.
    """

    id: int
    cpus: frozenset[int]
    memory_bytes: int
    distances: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    """One GPU, in CUDA's order as seen by this process.

    ``numa_node`` is None when the kernel does not know it (``numa_node`` says
    -1, as on most single-socket machines and VMs); ``cpus`` are the allowed
    CPUs nearest to it: those of its node, or of the nearest node that has
    allowed CPUs, or every allowed CPU when its node is unknown.
    """

    index: int
    name: str
    pci_bus_id: str
    numa_node: int | None
    cpus: frozenset[int]


@dataclasses.dataclass(frozen=True)
class Topology:
    """The NUMA nodes and GPUs of a machine, and the CPUs this process may use.

    ``notes`` records what was guessed (a GPU whose node is unknown, a
    ``CUDA_VISIBLE_DEVICES`` that could not be applied...).
    """

    nodes: tuple[NumaNode, ...]
    gpus: tuple[GpuInfo, ...]
    allowed_cpus: frozenset[int]
    notes: tuple[str, ...] = ()

    @property
    def cpus(self) -> frozenset[int]:
        """Every CPU of the machine, allowed or not."""
        return frozenset().union(*(n.cpus for n in self.nodes))

    def node(self, node_id: int) -> NumaNode:
        """The node with this id; ``KeyError`` if there is none."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"no NUMA node {node_id}")

    def allowed_on(self, node_id: int) -> frozenset[int]:
        """The CPUs of a node that this process may use."""
        return self.node(node_id).cpus & self.allowed_cpus

    def node_of_gpu(self, index: int) -> NumaNode | None:
        """The NUMA node GPU ``index`` hangs off, or None when unknown.

        Raises ``IndexError`` for a GPU index the machine does not have.
        """
        for g in self.gpus:
            if g.index == index:
                return None if g.numa_node is None else self.node(g.numa_node)
        raise IndexError(f"no GPU {index} (this machine has {len(self.gpus)})")

    @property
    def is_single_node(self) -> bool:
        """True when fewer than two nodes hold CPUs this process may use.

        Pinning cannot improve locality then, so every policy is a no-op.
        """
        return sum(1 for n in self.nodes if n.cpus & self.allowed_cpus) < 2

    def table(self) -> str:
        """A plain-text table of the nodes and GPUs, for ``flowgpu info``."""
        allowed = self.allowed_cpus
        lines = [
            f"NUMA nodes: {len(self.nodes)}; CPUs allowed to this process: "
            f"{format_cpulist(allowed)} ({len(allowed)} of {len(self.cpus)})",
        ]
        rows = [("node", "cpus", "allowed", "memory", "distances")]
        for n in self.nodes:
            rows.append((
                str(n.id), format_cpulist(n.cpus) or "-",
                format_cpulist(n.cpus & allowed) or "-",
                _gib(n.memory_bytes), " ".join(map(str, n.distances)) or "-",
            ))
        lines += _columns(rows)
        lines.append(f"GPUs: {len(self.gpus)}")
        if self.gpus:
            rows = [("gpu", "name", "bus id", "node", "near cpus")]
            for g in self.gpus:
                rows.append((
                    str(g.index), g.name, g.pci_bus_id,
                    "?" if g.numa_node is None else str(g.numa_node),
                    format_cpulist(g.cpus) or "-",
                ))
            lines += _columns(rows)
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
