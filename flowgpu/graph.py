"""Graph and Stream: the pipeline as a value.

Building a graph starts nothing: each verb (``map``, ``filter``, ``batch``...)
records a :class:`StageSpec` and returns the :class:`Stream` of its output. A
stream consumed by several stages is broadcast to each; ``merge`` joins
streams (fan-in), :func:`zip` pairs them item by item. ``Graph.run`` validates
the graph, plans it and executes it (see :mod:`flowgpu.runtime`). A graph can
run many times and pickles with cloudpickle.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import networkx as nx

from .errors import GraphError

if TYPE_CHECKING:
    from .context import Context
    from .report import RunReport

__all__ = ["Graph", "Stream", "StageSpec", "zip"]

ON_ERROR = ("raise", "skip", "retry")
#: A stage's input channel when its capacity is not given: while the items are
#: small it holds SMALL_ITEMS_CAPACITY items, moved in batches of at most
#: SMALL_ITEMS_BATCH items and about BATCH_BYTES (so the batches shrink as the
#: items grow); from the first item of more than SMALL_ITEM_BYTES it holds
#: DEFAULT_CAPACITY items, moved one at a time. (runtime/flow.py: Port)
DEFAULT_CAPACITY = 8
SMALL_ITEMS_BATCH = 256
SMALL_ITEMS_CAPACITY = 4 * SMALL_ITEMS_BATCH
#: under a byte budget items move one at a time (each counted as it moves):
#: a channel whose capacity was not given then holds this many small ones
BUDGETED_CAPACITY = 64
BATCH_BYTES = 1 << 20
SMALL_ITEM_BYTES = 64 * 1024
#: stage kinds that end a stream
TERMINAL = ("sink", "collect")


@dataclasses.dataclass
class StageSpec:
    """What one stage does and how it runs; plain data, no runtime state."""

    name: str
    kind: str  # source map flat_map filter batch unbatch zip sink collect
    fn: Callable[..., Any] | None
    inputs: tuple[Stream, ...] = ()
    workers: int = 1
    capacity: int | None = None  # None: sized by the items (see DEFAULT_CAPACITY)
    ordered: bool = True
    on_error: str = "raise"
    retries: int | None = None  # None: 3 under on_error="retry"
    backoff: float = 0.0
    device: str | None = None
    cpus: frozenset[int] | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: kind-specific settings: batch size, collect name and placement...
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def numeric(self) -> bool:
        """True when ``fn`` is a numeric op (``@fg.elementwise``, ``@fg.kernel``...)."""
        return _is_numeric(self.fn)


def _is_numeric(fn: Any) -> bool:
    # A NumericOp can only exist once its module was imported; looking it up
    # here instead of importing keeps numba out of graph building.
    mod = sys.modules.get("flowgpu.numeric")
    return mod is not None and isinstance(fn, mod.NumericOp)


class Stream:
    """The output of one stage, or the merge of several; a handle for building.

    Every method adds a stage to the graph and returns the stream of its
    output (``sink`` and ``collect`` end the stream and return ``None``).
    """

    __slots__ = ("graph", "producers")

    def __init__(self, graph: Graph, producers: tuple[str, ...]) -> None:
        self.graph = graph
        self.producers = producers

    # -- one verb per operator -------------------------------------------------
    def map(self, fn: Callable[[Any], Any], **options: Any) -> Stream:
        """Apply ``fn`` to every item. Numeric ops take their parameters here too:
        ``s.map(fg.kernels.image.resize, height=256, width=256)``."""
        return self.graph._add("map", fn, (self,), options)

    def flat_map(self, fn: Callable[[Any], Iterable[Any]], **options: Any) -> Stream:
        """Apply ``fn`` and emit each item of the iterable it returns."""
        return self.graph._add("flat_map", fn, (self,), options)

    def filter(self, pred: Callable[[Any], bool], **options: Any) -> Stream:
        """Keep the items for which ``pred(item)`` is true."""
        return self.graph._add("filter", pred, (self,), options)

    def batch(self, size: int, **options: Any) -> Stream:
        """Group consecutive items into lists of ``size`` (the last may be shorter)."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise GraphError(f"batch size must be an int >= 1, not {size!r}")
        options.setdefault("name", self.graph._unique_name("batch"))
        stream = self.graph._add("batch", None, (self,), options)
        self.graph._stages[stream.producers[0]].extra["size"] = size
        return stream

    def unbatch(self, **options: Any) -> Stream:
        """Emit each element of every (iterable) item: the inverse of ``batch``."""
        options.setdefault("name", self.graph._unique_name("unbatch"))
        return self.graph._add("unbatch", None, (self,), options)

    def merge(self, *others: Stream) -> Stream:
        """Fan-in: one stream with the items of this one and ``others``, as they come."""
        streams = (self, *others)
        for s in others:
            self.graph._check_own(s, "merge")
        producers: list[str] = []
        for s in streams:
            for p in s.producers:
                if p in producers:
                    raise GraphError(f"merge of stage {p!r} with itself would deliver its "
                                     "items twice", stages=(p,))
                producers.append(p)
        return Stream(self.graph, tuple(producers))

    def sink(self, fn: Callable[[Any], Any], **options: Any) -> None:
        """Call ``fn`` on every item for its effect; ends the stream."""
        self.graph._add("sink", fn, (self,), options)

    def collect(self, name: str, *, on: str = "host", **options: Any) -> None:
        """Gather the items into ``report[name]`` (a list, in order of arrival).

        ``on="device"`` keeps arrays coming out of a GPU stage on the device.
        """
        if not isinstance(name, str) or not name:
            raise GraphError(f"collect needs a non-empty name, not {name!r}")
        if on not in ("host", "device"):
            raise GraphError(f"collect {name!r}: on must be 'host' or 'device', not {on!r}")
        if name in self.graph._collect_names():
            raise GraphError(f"two collects are named {name!r}", stages=(name,))
        options.setdefault("name", self.graph._unique_name(f"collect:{name}"))
        stream = self.graph._add("collect", None, (self,), options)
        self.graph._stages[stream.producers[0]].extra.update(key=name, on=on)

    def __repr__(self) -> str:
        return f"<Stream of {', '.join(self.producers)} in {self.graph.name!r}>"


def zip(*streams: Stream, **options: Any) -> Stream:  # noqa: A001 - fg.zip mirrors builtins.zip
    """Join streams item by item into tuples, like ``zip(..., strict=True)``.

    The streams must end together: if one ends before the others the zip
    stage fails with a :class:`StageError` naming the shorter input.
    """
    if len(streams) < 2:
        names = [p for s in streams for p in s.producers]
        raise GraphError(f"zip needs two or more streams, got {len(streams)}", stages=tuple(names))
    graph = streams[0].graph
    for s in streams[1:]:
        graph._check_own(s, "zip")
    options.setdefault("name", graph._unique_name("zip"))
    return graph._add("zip", None, streams, options)


_OPTION_NAMES = {"name", "workers", "capacity", "ordered", "on_error", "retries", "backoff",
                 "device", "cpus"}


class Graph:
    """A dataflow pipeline: stages joined by streams. Building it starts nothing."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self._stages: dict[str, StageSpec] = {}

    @property
    def stages(self) -> dict[str, StageSpec]:
        """The stage specs by name, in the order they were added."""
        return dict(self._stages)

    def source(self, items: Iterable[Any] | Callable[[], Iterable[Any]], *,
               name: str | None = None, **options: Any) -> Stream:
        """A stream of ``items``.

        ``items`` is an iterable (a list, a range...), or a function called with
        no arguments at the start of each run that returns one (a generator
        function: its ``finally`` runs when the run ends, however it ends). A
        one-shot iterator (a generator object) can only feed one run.
        """
        if not (callable(items) or isinstance(items, Iterable)):
            raise GraphError(f"source takes an iterable or a function returning one, "
                             f"not {type(items).__name__}")
        if name is None:
            base = getattr(items, "__name__", None) if callable(items) else None
            name = self._unique_name(base if base and base != "<lambda>" else "source")
        for key in options:
            if key not in ("capacity", "cpus"):
                raise GraphError(f"source {name!r}: unknown option {key!r}", stages=(name,))
        return self._add("source", items, (), {"name": name, **options})

    # -- building ----------------------------------------------------------------
    def _unique_name(self, base: str) -> str:
        name, k = base, 2
        while name in self._stages:
            name, k = f"{base}_{k}", k + 1
        return name

    def _collect_names(self) -> set[str]:
        return {s.extra.get("key") for s in self._stages.values() if s.kind == "collect"}

    def _check_own(self, stream: Stream, verb: str) -> None:
        if not isinstance(stream, Stream):
            raise GraphError(f"{verb} takes streams, not {type(stream).__name__}")
        if stream.graph is not self:
            raise GraphError(f"{verb}: stream of {stream.producers} belongs to graph "
                             f"{stream.graph.name!r}, not {self.name!r}")

    def _add(self, kind: str, fn: Any, inputs: tuple[Stream, ...],
             options: dict[str, Any]) -> Stream:
        for s in inputs:
            self._check_own(s, kind)
        name = options.pop("name", None)
        if name is None:
            base = getattr(fn, "name", None) or getattr(fn, "__name__", None) or kind
            name = self._unique_name(kind if base == "<lambda>" else base)
        if not isinstance(name, str) or not name:
            raise GraphError(f"stage name must be a non-empty string, not {name!r}")
        if name in self._stages:
            raise GraphError(f"two stages are named {name!r}", stages=(name,))
        if fn is not None and kind != "source" and not callable(fn):
            raise GraphError(f"stage {name!r}: {kind} takes a function, not "
                             f"{type(fn).__name__}", stages=(name,))
        settings = {k: options.pop(k) for k in list(options) if k in _OPTION_NAMES}
        params = options  # whatever is left: parameters of a numeric op
        if params and not _is_numeric(fn):
            raise GraphError(f"stage {name!r}: unknown option(s) "
                             f"{', '.join(sorted(params))}", stages=(name,))
        spec = StageSpec(name=name, kind=kind, fn=fn, inputs=inputs, params=dict(params))
        for key, value in settings.items():
            setattr(spec, key, value)
        if spec.cpus is not None:
            spec.cpus = frozenset(spec.cpus)
        _check_options(spec)
        self._stages[name] = spec
        return Stream(self, (name,))

    # -- validation ----------------------------------------------------------------
    def to_networkx(self) -> nx.DiGraph:
        """The DAG: one node per stage (with its spec), an edge per stream hop."""
        g = nx.DiGraph(name=self.name)
        for spec in self._stages.values():
            g.add_node(spec.name, spec=spec)
        for spec in self._stages.values():
            for port, stream in enumerate(spec.inputs):
                for p in stream.producers:
                    g.add_edge(p, spec.name, port=port)
        return g

    def validate(self) -> nx.DiGraph:
        """Check the graph before anything runs; raises GraphError naming the stages."""
        if not self._stages:
            raise GraphError(f"graph {self.name!r} has no stages")
        g = self.to_networkx()
        try:
            cycle = nx.find_cycle(g)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            names = tuple(u for u, _ in cycle)
            raise GraphError(f"cycle through stages {' -> '.join(names)}", stages=names)
        dangling = [n for n in g if g.out_degree(n) == 0 and self._stages[n].kind not in TERMINAL]
        if dangling:
            raise GraphError(
                f"the output of stage(s) {', '.join(dangling)} is not consumed; end each "
                "stream with .sink(fn) or .collect(name)", stages=tuple(dangling))
        for spec in self._stages.values():
            if spec.kind != "source" and not spec.inputs:
                raise GraphError(f"stage {spec.name!r} has no input", stages=(spec.name,))
            if spec.numeric:
                for stream in spec.inputs:
                    for p in stream.producers:
                        if self._stages[p].kind in ("batch", "zip"):
                            raise GraphError(
                                f"numeric stage {spec.name!r} is fed by {p!r}, whose items are "
                                f"{'lists' if self._stages[p].kind == 'batch' else 'tuples'}, "
                                "not arrays", stages=(p, spec.name))
        return g

    # -- running ---------------------------------------------------------------------
    def run(self, *, device: str = "auto", timeout: float | None = None,
            ctx: Context | None = None, **options: Any) -> RunReport:
        """Validate, plan and execute the graph; see :func:`flowgpu.runtime.run`."""
        from .runtime import run

        return run(self, device=device, timeout=timeout, ctx=ctx, **options)

    # -- pictures ----------------------------------------------------------------------
    def draw(self, **options: Any) -> Any:
        """A matplotlib figure of the DAG: stage names, workers, device, fused
        groups; ``plan=True`` shows the run's plan (see :func:`flowgpu.draw.draw_graph`)."""
        from .draw import draw_graph

        return draw_graph(self, **options)

    def _repr_svg_(self) -> str | None:
        """Jupyter shows a graph as its drawing (None: an invalid graph shows its repr)."""
        from .draw import graph_svg

        try:
            return graph_svg(self)
        except GraphError:
            return None

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self._stages)} stages>"


def _check_options(spec: StageSpec) -> None:
    def bad(msg: str) -> GraphError:
        return GraphError(f"stage {spec.name!r}: {msg}", stages=(spec.name,))

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(spec.workers) or spec.workers < 1:
        raise bad(f"workers must be an int >= 1, not {spec.workers!r}")
    if spec.kind in ("source", "batch", "zip", "collect") and spec.workers != 1:
        raise bad(f"a {spec.kind} stage runs on one worker")
    if spec.capacity is not None and (not is_int(spec.capacity) or spec.capacity < 0):
        raise bad(f"capacity must be an int >= 0, not {spec.capacity!r}")
    if not isinstance(spec.ordered, bool):
        raise bad(f"ordered must be True or False, not {spec.ordered!r}")
    if spec.on_error not in ON_ERROR:
        raise bad(f"on_error must be one of {', '.join(ON_ERROR)}, not {spec.on_error!r}")
    if spec.retries is None:
        spec.retries = 3 if spec.on_error == "retry" else 0
    if not is_int(spec.retries) or spec.retries < 0:
        raise bad(f"retries must be an int >= 0, not {spec.retries!r}")
    if not isinstance(spec.backoff, (int, float)) or spec.backoff < 0:
        raise bad(f"backoff must be a number of seconds >= 0, not {spec.backoff!r}")
    if spec.device not in (None, "auto", "cpu", "gpu"):
        raise bad(f"device must be 'auto', 'cpu' or 'gpu', not {spec.device!r}")
    if spec.device not in (None, "auto") and not spec.numeric:
        raise bad("device= applies to numeric stages (@fg.elementwise, @fg.kernel, "
                  "@fg.array_stage) only")
    if spec.cpus is not None and (not spec.cpus or not all(is_int(c) and c >= 0
                                                            for c in spec.cpus)):
        raise bad(f"cpus must be a non-empty set of CPU numbers, not {set(spec.cpus)!r}")
    if spec.kind == "source" and callable(spec.fn):
        try:
            sig = inspect.signature(spec.fn)
            sig.bind()
        except TypeError as exc:
            raise bad(f"a source function is called with no arguments: {exc}") from None
        except ValueError:  # builtins without a signature
            pass
