"""Prometheus metrics of a live run, in a registry of the run's own.

The collector reads the workers' counters when scraped: nothing is counted
twice and nothing touches ``prometheus_client``'s global registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..runtime.observe import RunView
from .status import healthy, live_stats

__all__ = ["RunCollector", "run_registry"]


class RunCollector:
    """A ``prometheus_client`` custom collector over one run's :class:`RunView`."""

    def __init__(self, view: RunView) -> None:
        self.view = view

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        view = self.view
        stats = live_stats(view)
        counters = [
            ("items_in", "Items a stage took in", "items_in"),
            ("items_out", "Items a stage sent out", "items_out"),
            ("errors", "Items a stage skipped under on_error='skip'", "errors"),
            ("busy_seconds", "Seconds inside the stage function, summed over workers", "busy_s"),
            ("starved_seconds", "Seconds waiting for input, summed over workers", "starved_s"),
            ("blocked_seconds", "Seconds waiting for space downstream", "blocked_s"),
            ("bytes_in", "nbytes of the array items taken in", "bytes_in"),
            ("bytes_out", "nbytes of the array items sent out", "bytes_out"),
        ]
        for metric, doc, attr in counters:
            fam = CounterMetricFamily(f"flowgpu_stage_{metric}", doc, labels=["graph", "stage"])
            for name, s in stats.items():
                fam.add_metric([view.name, name], getattr(s, attr))
            yield fam
        gauges = [
            ("workers", "Worker threads of a stage", lambda n, s: s.workers),
            ("utilisation", "Busy share of a stage's worker time (0..1)",
             lambda n, s: s.utilisation),
            ("channel_depth", "Items waiting in a stage's input channel(s)",
             lambda n, s: view.depth(n)),
        ]
        for metric, doc, fn in gauges:
            fam = GaugeMetricFamily(f"flowgpu_stage_{metric}", doc, labels=["graph", "stage"])
            for name, s in stats.items():
                fam.add_metric([view.name, name], fn(name, s))
            yield fam
        yield _gauge("flowgpu_run_elapsed_seconds", "Seconds since the run started",
                     view.name, view.elapsed())
        yield _gauge("flowgpu_run_healthy", "1 while the run goes well, 0 after a failure",
                     view.name, 1.0 if healthy(view) else 0.0)


def _gauge(name: str, doc: str, graph: str, value: float) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    fam = GaugeMetricFamily(name, doc, labels=["graph"])
    fam.add_metric([graph], value)
    return fam


def run_registry(view: RunView) -> Any:
    """A fresh ``CollectorRegistry`` holding only this run's collector."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(view))
    return registry
