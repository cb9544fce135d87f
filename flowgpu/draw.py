"""``g.draw()``: a picture of a graph's DAG with networkx and matplotlib
(no Graphviz binary): stage names, workers, device, fused groups.

Stages are laid out left to right by depth (their topological generation).
Numeric stages are coloured by the device a run would give them and
elementwise chains that a run would fuse share an outline colour and a
legend entry; ``plan=True`` draws the plan instead: fused nodes as one box,
upload and download nodes at the edges of device segments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import networkx as nx

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["draw_graph", "graph_svg"]

FILL = {"cpu": "#deebf7", "gpu": "#c7e9c0", "host": "#f0f0f0", "transfer": "#fee6ce"}
FUSED = ["#6a3d9a", "#ff7f00", "#b15928", "#e31a1c", "#1f78b4"]


def _planned(graph: Graph, device: str, fuse: bool) -> Any:
    """The run's plan, or None when it cannot be made here (e.g. no GPU)."""
    from .errors import FlowError
    from .runtime.plan import make_plan

    try:
        return make_plan(graph, graph.validate(), device, fuse)
    except FlowError:
        return None


def _layered(g: nx.DiGraph) -> dict[Any, tuple[float, float]]:
    for depth, layer in enumerate(nx.topological_generations(g)):
        for n in layer:
            g.nodes[n]["layer"] = depth
    return nx.multipartite_layout(g, subset_key="layer", align="vertical", scale=1.0)


def draw_graph(graph: Graph, *, ax: Any = None, device: str = "auto", fuse: bool = True,
               plan: bool = False) -> Any:
    """Draw ``graph``; returns the matplotlib Figure (a new one unless ``ax``).

    Raises GraphError when the graph is invalid (a cycle, a dangling stream).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    the_plan = _planned(graph, device, fuse)
    g = nx.DiGraph()
    labels, fills, outlines, legend = {}, {}, {}, []
    if plan and the_plan is not None:
        for name, node in the_plan.nodes.items():
            g.add_node(name)
            for port in node.inputs:
                for p in port:
                    g.add_edge(p, name)
            kind = "transfer" if node.role != "stage" else (node.device if node.ops else "host")
            fills[name] = FILL[kind]
            labels[name] = f"{name}\n{node.role if node.role != 'stage' else node.kind}" \
                           f" x{node.workers} {node.device}"
    else:
        graph.validate()
        fused_of = {}
        if the_plan is not None:
            for k, group in enumerate(the_plan.fused_groups):
                colour = FUSED[k % len(FUSED)]
                legend.append(Patch(facecolor="white", edgecolor=colour, linewidth=2,
                                    label="fused: " + "+".join(group)))
                for member in group:
                    fused_of[member] = colour
        placed = {}
        if the_plan is not None:
            for node in the_plan.nodes.values():
                for member in node.fused or (node.name,):
                    placed[member] = node.device
        for name, spec in graph.stages.items():
            g.add_node(name)
            for stream in spec.inputs:
                for p in stream.producers:
                    g.add_edge(p, name)
            dev = placed.get(name, "cpu") if spec.numeric else "host"
            fills[name] = FILL.get(dev, FILL["host"])
            outlines[name] = fused_of.get(name, "#525252")
            labels[name] = f"{name}\n{spec.kind} x{spec.workers}" + \
                           (f" {dev}" if spec.numeric else "")
    pos = _layered(g)
    fig = None
    if ax is None:
        layers = 1 + max(nx.get_node_attributes(g, "layer").values())
        widest = max(sum(1 for n in g if g.nodes[n]["layer"] == k) for k in range(layers))
        fig = Figure(figsize=(max(4.0, 2.0 * layers), max(2.5, 1.5 * widest + 0.6)),
                     layout="constrained")
        ax = fig.subplots()
    nodes = list(g)
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=14, node_size=2600,
                           edge_color="#737373")
    nx.draw_networkx_nodes(g, pos, ax=ax, nodelist=nodes, node_shape="s", node_size=2600,
                           node_color=[fills[n] for n in nodes],
                           edgecolors=[outlines.get(n, "#525252") for n in nodes],
                           linewidths=[2.0 if outlines.get(n, "#525252") != "#525252" else 1.0
                                       for n in nodes])
    nx.draw_networkx_labels(g, pos, labels, ax=ax, font_size=8)
    ax.set_title(graph.name)
    ax.margins(0.15)
    ax.set_axis_off()
    if legend:
        ax.figure.legend(handles=legend, loc="outside lower center", fontsize="small",
                         frameon=False, ncols=min(3, len(legend)))
    return fig if fig is not None else ax.figure


def graph_svg(graph: Graph) -> str:
    """The drawing as SVG text (what Jupyter shows for a Graph)."""
    import io

    buf = io.StringIO()
    draw_graph(graph).savefig(buf, format="svg")
    return buf.getvalue()
