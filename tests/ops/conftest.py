"""Fixtures for the operators' kit: run `kitebox` in-process or as a child, and a denying endpoint.

  cli        run `kitebox ARGV...` in this process (stdin given as bytes); returns Run
  kitebox    run the real `kitebox` executable as a child process with the test's environment
  deny       a loopback AWS endpoint that answers every request with one AWS error
"""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from kitebox.cli import main

KITEBOX = str(Path(sys.executable).with_name("kitebox"))
BASE = "/vendors/buildkite"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class _NoTty(io.TextIOWrapper):
    def isatty(self) -> bool:
        return False


@pytest.fixture
def cli(capsys, monkeypatch):
    def run(*argv: str, stdin: bytes | None = None) -> Run:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", _NoTty(io.BytesIO(stdin or b"")))
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse refusing the arguments
            code = exit_.code if isinstance(exit_.code, int) else 2
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def kitebox():
    def run(*argv: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> Run:
        done = subprocess.run([KITEBOX, *argv], input=stdin or b"", capture_output=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        return Run(done.returncode, done.stdout.decode(), done.stderr.decode())

    return run


class DenyingEndpoint:
    """Answers every AWS JSON request with `code` (HTTP 400): KMS denials, access denials."""

    def __init__(self, code: str, message: str):
        payload = json.dumps({"__type": code, "message": message}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(400)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def deny(aws, monkeypatch):
    """deny(code, message): point AWS_ENDPOINT_URL at an endpoint refusing everything with `code`."""
    endpoints = []

    def start(code: str, message: str) -> DenyingEndpoint:
        endpoint = DenyingEndpoint(code, message)
        endpoints.append(endpoint)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.url)
        return endpoint

    yield start
    for endpoint in endpoints:
        endpoint.close()
