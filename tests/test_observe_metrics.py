"""Per-stage metrics in the report, the bottleneck, the summary and the HTML table."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import flowgpu as fg


def _slow_middle(gate_wait: float):
    """A pipeline whose middle stage is the slow one (it waits on an Event that
    is never set, for ``gate_wait`` seconds per item: time itself is what the
    metrics measure)."""
    never = threading.Event()

    def slow(x):
        never.wait(gate_wait)
        return x

    g = fg.Graph("neck")
    s = g.source(range(12)).map(slow, workers=2, capacity=8, name="slow")
    s.map(lambda x: x, name="fast").collect("out")
    return g


def test_counts_are_exact_and_times_add_up():
    rep = _slow_middle(0.005).run()
    slow, fast = rep.stages["slow"], rep.stages["fast"]
    assert (slow.items_in, slow.items_out, slow.workers) == (12, 12, 2)
    assert (fast.items_in, fast.items_out) == (12, 12)
    assert slow.busy_s >= 12 * 0.005 * 0.9
    assert slow.utilisation > 0.5
    assert fast.starved > 0.5  # waits for the slow stage
    assert rep.stages["source"].blocked > 0.5  # waits for room in slow's channel
    assert 0 <= slow.depth_mean <= slow.depth_max <= 8
    assert slow.inputs == ("source",) and fast.inputs == ("slow",)


def test_bottleneck_names_the_slow_stage_and_says_what_to_do():
    rep = _slow_middle(0.005).run()
    assert rep.bottleneck_stage == "slow"
    text = rep.bottleneck
    assert text.startswith("slow: 2 workers busy ")
    assert "downstream starved" in text and text.endswith("add workers")


def test_a_slow_source_is_named_with_its_own_advice():
    never = threading.Event()

    def items():
        for i in range(10):
            never.wait(0.004)
            yield i

    g = fg.Graph("src")
    g.source(items).map(lambda x: x).collect("o")
    rep = g.run()
    assert rep.bottleneck_stage == "items"
    assert "source is the limit" in rep.bottleneck


def test_bytes_in_and_out_for_array_items():
    xs = [np.zeros(100, np.float32) for _ in range(5)]
    g = fg.Graph("bytes")
    g.source(xs).map(lambda a: a[:50], name="half").collect("o")
    rep = g.run()
    assert rep.stages["half"].bytes_in == 5 * 400
    assert rep.stages["half"].bytes_out == 5 * 200
    assert rep.stages["source"].bytes_out == 5 * 400
    assert rep.stages["collect:o"].bytes_in == 5 * 200


def test_cheap_items_are_sampled_but_counts_stay_exact():
    n = 2000
    g = fg.Graph("cheap")
    g.source(range(n)).map(lambda x: x + 1, name="inc").filter(lambda x: x % 2, name="odd") \
        .collect("o")
    rep = g.run()
    assert rep.stages["inc"].items_in == rep.stages["inc"].items_out == n
    assert rep.stages["odd"].items_out == n // 2
    assert rep.stages["inc"].busy_s > 0


def test_metrics_off_keeps_counts_and_results():
    g = fg.Graph("off")
    g.source(range(100)).map(lambda x: x * 2, workers=2).collect("o")
    rep = g.run(metrics=False)
    assert rep["o"] == [x * 2 for x in range(100)]
    assert rep.stages["map"].items_in == 100
    assert rep.stages["map"].busy_s == 0.0


def test_summary_and_html_show_every_stage_and_the_bottleneck():
    rep = _slow_middle(0.003).run()
    text = rep.summary()
    for name in ("source", "slow", "fast", "collect:out"):
        assert name in text
    assert "bottleneck: slow" in text
    html = rep._repr_html_()
    assert html.startswith("<table>") and "<td>slow</td>" in html and "bottleneck" in html


def test_report_of_a_failed_run_has_metrics():
    def boom(x):
        if x == 3:
            raise ValueError("bad")
        return x

    g = fg.Graph("fail")
    g.source(range(10)).map(boom).collect("o")
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert info.value.report.stages["boom"].items_in >= 4
