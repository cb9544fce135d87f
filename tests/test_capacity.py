"""A stage's input capacity, when not given, is sized by the items that pass."""

from __future__ import annotations

import numpy as np
import pytest
from sources import pulled_while_sink_is_held

import flowgpu as fg
from flowgpu.graph import (
    BUDGETED_CAPACITY,
    DEFAULT_CAPACITY,
    SMALL_ITEM_BYTES,
    SMALL_ITEMS_BATCH,
    SMALL_ITEMS_CAPACITY,
)


def test_small_items_get_the_large_default_in_batches(parked):
    # The channel is full (SMALL_ITEMS_CAPACITY items in full batches); the
    # source is stuck shipping the next full batch; the sink holds one item and
    # the rest of the batch it took (a single item if it took it while hungry).
    pulled = pulled_while_sink_is_held(int, parked, SMALL_ITEMS_CAPACITY + 4 * SMALL_ITEMS_BATCH)
    assert SMALL_ITEMS_CAPACITY + SMALL_ITEMS_BATCH < pulled
    assert pulled <= SMALL_ITEMS_CAPACITY + 2 * SMALL_ITEMS_BATCH


def test_a_large_item_lowers_the_default_for_the_rest_of_the_run(parked):
    big = SMALL_ITEM_BYTES // 8 + 1  # float64 elements: just over the threshold

    def make(i):
        return np.full(big, i, np.float64)

    assert pulled_while_sink_is_held(make, parked) == 1 + DEFAULT_CAPACITY + 1



@pytest.mark.parametrize("capacity", [None, 0, 8])
def test_every_item_arrives_in_order_whatever_the_capacity(capacity):
    items = [np.full(20_000, i) if i % 3 == 0 else i for i in range(60)]
    g = fg.Graph("mixed")
    g.source(items).map(lambda x: x, capacity=capacity, workers=2).collect("o")
    out = g.run()["o"]
    assert len(out) == 60
    for i, x in enumerate(out):
        assert (x[0] if isinstance(x, np.ndarray) else x) == i


def test_under_a_byte_budget_small_items_move_one_at_a_time(parked):
    pulled = pulled_while_sink_is_held(int, parked, max_inflight_bytes=1 << 20)
    assert pulled == 1 + BUDGETED_CAPACITY + 1
