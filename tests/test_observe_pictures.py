"""g.draw(), Graph._repr_svg_ and report.plot() make figures without Graphviz."""

from __future__ import annotations

import matplotlib
import numpy as np

import flowgpu as fg

matplotlib.use("Agg")


@fg.elementwise
def gain(x, k):
    return x * k


@fg.elementwise
def shift(x, b):
    return x + b


def _graph():
    g = fg.Graph("pic")
    s = g.source([np.ones(4, np.float32)] * 3).map(lambda a: a, name="decode", workers=3)
    s.map(gain, k=2.0).map(shift, b=1.0).collect("o")
    s.sink(lambda a: None, name="log")
    return g


def test_draw_labels_stages_workers_devices_and_fused_groups():
    fig = _graph().draw(device="cpu")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "decode\nmap x3" in texts
    assert "gain\nmap x1 cpu" in texts
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["fused: gain+shift"]


def test_draw_plan_shows_fused_nodes():
    fig = _graph().draw(device="cpu", plan=True)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.startswith("gain+shift\n") for t in texts)


def test_repr_svg_is_svg():
    svg = _graph()._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


def test_report_plot_has_timeline_and_utilisation():
    rep = _graph().run(device="cpu")
    fig = rep.plot()
    timeline, bars = fig.axes
    labels = [t.get_text() for t in timeline.get_yticklabels()]
    assert labels == [f"{s.name} x{s.workers}" for s in rep.stages.values()]
    assert bars.get_title() == "utilisation"
