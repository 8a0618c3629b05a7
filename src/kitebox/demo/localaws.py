"""The embedded default AWS: a real moto server over HTTP on loopback, and a latency-adding
reverse proxy to put in front of it (benchmarks, fault tests).

kitebox talks to it exactly as to AWS (botocore over HTTP, endpoint from AWS_ENDPOINT_URL), so a
subprocess (a hook, the CLI, a container) can use the same fake AWS. Nothing here ever reaches
real AWS: the server binds 127.0.0.1 and every environment it hands out carries fake credentials.
"""


from __future__ import annotations

import http.client
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from kitebox.demo.processes import terminate, wait_until_answers

__all__ = ["FAKE_CREDENTIALS", "LatencyProxy", "MotoServer", "free_port"]

LOOPBACK = "127.0.0.1"

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free on ``host`` a moment ago (the caller must bind it soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _scrubbed_environ() -> dict[str, str]:
    """This process's environment without any AWS_* variable, plus fake credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_CREDENTIALS)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


class MotoServer:
    """``python -m moto.server`` on a free loopback port, as a context manager.

    >>> with MotoServer() as moto:
    ...     moto.client("ssm").put_parameter(Name="/x", Value="y", Type="String")
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        region: str = "us-east-1",
        start_timeout: float = 30.0,
    ) -> None:
        self.host = LOOPBACK
        self.region = region
        self._requested_port = port
        self.port: int | None = None
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._logdir: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> MotoServer:
        """Start the server and wait until it answers HTTP; retries on a lost port race."""
        if self.is_running():
            return self
        if self._logdir is not None:  # restarted after kill()
            self._logdir.cleanup()
        self._logdir = tempfile.TemporaryDirectory(prefix="kitebox-moto-")
        self.log_path = Path(self._logdir.name) / "moto_server.log"
        attempts = 1 if self._requested_port else 3
        for attempt in range(attempts):
            self.port = self._requested_port or free_port()
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=_scrubbed_environ(),
                )
            if self._wait_until_up():
                return self
            self._terminate()
            if attempt + 1 == attempts:
                break
        raise RuntimeError(f"moto server did not start on {self.host}:{self.port}:\n{self.log_text()}")

    def _wait_until_up(self) -> bool:
        def answers() -> bool:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                conn.getresponse().read()
                return True
            finally:
                conn.close()

        assert self._proc is not None
        return wait_until_answers(self._proc, answers, self._start_timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and remove its log."""
        self._terminate(timeout)
        if self._logdir is not None:
            self._logdir.cleanup()
            self._logdir = None

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would; the object can be ``start()``-ed again."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _terminate(self, timeout: float = 10.0) -> None:
        terminate(self._proc, timeout)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use --------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("MotoServer is not started")
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for boto3 (in this process or a child) to use this server, and only it.

        The config and credentials files point at /dev/null so that a developer's ~/.aws
        cannot add a profile, a role or a different endpoint.
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            **FAKE_CREDENTIALS,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` pointed at this server, with fake credentials."""
        import boto3

        session = boto3.session.Session(
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=self.region,
        )
        kwargs.setdefault("endpoint_url", self.endpoint_url)
        return session.client(service, **kwargs)

    def reset(self) -> None:
        """Forget every resource in every service (POST /moto-api/reset)."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def log_text(self) -> str:
        """What the server printed so far (for failure messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


# -- latency proxy -----------------------------------------------------------------------------

# Hop-by-hop headers (RFC 9110 section 7.6.1) are per connection and never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    server: _ProxyHTTPServer
    timeout = 60  # an idle keep-alive connection's handler thread ends after this

    def _relay(self) -> None:
        proxy = self.server.owner
        body = self._read_body()
        target = self.headers.get("X-Amz-Target") or self.path
        proxy._record(self.command, target)
        delay = proxy.delay
        if delay > 0:
            time.sleep(delay)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        try:
            status, reason, resp_headers, resp_body = proxy._forward(
                self.command, self.path, headers, body
            )
        except (OSError, http.client.HTTPException) as exc:
            message = f"LatencyProxy: upstream {proxy.upstream_url} failed: {exc}\n".encode()
            self.send_response(502)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        self.send_response(status, reason)
        for name, value in resp_headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp_body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp_body)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        return self.rfile.read(int(length))

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _relay

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass  # keep test output clean; requests are recorded on the proxy instead


class _ProxyHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: LatencyProxy


class LatencyProxy:
    """An HTTP reverse proxy on loopback that waits ``delay`` seconds before forwarding each
    request to ``upstream_url`` (e.g. a MotoServer), and records every request.

    Stands in for the network round trip to a real AWS endpoint, so that caching and request
    collapsing show up in timings and in ``request_count``.
    """

    def __init__(self, upstream_url: str, *, delay: float = 0.03) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"LatencyProxy needs an http:// upstream, got {upstream_url!r}")
        self.upstream_url = upstream_url.rstrip("/")
        self._upstream = (parsed.hostname, parsed.port or 80)
        self.delay = delay
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str]] = []
        self._local = threading.local()
        self._server: _ProxyHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LatencyProxy:
        if self._server is not None:
            return self
        server = _ProxyHTTPServer((LOOPBACK, 0), _ProxyHandler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name="LatencyProxy",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(5)
        self._server = None

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LatencyProxy is not started")
        return self._server.server_address[1]

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """A copy of ``(method, X-Amz-Target header or path)`` for every request, in order."""
        with self._lock:
            return list(self._requests)

    def count(self, target: str) -> int:
        """How many requests had this X-Amz-Target (e.g. ``AmazonSSM.GetParameter``) or path."""
        with self._lock:
            return sum(1 for _, t in self._requests if t == target)

    def clear(self) -> None:
        """Forget the recorded requests (the count starts again at 0)."""
        with self._lock:
            self._requests.clear()

    def _record(self, method: str, target: str) -> None:
        with self._lock:
            self._requests.append((method, target))

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        # One upstream connection per handler thread, reused while the client keeps its own
        # connection alive; a reused one the upstream has meanwhile closed is replaced once.
        for attempt in (1, 2):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection(*self._upstream, timeout=60)
                self._local.conn = conn
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    conn.close()
                    self._local.conn = None
                return resp.status, resp.reason, resp.getheaders(), data
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2 or not reused:
                    raise
        raise AssertionError("unreachable")
