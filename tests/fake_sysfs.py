"""Fake sysfs trees of the machines the topology tests plan for.

Each builder writes, under a root directory, the files
:func:`flowgpu.numa.topology` reads: ``sys/devices/system/node/node*/``
(``cpulist``, ``meminfo``, ``distance``), ``sys/bus/pci/devices/<bus id>/``
(``vendor``, ``class``, ``device``, ``numa_node``) and, when asked, the
cgroup files that narrow the CPUs a process may use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

GIB_KB = 2**20  # meminfo counts in kB


@dataclasses.dataclass(frozen=True)
class FakeNode:
    cpulist: str
    mem_kb: int = 64 * GIB_KB
    distances: tuple[int, ...] | None = None  # None: 10 to itself, 21 to the others


@dataclasses.dataclass(frozen=True)
class FakePci:
    bus_id: str
    numa_node: int
    vendor: str = "0x10de"
    klass: str = "0x030200"  # 3D controller, as data-centre GPUs report
    device: str = "0x2330"


def build(
    root: Path,
    nodes: Sequence[FakeNode],
    pci: Sequence[FakePci] = (),
    cgroup_v2: str | None = None,
    cgroup_path: str = "/",
) -> Path:
    """Write a fake machine under ``root`` and return ``root``.

    ``cgroup_v2`` is the content of the process cgroup's
    ``cpuset.cpus.effective`` (``cgroup_path`` names that cgroup).
    """
    node_root = root / "sys" / "devices" / "system" / "node"
    for i, n in enumerate(nodes):
        d = node_root / f"node{i}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(n.cpulist + "\n")
        (d / "meminfo").write_text(
            f"Node {i} MemTotal:       {n.mem_kb} kB\nNode {i} MemFree:        {n.mem_kb // 2} kB\n"
        )
        dist = n.distances or tuple(10 if j == i else 21 for j in range(len(nodes)))
        (d / "distance").write_text(" ".join(map(str, dist)) + "\n")
    _write_pci(root, pci)
    if cgroup_v2 is not None:
        proc = root / "proc" / "self"
        proc.mkdir(parents=True)
        (proc / "cgroup").write_text(f"0::{cgroup_path}\n")
        cg = root / "sys" / "fs" / "cgroup" / cgroup_path.lstrip("/")
        cg.mkdir(parents=True, exist_ok=True)
        (cg / "cpuset.cpus.effective").write_text(cgroup_v2 + "\n")
    return root


def _write_pci(root: Path, pci: Sequence[FakePci]) -> None:
    pci_root = root / "sys" / "bus" / "pci" / "devices"
    pci_root.mkdir(parents=True, exist_ok=True)
    for p in pci:
        d = pci_root / p.bus_id
        d.mkdir()
        (d / "vendor").write_text(p.vendor + "\n")
        (d / "class").write_text(p.klass + "\n")
        (d / "device").write_text(p.device + "\n")
        (d / "numa_node").write_text(f"{p.numa_node}\n")


def laptop(root: Path) -> Path:
    """One node, CPUs 0-7, one GPU whose ``numa_node`` is -1, and a NIC."""
    return build(root, [FakeNode("0-7", 16 * GIB_KB)], [
        FakePci("0000:01:00.0", -1, klass="0x030000", device="0x28e0"),
        FakePci("0000:01:00.1", -1, klass="0x040300", device="0x22be"),  # the GPU's audio
        FakePci("0000:02:00.0", -1, vendor="0x8086", klass="0x020000"),
    ])


#: the server's GPUs in bus id order: four on socket 0, four on socket 1
SERVER_GPUS = (
    ("0000:18:00.0", 0), ("0000:2a:00.0", 0), ("0000:3b:00.0", 0), ("0000:5d:00.0", 0),
    ("0000:9a:00.0", 1), ("0000:ab:00.0", 1), ("0000:ba:00.0", 1), ("0000:db:00.0", 1),
)


def two_socket_server(root: Path, cgroup_v2: str | None = None) -> Path:
    """Two sockets of 16 CPUs (0-15, 16-31), 8 GPUs (4 per socket), NVSwitches.

    The GPUs are written out of bus order, next to NVIDIA devices that are
    not GPUs (NVSwitch bridges) and other vendors' devices.
    """
    gpus = [FakePci(bus, node) for bus, node in reversed(SERVER_GPUS)]
    others = [
        FakePci("0000:c1:00.0", 1, klass="0x068000", device="0x22a3"),  # NVSwitch
        FakePci("0000:c2:00.0", 1, klass="0x068000", device="0x22a3"),
        FakePci("0000:17:00.0", 0, vendor="0x15b3", klass="0x020700"),  # InfiniBand
        FakePci("0000:00:00.0", -1, vendor="0x8086", klass="0x060000"),
    ]
    nodes = [FakeNode("0-15", 256 * GIB_KB), FakeNode("16-31", 256 * GIB_KB)]
    return build(root, nodes, gpus[:2] + others + gpus[2:], cgroup_v2=cgroup_v2)


def unknown_numa(root: Path) -> Path:
    """Two nodes of 4 CPUs, but the firmware sets every ``numa_node`` to -1."""
    return build(root, [FakeNode("0-3"), FakeNode("4-7")], [
        FakePci("0000:3b:00.0", -1), FakePci("0000:86:00.0", -1),
    ])


def memory_only_node(root: Path) -> Path:
    """Node 0 has CPUs 0-7; node 1 has memory and no CPUs (and a GPU on it)."""
    nodes = [FakeNode("0-7", 32 * GIB_KB, (10, 20)), FakeNode("", 96 * GIB_KB, (20, 10))]
    return build(root, nodes, [FakePci("0009:01:00.0", 1)])


def gappy(root: Path) -> Path:
    """Two nodes whose CPU lists interleave: ``0-3,8-11`` and ``4-7,12-15``."""
    return build(root, [FakeNode("0-3,8-11"), FakeNode("4-7,12-15")], [
        FakePci("0000:af:00.0", 1), FakePci("0000:3b:00.0", 0),
    ])


def no_numa(root: Path, online: str = "0-5") -> Path:
    """No ``/sys/devices/system/node`` at all; ``cpu/online`` lists the CPUs."""
    cpu = root / "sys" / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True)
    (cpu / "online").write_text(online + "\n")
    _write_pci(root, [FakePci("0000:65:00.0", 0)])
    return root
