"""run(serve=...): /health, /metrics, /status against the live run, with a real client."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest

import flowgpu as fg
from flowgpu.observe import StatusServer


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read(), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers["Content-Type"]


def test_live_endpoints_while_running_then_nothing_left():
    server = StatusServer(port=0)
    seen: dict[str, tuple[int, bytes, str]] = {}

    def look(x):
        if x == 5:  # inside the live run: ask it about itself
            for path in ("/health", "/metrics", "/status"):
                seen[path] = _get(server.url + path)
        return x

    g = fg.Graph("served")
    g.source(range(10)).map(look).collect("o")
    rep = g.run(serve=server)
    assert rep["o"] == list(range(10))
    assert seen["/health"][:2] == (200, b"ok\n")
    code, body, ctype = seen["/metrics"]
    assert code == 200 and ctype.startswith("text/plain")
    text = body.decode()
    assert 'flowgpu_stage_items_in_total{graph="served",stage="look"} 6.0' in text
    assert 'flowgpu_run_healthy{graph="served"} 1.0' in text
    status = json.loads(seen["/status"][1])
    assert status["graph"] == "served" and status["running"] and status["healthy"]
    assert status["stages"]["look"]["items_in"] == 6
    # the run is over: the port is closed and no thread is left (autouse fixture)
    assert server.port is not None and not server.bound.is_set()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_health_is_503_after_a_failure_while_the_run_winds_down():
    server = StatusServer(port=0)
    held_in = threading.Event()  # the slow stage is inside its function
    cancelled = threading.Event()  # ...and has seen the run's context cancelled
    release = threading.Event()  # lets it return, which ends the run
    got: dict[str, object] = {}

    def boom(x):
        held_in.wait(10)
        raise ValueError("boom")

    def held(x):
        held_in.set()
        fg.current_context().done.wait(10)
        cancelled.set()
        release.wait(10)  # keeps the run alive after the failure
        return x

    g = fg.Graph("failing")
    s = g.source(range(1))
    s.map(boom).sink(lambda x: None, name="drop")
    s.map(held).sink(lambda x: None, name="keep")

    def client():
        try:
            cancelled.wait(10)
            got["health"] = _get(server.url + "/health")[0]
            got["status_healthy"] = json.loads(_get(server.url + "/status")[1])["healthy"]
        finally:
            release.set()

    t = threading.Thread(target=client)
    t.start()
    try:
        with pytest.raises(fg.StageError):
            g.run(serve=server)
    finally:
        release.set()
        t.join()
    assert got == {"health": 503, "status_healthy": False}


def test_serve_accepts_port_and_host_port():
    assert StatusServer.parse(0).requested_port == 0
    srv = StatusServer.parse("127.0.0.1:0")
    assert (srv.host, srv.requested_port) == ("127.0.0.1", 0)
    with pytest.raises(ValueError):
        StatusServer.parse(True)


def test_each_run_has_its_own_registry():
    from prometheus_client import REGISTRY

    before = set(REGISTRY._names_to_collectors)
    g = fg.Graph("reg")
    g.source(range(3)).collect("o")
    g.run(serve=0)
    assert set(REGISTRY._names_to_collectors) == before
