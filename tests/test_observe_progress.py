"""run(progress=True): a tqdm bar per sink; no tqdm monitor thread left behind."""

from __future__ import annotations

import io

import flowgpu as fg
from flowgpu.observe import ProgressBars


def test_a_bar_per_sink_counts_every_item():
    out = io.StringIO()
    bars = ProgressBars(file=out)
    g = fg.Graph("bars")
    s = g.source(range(50))
    s.map(lambda x: x).collect("a")
    s.sink(lambda x: None, name="b")
    rep = g.run(observers=[bars])
    assert rep["a"] == list(range(50))
    assert {n: b.n for n, b in bars.bars.items()} == {"collect:a": 50, "b": 50}
    text = out.getvalue()
    assert "collect:a" in text and "50item" in text


def test_progress_option(capsys):
    g = fg.Graph("p")
    g.source(range(5)).collect("o")
    g.run(progress=True)
    assert "collect:o" in capsys.readouterr().err
