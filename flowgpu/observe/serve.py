"""Live status over HTTP while a run is alive: ``/health``, ``/metrics``, ``/status``.

One server thread per served run, started in ``on_start`` and joined in
``on_end``: it lives exactly as long as the run. It waits on the listening
socket and on a wake-up socket pair at once, so stopping it is immediate
(no polling interval) and leaves no socket open.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from ..runtime.observe import Observer, RunView
from .metrics import run_registry
from .status import healthy, snapshot

__all__ = ["StatusServer"]

log = logging.getLogger("flowgpu.serve")


class StatusServer(Observer):
    """Serve a run's live status on ``http://host:port`` while it runs.

    - ``/health``: 200 ``ok`` while the run goes well, 503 once it failed
      (an error, a cancel, the deadline);
    - ``/metrics``: Prometheus exposition format, from a registry of the run's
      own (never ``prometheus_client``'s global one);
    - ``/status``: JSON: per-stage counters, channel depths, the bottleneck.

    ``port=0`` binds a free port; :attr:`port` and :attr:`url` say which once
    :attr:`bound` is set (before any worker starts). ``host`` defaults to
    127.0.0.1: pass ``"0.0.0.0"`` explicitly to serve other machines.
    Binding fails the run before it starts (``OSError``). One instance serves
    one run at a time.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.requested_port = int(port)
        self.port: int | None = None
        self.bound = threading.Event()  # set once the socket listens
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._failed = False

    @classmethod
    def parse(cls, serve: Any) -> StatusServer:
        """From ``run(serve=...)``: a port number, or ``"host:port"``."""
        if isinstance(serve, bool) or not isinstance(serve, (int, str)):
            raise ValueError(f"serve: expected a port or 'host:port', not {serve!r}")
        if isinstance(serve, str) and ":" in serve:
            host, _, port = serve.rpartition(":")
            return cls(int(port), host or "127.0.0.1")
        return cls(int(serve))

    @property
    def url(self) -> str | None:
        return None if self.port is None else f"http://{self.host}:{self.port}"

    # -- observer hooks ---------------------------------------------------------------
    def on_start(self, view: RunView) -> None:
        if self._thread is not None:
            raise RuntimeError("this StatusServer already serves a run")
        self._failed = False
        server = HTTPServer((self.host, self.requested_port), _handler(self, view),
                            bind_and_activate=True)
        self._server = server
        self.port = server.server_address[1]
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name=f"{view.name}.serve")
        self._thread.start()
        self.bound.set()
        log.info("status of run %r on %s", view.name, self.url)

    def on_end(self, view: RunView, report: Any, error: BaseException | None) -> None:
        thread, server, wake = self._thread, self._server, self._wake
        self._thread = self._server = self._wake = None
        self.bound.clear()
        if thread is not None and wake is not None:
            wake[1].send(b"x")
            thread.join()
        if server is not None:
            server.server_close()
        if wake is not None:
            wake[0].close()
            wake[1].close()

    # -- the server thread ------------------------------------------------------------
    def _serve(self) -> None:
        server, wake = self._server, self._wake
        assert server is not None and wake is not None
        with selectors.DefaultSelector() as sel:
            sel.register(server.socket, selectors.EVENT_READ, "http")
            sel.register(wake[0], selectors.EVENT_READ, "wake")
            while True:
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    server._handle_request_noblock()  # one request, in this thread

    def _health(self, view: RunView) -> bool:
        if not healthy(view):
            self._failed = True  # once failed, unhealthy until the run is gone
        return not self._failed


def _handler(owner: StatusServer, view: RunView) -> type[BaseHTTPRequestHandler]:
    registry = run_registry(view)

    class Handler(BaseHTTPRequestHandler):
        timeout = 5.0  # a client that stops talking cannot hold the server
        server_version = "flowgpu"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/health":
                ok = owner._health(view)
                self._reply(200 if ok else 503, b"ok\n" if ok else b"failed\n", "text/plain")
            elif path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/status", ""):
                body = json.dumps(snapshot(view), indent=1).encode()
                self._reply(200, body, "application/json")
            else:
                self._reply(404, b"try /health, /metrics or /status\n", "text/plain")

        def _reply(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("%s " + format, self.address_string(), *args)

    return Handler
