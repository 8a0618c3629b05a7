"""The proxy's two administrative doors, neither reachable by a job.

- A unix socket, root-only (0600 in a 0700 directory): one JSON object per line in, one out.
      {"op": "register", "job_id", "container_id", "address", "token", "session": {...} | null,
       "refusal": "..." | null, "wait": true}            → {"ok": true, "generation", "credentials"}
      {"op": "deregister", "job_id"}                      → {"ok": true, "found": bool}
      {"op": "ping"}                                      → {"ok": true, "jobs": n}
- HTTP on an admin address (loopback by default: a bridge-attached container cannot reach the
  host's 127.0.0.1): GET /healthz (200/503 JSON) and GET /metrics (Prometheus text).
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading
from pathlib import Path
from typing import Callable

MAX_LINE = 64 * 1024


class _UnixHandler(socketserver.StreamRequestHandler):
    server: "_UnixServer"

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
                answer = self.server.dispatch(message)
            except ValueError as error:
                answer = {"ok": False, "error": f"bad request: {error}"}
            self.wfile.write(json.dumps(answer).encode() + b"\n")
            self.wfile.flush()


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    dispatch: Callable[[dict], dict]


class AdminSocket:
    def __init__(self, path: Path, dispatch: Callable[[dict], dict]):
        self.path = path
        self._dispatch = dispatch
        self._server: _UnixServer | None = None

    def start(self) -> "AdminSocket":
        self.path.parent.parent.mkdir(parents=True, exist_ok=True)
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        old = os.umask(0o177)  # the socket is created 0600: no window where others may connect
        try:
            self._server = _UnixServer(str(self.path), _UnixHandler)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._server.dispatch = self._dispatch
        threading.Thread(target=self._server.serve_forever, name="kitebox-admin-socket", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    server: "_HttpServer"

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/healthz":
            healthy, document = self.server.health()
            body, status, kind = json.dumps(document).encode(), 200 if healthy else 503, "application/json"
        elif self.path == "/metrics":
            body, status, kind = self.server.metrics().encode(), 200, "text/plain; version=0.0.4"
        else:
            body, status, kind = b"Not Found", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        pass


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    health: Callable[[], tuple[bool, dict]]
    metrics: Callable[[], str]


class AdminHttp:
    def __init__(self, host: str, port: int, health: Callable[[], tuple[bool, dict]], metrics: Callable[[], str]):
        self._server = _HttpServer((host, port), _HttpHandler)
        self._server.health, self._server.metrics = health, metrics
        self.address = self._server.server_address

    def start(self) -> "AdminHttp":
        threading.Thread(target=self._server.serve_forever, name="kitebox-admin-http", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
