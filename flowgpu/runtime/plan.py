"""Planning: from a validated graph to the nodes a run executes.

Planning decides, before any thread starts:

* **placement**: each numeric stage runs on ``"cpu"`` or ``"gpu"``
  (:func:`flowgpu.device.resolve`; a missing GPU is a
  :class:`DeviceUnavailable` here, never a silent fallback);
* **fusion**: a chain of ``@elementwise`` stages on the same device, each
  the only consumer of the previous one, becomes one node running one fused
  kernel;
* **device segments**: a GPU node whose input comes from the host gets an
  ``upload`` node in front of it, and one whose output goes to the host (a
  CPU stage, a sink, a host ``collect``) gets a ``download`` node after it.
  Between GPU nodes, items are :class:`~flowgpu.runtime.gpu.DeviceItem`: the
  array stays on the device and the consumer's stream waits on the
  producer's event.

The graph itself is never changed: a plan is made fresh for every run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import networkx as nx

from .. import device as devices
from ..graph import Graph, StageSpec

__all__ = ["PlanNode", "Plan", "make_plan"]


@dataclasses.dataclass
class PlanNode:
    """One unit of execution: a stage, a fused chain of stages, or a transfer."""

    name: str
    kind: str
    spec: StageSpec
    inputs: tuple[tuple[str, ...], ...]  # producers, per input port
    device: str = "cpu"
    role: str = "stage"  # stage | upload | download
    ops: list[tuple[Any, dict[str, Any]]] = dataclasses.field(default_factory=list)
    fused: tuple[str, ...] = ()  # the graph stages this node runs, when fused
    gpu_index: int | None = None  # the GPU this node feeds, drains or runs on

    @property
    def workers(self) -> int:
        return self.spec.workers


@dataclasses.dataclass
class Plan:
    graph: Graph
    nodes: dict[str, PlanNode]  # in topological order
    fused_groups: list[tuple[str, ...]]
    uses_gpu: bool


def make_plan(graph: Graph, nxg: nx.DiGraph, device: str, fuse: bool) -> Plan:
    """Placement, fusion and transfers for one run of ``graph``.

    Raises DeviceUnavailable (a stage or the run asks for ``"gpu"`` and none
    is there) and GraphError.
    """
    nodes: dict[str, PlanNode] = {}
    for name in nx.topological_sort(nxg):
        spec = graph._stages[name]
        node = PlanNode(name, spec.kind, spec, tuple(s.producers for s in spec.inputs))
        if spec.numeric:
            node.device = devices.resolve(spec.device if spec.device not in (None, "auto")
                                          else device)
            node.ops = [(spec.fn, dict(spec.params))]
            if node.device == "gpu" and spec.workers != 1:
                # A GPU stage's work is asynchronous on its stream; one host
                # thread keeps it fed, and a second stream would only reorder.
                node.spec = dataclasses.replace(spec, workers=1)
        nodes[name] = node
    fused_groups = _fuse(nodes) if fuse else []
    uses_gpu = any(n.device == "gpu" for n in nodes.values())
    if uses_gpu:
        nodes = _add_transfers(nodes)
    return Plan(graph, nodes, fused_groups, uses_gpu)


def _consumers(nodes: dict[str, PlanNode]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for node in nodes.values():
        for port in node.inputs:
            for p in port:
                out[p].append(node.name)
    return out


def _fusable(node: PlanNode) -> bool:
    return (node.kind == "map" and len(node.ops) >= 1
            and all(getattr(op, "fusable", False) for op, _ in node.ops))


def _fuse(nodes: dict[str, PlanNode]) -> list[tuple[str, ...]]:
    """Merge chains of fusable elementwise nodes in place; the groups merged."""
    groups: list[tuple[str, ...]] = []
    consumers = _consumers(nodes)
    for name in list(nodes):
        node = nodes.get(name)
        if node is None or not _fusable(node):
            continue
        # Extend this chain forward while the next node can join it.
        chain = [name]
        while True:
            nxt = consumers[chain[-1]]
            if len(nxt) != 1:
                break
            cand = nodes[nxt[0]]
            if not (_fusable(cand) and cand.device == node.device
                    and cand.inputs == ((chain[-1],),)
                    and cand.spec.on_error == node.spec.on_error):
                break
            chain.append(cand.name)
        if len(chain) < 2:
            continue
        from ..numeric import fuse

        members = [nodes[c] for c in chain]
        last = members[-1]
        fused_name = "+".join(chain)
        spec = dataclasses.replace(
            node.spec, name=fused_name, fn=fuse([op for m in members for op in m.ops]),
            params={}, workers=max(m.spec.workers for m in members))
        merged = PlanNode(fused_name, "map", spec, node.inputs, node.device,
                          ops=[(spec.fn, {})], fused=tuple(chain))
        for c in chain:
            del nodes[c]
        nodes[fused_name] = merged
        for other in nodes.values():  # the chain's consumers now read the fused node
            other.inputs = tuple(tuple(fused_name if p == last.name else p for p in port)
                                 for port in other.inputs)
        consumers = _consumers(_reorder(nodes))
        groups.append(tuple(chain))
    if groups:
        ordered = _reorder(nodes)
        nodes.clear()
        nodes.update(ordered)
    return groups


def _reorder(nodes: dict[str, PlanNode]) -> dict[str, PlanNode]:
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    for node in nodes.values():
        for port in node.inputs:
            for p in port:
                g.add_edge(p, node.name)
    return {n: nodes[n] for n in nx.topological_sort(g)}


def _add_transfers(nodes: dict[str, PlanNode]) -> dict[str, PlanNode]:
    """Insert upload/download nodes at the edges of device segments."""
    on_gpu = {n for n, node in nodes.items() if node.device == "gpu"}
    out: dict[str, PlanNode] = {}
    downloads: dict[str, str] = {}
    for name, node in nodes.items():
        if name in on_gpu:
            ports = []
            for k, port in enumerate(node.inputs):
                if all(p in on_gpu for p in port):
                    ports.append(port)
                    continue
                up = f"{name}.upload" if len(node.inputs) == 1 else f"{name}.upload{k}"
                spec = dataclasses.replace(node.spec, name=up, kind="map", workers=1, fn=None,
                                           params={}, on_error="raise")
                out[up] = PlanNode(up, "map", spec, (port,), "gpu", role="upload", gpu_index=0)
                ports.append((up,))
            node.inputs = tuple(ports)
            node.gpu_index = 0
            out[name] = node
            continue
        ports = []
        for port in node.inputs:
            new_port = []
            for p in port:
                keep_on_device = node.kind == "collect" and node.spec.extra.get("on") == "device"
                if p in on_gpu and not keep_on_device:
                    if p not in downloads:
                        down = f"{p}.download"
                        spec = dataclasses.replace(nodes[p].spec, name=down, kind="map",
                                                   workers=1, fn=None, params={},
                                                   on_error="raise", capacity=2)
                        out[down] = PlanNode(down, "map", spec, ((p,),), "gpu",
                                             role="download", gpu_index=0)
                        downloads[p] = down
                    new_port.append(downloads[p])
                else:
                    new_port.append(p)
            ports.append(tuple(new_port))
        node.inputs = tuple(ports)
        out[name] = node
    return _reorder(out)


def arrays_of(item: Any) -> tuple:
    """The arrays a numeric stage works on: one array, or a tuple of them."""
    return tuple(item) if isinstance(item, tuple) else (item,)


def cpu_invoke(node: PlanNode) -> Callable[[Any], Any]:
    """The callable a CPU worker runs for a numeric node (checks, then computes)."""
    op, params = node.ops[0]

    def invoke(item: Any) -> Any:
        arrays = arrays_of(item)
        op.check(arrays, params)
        return op.run_cpu(arrays, params)

    invoke.__name__ = getattr(op, "name", node.name)
    return invoke
