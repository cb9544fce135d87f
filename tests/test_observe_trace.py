"""run(trace=...) writes Chrome trace-event JSON: parsed here, event by event."""

from __future__ import annotations

import json

import pytest

import flowgpu as fg


def _graph(n=20):
    g = fg.Graph("traced")
    s = g.source(range(n))
    s.map(lambda x: x + 1, workers=2, name="inc").collect("o")
    return g


def test_trace_has_a_track_per_worker_and_a_span_per_item(tmp_path):
    path = tmp_path / "run.json"
    rep = _graph().run(trace=str(path))
    assert rep["o"] == list(range(1, 21))
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    tracks = {e["tid"]: e["args"]["name"] for e in events
              if e["ph"] == "M" and e["name"] == "thread_name"}
    assert sorted(tracks.values()) == ["collect:o#0", "inc#0", "inc#1", "source#0"]
    spans = [e for e in events if e["ph"] == "X"]
    by_stage: dict[str, list[int]] = {}
    for e in spans:
        assert e["dur"] >= 0 and e["ts"] >= 0
        assert tracks[e["tid"]].startswith(e["args"]["stage"] + "#")
        by_stage.setdefault(e["args"]["stage"], []).append(e["args"]["item"])
    assert sorted(by_stage["inc"]) == list(range(20))
    assert sorted(by_stage["source"]) == list(range(20))


def test_trace_has_channel_depth_counters(tmp_path):
    path = tmp_path / "run.json"
    _graph().run(trace=path)
    counters = [e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "C"]
    names = {e["name"] for e in counters}
    assert names == {"depth inc", "depth collect:o"}
    assert all(isinstance(e["args"]["items"], int) for e in counters)


def test_trace_is_written_when_the_run_fails(tmp_path):
    path = tmp_path / "run.json"

    def boom(x):
        raise ValueError("no")

    g = fg.Graph("bad")
    g.source(range(3)).map(boom).collect("o")
    with pytest.raises(fg.StageError):
        g.run(trace=path)
    doc = json.loads(path.read_text())
    assert "ValueError" in doc["otherData"]["error"] or "StageError" in doc["otherData"]["error"]
