"""max_inflight_bytes: a byte budget across the run's channels."""

from __future__ import annotations

import numpy as np
import pytest

import flowgpu as fg


def _growing_graph(n_items=120):
    g = fg.Graph("grow")
    src = g.source(lambda: (np.ones(100, np.uint8) for _ in range(n_items)))
    big = src.map(lambda a: np.ones(a.size * 1000, np.uint8), workers=4, name="grow")
    big.map(lambda a: int(a.sum()), name="measure").collect("sums")
    return g


@pytest.mark.parametrize("budget", [10_000, 400_000, 2_000_000])
def test_bytes_in_flight_stay_within_budget_plus_one_item_and_two_per_channel(budget):
    rep = _growing_graph().run(max_inflight_bytes=budget)
    assert rep["sums"] == [100_000] * 120  # nothing lost, nothing duplicated, in order
    big, small = 100_000, 100
    # measure's input carries the big items, grow's input the small ones, and
    # the collect's input ints (0 bytes)
    assert rep.inflight_peak_bytes["host"] <= budget + big + 2 * big + 2 * small
    assert rep.inflight_peak_bytes["device"] == 0


@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.parametrize("ordered", [True, False])
def test_several_workers_cannot_overdraw_one_channel_together(workers, ordered):
    item = 1_000_000 * 8
    g = fg.Graph("wide")
    g.source(lambda: (np.ones(1_000_000) for _ in range(24))).map(
        lambda a: a * 2, workers=workers, ordered=ordered).collect("o")
    rep = g.run(max_inflight_bytes=2**20)
    assert len(rep["o"]) == 24
    channels = 2  # the map's input and the collect's input both carry the arrays
    assert rep.inflight_peak_bytes["host"] <= 2**20 + item + 2 * channels * item


def test_without_budget_growth_is_bounded_by_capacities_only():
    rep = _growing_graph().run()
    assert rep.inflight_peak_bytes == {}


def test_budget_wait_is_cancelled_by_the_run_deadline():
    def slow(a):
        fg.current_context().done.wait()
        return a

    g = fg.Graph("stuck")
    g.source(lambda: (np.ones(10_000, np.uint8) for _ in range(50))).map(slow).collect("o")
    with pytest.raises(fg.DeadlineExceeded):
        g.run(max_inflight_bytes=1_000, timeout=0.3)


def test_bad_budget_is_refused_before_the_run():
    g = fg.Graph("bad")
    g.source([1]).collect("o")
    with pytest.raises(ValueError):
        g.run(max_inflight_bytes=0)
    with pytest.raises(ValueError, match="unknown keys"):
        g.run(max_inflight_bytes={"gpu": 10})
