"""Property tests: a random chain of pure stages gives what sequential Python gives."""

from __future__ import annotations

import collections

from hypothesis import given, settings
from hypothesis import strategies as st

import flowgpu as fg

# Pure functions by kind, named so that a failing example reads well.
MAPS = {
    "double": lambda x: 2 * x,
    "inc": lambda x: x + 1,
    "neg": lambda x: -x,
    "mod7": lambda x: x % 7,
}
FILTERS = {
    "even": lambda x: x % 2 == 0,
    "positive": lambda x: x > 0,
    "not_mult3": lambda x: x % 3 != 0,
}
FLAT_MAPS = {
    "dup": lambda x: [x, x],
    "none": lambda x: [],
    "upto3": lambda x: range(abs(x) % 3),
    "pair": lambda x: (x, x + 100),
}
KINDS = {"map": MAPS, "filter": FILTERS, "flat_map": FLAT_MAPS}


@st.composite
def stages(draw, ordered=None):
    kind = draw(st.sampled_from(sorted(KINDS)))
    fn = draw(st.sampled_from(sorted(KINDS[kind])))
    return {
        "kind": kind,
        "fn": fn,
        "workers": draw(st.integers(1, 4)),
        "capacity": draw(st.integers(0, 8)),
        "ordered": draw(st.booleans()) if ordered is None else ordered,
    }


def sequential(items, chain):
    out = list(items)
    for s in chain:
        fn = KINDS[s["kind"]][s["fn"]]
        if s["kind"] == "map":
            out = [fn(x) for x in out]
        elif s["kind"] == "filter":
            out = [x for x in out if fn(x)]
        else:
            out = [y for x in out for y in fn(x)]
    return out


def build(items, chain, collect_capacity):
    g = fg.Graph("property")
    s = g.source(items)
    for k, spec in enumerate(chain):
        fn = KINDS[spec["kind"]][spec["fn"]]
        s = getattr(s, spec["kind"])(fn, name=f"{k}:{spec['kind']}:{spec['fn']}",
                                     workers=spec["workers"], capacity=spec["capacity"],
                                     ordered=spec["ordered"])
    s.collect("out", capacity=collect_capacity)
    return g


items_strategy = st.lists(st.integers(-50, 50), max_size=40)


@settings(max_examples=30, deadline=None)
@given(items=items_strategy, chain=st.lists(stages(), min_size=1, max_size=4),
       collect_capacity=st.integers(0, 8))
def test_any_chain_gives_the_sequential_multiset(items, chain, collect_capacity):
    out = build(items, chain, collect_capacity).run()["out"]
    assert collections.Counter(out) == collections.Counter(sequential(items, chain))


@settings(max_examples=30, deadline=None)
@given(items=items_strategy, chain=st.lists(stages(ordered=True), min_size=1, max_size=4),
       collect_capacity=st.integers(0, 8))
def test_ordered_chain_gives_the_sequential_sequence(items, chain, collect_capacity):
    out = build(items, chain, collect_capacity).run()["out"]
    assert out == sequential(items, chain)


@settings(max_examples=20, deadline=None)
@given(items=items_strategy, size=st.integers(1, 7), workers=st.integers(1, 4),
       capacity=st.integers(0, 8))
def test_batch_then_unbatch_is_identity(items, size, workers, capacity):
    g = fg.Graph()
    s = g.source(items).map(lambda x: x, workers=workers, capacity=capacity)
    b = s.batch(size, capacity=capacity)
    b.collect("batches")
    b.unbatch(capacity=capacity).collect("flat")
    report = g.run()
    assert report["flat"] == items
    assert report["batches"] == [items[i:i + size] for i in range(0, len(items), size)]


@settings(max_examples=20, deadline=None)
@given(items=items_strategy, workers=st.integers(1, 4), capacity=st.integers(0, 8))
def test_broadcast_and_zip_pair_each_item_with_its_image(items, workers, capacity):
    g = fg.Graph()
    s = g.source(items)
    fg.zip(s, s.map(MAPS["double"], workers=workers, capacity=capacity),
           capacity=capacity).collect("pairs")
    assert g.run()["pairs"] == [(x, 2 * x) for x in items]
