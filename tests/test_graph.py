"""Graph building and validation: GraphError naming the stages; a graph is a value."""

from __future__ import annotations

import threading

import cloudpickle
import pytest

import flowgpu as fg


def inc(x):
    return x + 1


def test_unused_stream_is_dangling():
    g = fg.Graph()
    src = g.source(range(3), name="numbers")
    src.map(inc, name="plus_one")
    with pytest.raises(fg.GraphError, match="plus_one") as info:
        g.validate()
    assert info.value.stages == ("plus_one",)
    with pytest.raises(fg.GraphError):
        g.run()


def test_unused_source_is_dangling():
    g = fg.Graph()
    g.source(range(3), name="lonely")
    with pytest.raises(fg.GraphError) as info:
        g.run()
    assert info.value.stages == ("lonely",)


def test_zip_of_one_stream():
    g = fg.Graph()
    s = g.source(range(3), name="only")
    with pytest.raises(fg.GraphError) as info:
        fg.zip(s)
    assert "only" in info.value.stages


@pytest.mark.parametrize("options,word", [
    ({"workers": 0}, "workers"),
    ({"workers": 1.5}, "workers"),
    ({"capacity": -1}, "capacity"),
    ({"on_error": "x"}, "on_error"),
    ({"ordered": "yes"}, "ordered"),
    ({"retries": -1}, "retries"),
    ({"backoff": -0.1}, "backoff"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_options_name_the_stage(options, word):
    g = fg.Graph()
    s = g.source(range(3))
    with pytest.raises(fg.GraphError, match=word) as info:
        s.map(inc, name="stage_x", **options)
    assert info.value.stages == ("stage_x",)
    assert "stage_x" in str(info.value)


def test_unknown_source_option():
    g = fg.Graph()
    with pytest.raises(fg.GraphError, match="workers"):
        g.source(range(3), name="src", workers=2)


def test_batch_size_must_be_positive():
    g = fg.Graph()
    with pytest.raises(fg.GraphError):
        g.source(range(3)).batch(0)


def test_duplicate_stage_names():
    g = fg.Graph()
    s = g.source(range(3))
    s.map(inc, name="twice")
    with pytest.raises(fg.GraphError, match="twice") as info:
        s.map(inc, name="twice")
    assert info.value.stages == ("twice",)


def test_default_names_are_unique():
    g = fg.Graph()
    s = g.source(range(3))
    a = s.map(inc)
    b = s.map(inc)
    assert a.producers != b.producers


def test_stream_from_another_graph():
    g1, g2 = fg.Graph("one"), fg.Graph("two")
    a = g1.source(range(3))
    b = g2.source(range(3))
    with pytest.raises(fg.GraphError, match="one"):
        b.merge(a)
    with pytest.raises(fg.GraphError):
        fg.zip(b, a)


def test_stage_on_stream_from_another_graph():
    g1, g2 = fg.Graph("one"), fg.Graph("two")
    a = g1.source(range(3))
    with pytest.raises(fg.GraphError):
        g2._add("map", inc, (a,), {})


def test_empty_graph():
    with pytest.raises(fg.GraphError, match="no stages"):
        fg.Graph("empty").run()


def test_merge_of_stream_with_itself():
    g = fg.Graph()
    s = g.source(range(3), name="src")
    with pytest.raises(fg.GraphError, match="src") as info:
        s.merge(s)
    assert info.value.stages == ("src",)


def test_non_callable_stage_function():
    g = fg.Graph()
    with pytest.raises(fg.GraphError):
        g.source(range(3)).map(42)


def test_source_function_needing_arguments():
    g = fg.Graph()
    with pytest.raises(fg.GraphError):
        g.source(lambda x: [x])


def test_building_a_graph_starts_no_thread():
    before = set(threading.enumerate())
    g = fg.Graph()
    s = g.source(range(10)).map(inc, workers=4).filter(bool, workers=2)
    s.batch(3).unbatch().collect("out")
    g.validate()
    assert set(threading.enumerate()) == before


def test_graph_runs_twice_with_the_same_result():
    g = fg.Graph()
    g.source(range(20)).map(inc, workers=3).collect("out")
    first = g.run()["out"]
    second = g.run()["out"]
    assert first == second == list(range(1, 21))


def test_graph_pickles_with_cloudpickle_and_the_copy_runs():
    g = fg.Graph("shipped")
    offset = 10
    s = g.source(lambda: range(5)).map(lambda x: x + offset, workers=2)
    s.filter(lambda x: x % 2 == 0).collect("even")
    copy = cloudpickle.loads(cloudpickle.dumps(g))
    assert copy is not g
    assert copy.run()["even"] == [10, 12, 14]
    assert g.run()["even"] == [10, 12, 14]


def test_one_shot_iterator_source_fails_on_second_run():
    g = fg.Graph()
    g.source(iter([1, 2, 3]), name="once").collect("out")
    assert g.run()["out"] == [1, 2, 3]
    with pytest.raises(fg.GraphError, match="once") as info:
        g.run()
    assert info.value.stages == ("once",)


def test_generator_object_source_fails_on_second_run():
    g = fg.Graph()
    g.source(x for x in range(3)).collect("out")
    g.run()
    with pytest.raises(fg.GraphError):
        g.run()


def test_generator_function_source_runs_many_times():
    def numbers():
        yield from range(4)

    g = fg.Graph()
    g.source(numbers).collect("out")
    assert g.run()["out"] == g.run()["out"] == [0, 1, 2, 3]


def test_to_networkx_edges():
    g = fg.Graph()
    a = g.source(range(3), name="a")
    b = a.map(inc, name="b")
    fg.zip(a, b, name="z").collect("out")
    nxg = g.validate()
    assert set(nxg.edges) == {("a", "b"), ("a", "z"), ("b", "z"), ("z", "collect:out")}


def test_two_collects_with_the_same_name():
    g = fg.Graph()
    s = g.source(range(3))
    s.collect("out")
    with pytest.raises(fg.GraphError, match="out"):
        s.collect("out")
