"""Reading the machine's topology from sysfs (and NVML, when it is installed).

Everything is read under a root path (``/sys/devices/system/node``,
``/sys/bus/pci/devices``, the cgroup's cpuset), so that tests can point it at
a fake tree; NVML (the optional ``nvidia-ml-py`` package, imported as
``pynvml``) names the GPUs and gives their bus ids on the real machine.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path

from .cpulist import format_cpulist, parse_cpulist
from .machine import GpuInfo, NumaNode, Topology

__all__ = ["topology"]

_NVIDIA_VENDOR = "0x10de"
_NODE_DIR = re.compile(r"node(\d+)$")


@dataclasses.dataclass(frozen=True)
class _Hardware:
    """What does not change while the process runs (cached on the real machine)."""

    nodes: tuple[NumaNode, ...]
    has_node_dir: bool
    # (bus id, name, numa node or None, uuid or "") in PCI bus id order
    gpus: tuple[tuple[str, str, int | None, str], ...]
    notes: tuple[str, ...]


def topology(
    root: str | os.PathLike[str] = "/", allowed_cpus: set[int] | frozenset[int] | None = None
) -> Topology:
    """Read the machine's NUMA nodes and GPUs under ``root``.

    ``allowed_cpus`` defaults to the calling thread's affinity
    (``os.sched_getaffinity(0)``) intersected with the cgroup's cpuset
    (``cpuset.cpus.effective``) when it can be read; under a fake ``root``
    the affinity is replaced by every CPU of the fake machine, and the cgroup
    files are read under ``root`` too. An explicit ``allowed_cpus`` is
    intersected with the machine's CPUs.

    GPUs come in CUDA's order with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``: sorted by
    bus id. On the real machine NVML names them when ``pynvml`` is importable,
    and ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-`` UUIDs) selects and
    renumbers them. Hardware facts of the real machine are read once and
    cached; the allowed CPUs are read on every call.

    Raises ``ValueError`` when ``allowed_cpus`` names no CPU of the machine,
    or a sysfs file holds something that is not a CPU list.
    """
    path = Path(root)
    real = path.resolve() == Path("/").resolve()
    hw = _real_hardware() if real else _read_hardware(path, None)
    machine = frozenset().union(*(n.cpus for n in hw.nodes))
    if allowed_cpus is not None:
        allowed = frozenset(allowed_cpus) & machine if hw.has_node_dir else frozenset(allowed_cpus)
        if not allowed:
            raise ValueError(
                f"allowed_cpus={format_cpulist(allowed_cpus)!r} names no CPU of this machine "
                f"({format_cpulist(machine)})"
            )
    else:
        base = machine if machine and not real else _affinity()
        allowed = _narrow(base, _cgroup_cpus(path))
    if not hw.has_node_dir:
        # No NUMA information at all: one node holding the online CPUs (when
        # the kernel lists them) and, in any case, every CPU we may use.
        node = dataclasses.replace(hw.nodes[0], cpus=hw.nodes[0].cpus | allowed)
        hw = dataclasses.replace(hw, nodes=(node,))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if real else None
    return _assemble(hw, allowed, visible)


def _affinity() -> frozenset[int]:
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset(range(os.cpu_count() or 1))


def _narrow(cpus: frozenset[int], limit: frozenset[int] | None) -> frozenset[int]:
    # A cgroup file from another namespace may name none of our CPUs; then the
    # kernel's affinity mask (which the cpuset already constrains) is the truth.
    if limit is None or not (cpus & limit):
        return cpus
    return cpus & limit


def _cgroup_cpus(root: Path) -> frozenset[int] | None:
    """The cpuset of this process's cgroup (v2, else v1), or None if unreadable."""
    fs = root / "sys" / "fs" / "cgroup"
    candidates: list[Path] = []
    for line in _read(root / "proc" / "self" / "cgroup").splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, cgpath = rest.partition(":")
        cgpath = cgpath.strip().lstrip("/")
        if hier == "0" and controllers == "":
            candidates.append(fs / cgpath / "cpuset.cpus.effective")
        elif "cpuset" in controllers.split(","):
            candidates.append(fs / "cpuset" / cgpath / "cpuset.effective_cpus")
    candidates += [fs / "cpuset.cpus.effective", fs / "cpuset" / "cpuset.effective_cpus"]
    for c in candidates:
        text = _read(c)
        if text.strip():
            return parse_cpulist(text)
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _real_hardware() -> _Hardware:
    return _read_hardware(Path("/"), _nvml_gpus())


def _read_hardware(root: Path, nvml: list[tuple[str, str, str]] | None) -> _Hardware:
    """Nodes and GPUs under ``root``; ``nvml`` lists (bus id, name, uuid) when known."""
    notes: list[str] = []
    node_root = root / "sys" / "devices" / "system" / "node"
    nodes = []
    if node_root.is_dir():
        for d in node_root.iterdir():
            m = _NODE_DIR.match(d.name)
            if m:
                nodes.append(_read_node(int(m.group(1)), d))
    nodes.sort(key=lambda n: n.id)
    has_node_dir = bool(nodes)
    if not nodes:
        mem = _meminfo_total(_read(root / "proc" / "meminfo"))
        online = _read(root / "sys" / "devices" / "system" / "cpu" / "online")
        nodes = [NumaNode(0, parse_cpulist(online), mem, (10,))]
        notes.append("no NUMA information (no /sys/devices/system/node): one node assumed")
    node_ids = {n.id for n in nodes}

    pci = root / "sys" / "bus" / "pci" / "devices"
    numa_of: dict[str, int | None] = {}
    sysfs_gpus: list[tuple[str, str]] = []  # (bus id, name)
    if pci.is_dir():
        for d in pci.iterdir():
            bus = _normalize_bus_id(d.name)
            node = _read_int(d / "numa_node")
            numa_of[bus] = node if node is not None and node >= 0 else None
            vendor = _read(d / "vendor").strip().lower()
            klass = _read(d / "class").strip().lower()
            # Display (0x0300) and 3D (0x0302) controllers; the card's audio
            # function and NVSwitch bridges share the vendor id but not the class.
            if vendor == _NVIDIA_VENDOR and klass.startswith("0x03"):
                device = _read(d / "device").strip().lower() or "?"
                sysfs_gpus.append((bus, f"NVIDIA device {device}"))

    if nvml is not None:
        listed = [(_normalize_bus_id(b), name, uuid) for b, name, uuid in nvml]
    else:
        listed = [(b, name, "") for b, name in sysfs_gpus]
    gpus = []
    for bus, name, uuid in sorted(listed, key=lambda g: _bus_key(g[0])):
        node = numa_of.get(bus)
        if node is not None and node not in node_ids:
            if has_node_dir:
                notes.append(f"GPU {bus} names NUMA node {node}, which does not exist")
            node = None
        gpus.append((bus, name, node, uuid))
    return _Hardware(tuple(nodes), has_node_dir, tuple(gpus), tuple(notes))


def _read_node(node_id: int, d: Path) -> NumaNode:
    cpus = parse_cpulist(_read(d / "cpulist"))
    memory = _meminfo_total(_read(d / "meminfo"))
    try:
        distances = tuple(int(x) for x in _read(d / "distance").split())
    except ValueError:
        distances = ()
    return NumaNode(node_id, cpus, memory, distances)


def _meminfo_total(text: str) -> int:
    # "Node 0 MemTotal:  5203784 kB" in a node's meminfo, "MemTotal: ... kB" in /proc.
    for line in text.splitlines():
        if "MemTotal:" in line:
            fields = line.split("MemTotal:")[1].split()
            try:
                scale = 1024 if len(fields) > 1 and fields[1].lower() == "kb" else 1
                return int(fields[0]) * scale
            except (ValueError, IndexError):
                return 0
    return 0


def _read_int(path: Path) -> int | None:
    try:
        return int(_read(path).strip())
    except ValueError:
        return None


def _normalize_bus_id(bus: str) -> str:
    """``"00000000:3B:00.0"`` (NVML) or ``"0000:3b:00.0"`` (sysfs) -> ``"0000:3b:00.0"``."""
    parts = bus.strip().lower().split(":")
    if len(parts) == 3:
        try:
            return f"{int(parts[0], 16):04x}:{parts[1]}:{parts[2]}"
        except ValueError:
            pass
    return bus.strip().lower()


def _bus_key(bus: str) -> tuple:
    try:
        domain, b, devfn = bus.split(":")
        dev, fn = devfn.split(".")
        return (0, int(domain, 16), int(b, 16), int(dev, 16), int(fn, 16))
    except ValueError:
        return (1, bus)


def _nvml_gpus() -> list[tuple[str, str, str]] | None:
    """(bus id, name, uuid) of every GPU NVML sees, or None without NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, or a driver too old for these bindings
        return None
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            found.append((
                _text(pynvml.nvmlDeviceGetPciInfo(h).busId),
                _text(pynvml.nvmlDeviceGetName(h)),
                _text(pynvml.nvmlDeviceGetUUID(h)),
            ))
        return found
    except Exception:  # a GPU that fell off the bus: trust sysfs instead
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _text(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _assemble(hw: _Hardware, allowed: frozenset[int], visible: str | None) -> Topology:
    notes = list(hw.notes)
    gpus = list(hw.gpus)
    if visible is not None:
        selected = _select_visible(gpus, visible)
        if selected is None:
            notes.append(f"CUDA_VISIBLE_DEVICES={visible!r} not understood: all GPUs listed")
        else:
            gpus = selected
    nodes = hw.nodes
    infos = []
    for index, (bus, name, node, _uuid) in enumerate(gpus):
        if node is None:
            cpus = allowed
            if len(nodes) > 1:
                notes.append(f"GPU {index} ({bus}): NUMA node unknown; near every allowed CPU")
        else:
            cpus = _nearest_allowed(nodes, node, allowed)
            if not (nodes[_position(nodes, node)].cpus & allowed):
                notes.append(
                    f"GPU {index} ({bus}): node {node} has no allowed CPU; "
                    f"using the nearest ({format_cpulist(cpus)})"
                )
        infos.append(GpuInfo(index, name, bus, node, cpus))
    return Topology(tuple(nodes), tuple(infos), allowed, tuple(notes))


def _position(nodes: Sequence[NumaNode], node_id: int) -> int:
    return next(i for i, n in enumerate(nodes) if n.id == node_id)


def _nearest_allowed(
    nodes: Sequence[NumaNode], node_id: int, allowed: frozenset[int]
) -> frozenset[int]:
    """Allowed CPUs of ``node_id``, else of the nearest nodes that have some."""
    home = nodes[_position(nodes, node_id)]
    if home.cpus & allowed:
        return home.cpus & allowed
    if len(home.distances) != len(nodes):
        return allowed
    best: int | None = None
    near: frozenset[int] = frozenset()
    for n, dist in zip(nodes, home.distances, strict=True):
        here = n.cpus & allowed
        if not here:
            continue
        if best is None or dist < best:
            best, near = dist, here
        elif dist == best:
            near |= here
    return near or allowed


def _select_visible(
    gpus: list[tuple[str, str, int | None, str]], visible: str
) -> list[tuple[str, str, int | None, str]] | None:
    """Apply ``CUDA_VISIBLE_DEVICES``; None when an entry is not understood."""
    chosen: list[tuple[str, str, int | None, str]] = []
    for entry in (e.strip() for e in visible.split(",")):
        if not entry:
            break
        if entry.lstrip("-").isdigit():
            i = int(entry)
            # CUDA stops at the first index that names no device.
            if not 0 <= i < len(gpus):
                break
            match = gpus[i]
        elif entry.startswith("GPU-"):
            hits = [g for g in gpus if g[3] and g[3].startswith(entry)]
            if len(hits) != 1:
                return None
            match = hits[0]
        else:  # MIG instances and the like: not ours to map
            return None
        if match not in chosen:
            chosen.append(match)
    return chosen
