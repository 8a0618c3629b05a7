"""The HTTP side, thin: bytes in, `handler.handle`, bytes out. Two interchangeable servers.

- `AsyncServer` (the default): one asyncio event loop, a small HTTP/1.1 parser, keep-alive.
- `ThreadedServer`: the stdlib ThreadingHTTPServer with keep-alive, one thread per connection.
benchmarks/proxy.py measures both (`--server`); asyncio won on this 2-core machine (figures in
the benchmark's JSON), because BaseHTTPRequestHandler's header parsing and a thread switch per
request cost more than the whole warm-path answer.

The warm path never blocks: credentials come from the cache by a dict lookup. A cold miss (the
cache still waiting on STS) and an allowlisted forward to the upstream IMDS run in a worker
thread, so one slow request never stalls the others.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from kitebox.proxy.credentials import CredentialCache
from kitebox.proxy.handler import HandlerConfig, handle
from kitebox.proxy.model import ECS, IMDS, Credentials, Job, Request, Response, Unavailable
from kitebox.proxy.registry import Registry

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024
IDLE_SECONDS = 60.0
UPSTREAM_TIMEOUT = 1.0
REGISTRATION_WAIT = 0.5  # per request; botocore gives each IMDS request 1 s
_REASONS = {s.value: s.phrase for s in http.HTTPStatus}


class _NeedsWait(Exception):
    """The cache is cold for this job: answer from a worker thread, which may wait on STS."""


@dataclass
class Metrics:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter = field(default_factory=Counter)  # (endpoint, kind, status) -> count
    forwards: int = 0
    connections: int = 0

    def count(self, endpoint: str, response: Response) -> None:
        with self.lock:
            self.requests[(endpoint, response.kind, response.status)] += 1


class Upstream:
    """The real IMDS (or, in tests, a stand-in on loopback) for the allowlisted paths only.

    Its own IMDSv2 token, fetched with PUT and reused until shortly before it expires; requests
    carry that token and nothing of the job's (no X-Forwarded-For, no job headers).
    """

    TTL = 21600

    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "", parts.port or 80
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def _request(self, method: str, path: str, headers: dict) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.request(method, path, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.read(64 * 1024)
        finally:
            conn.close()

    def fetch(self, path: str) -> tuple[int, bytes]:
        with self._lock:
            if self._token is None or self._token[1] < time.monotonic() + 60:
                status, body = self._request("PUT", "/latest/api/token",
                                             {"x-aws-ec2-metadata-token-ttl-seconds": str(self.TTL)})
                if status != 200:
                    return 502, b"upstream IMDS refused a token"
                self._token = (body.decode().strip(), time.monotonic() + self.TTL)
            token = self._token[0]
        return self._request("GET", path, {"x-aws-ec2-metadata-token": token})


class _View:
    """The registry as one connection sees it: the ownership check runs once per connection and
    registration generation (registry.py explains why that is sound), then lookups are dict reads."""

    __slots__ = ("_dispatcher", "_verified", "blocking")

    def __init__(self, dispatcher: "Dispatcher"):
        self._dispatcher = dispatcher
        self._verified: tuple[str, int] | None = None
        self.blocking = False

    def job_at(self, address: str) -> Job | None:
        job = self._dispatcher.registry.lookup(address)
        if job is None:
            if not self.blocking:
                raise _NeedsWait()  # maybe registering right now: wait in a worker thread
            job = self._dispatcher.wait_for_registration(address)
            if job is None:
                return None
        if self._verified == (job.job_id, job.generation):
            return job
        if not self._dispatcher.registry.verify(job):
            return None
        self._verified = (job.job_id, job.generation)
        return job

    def credentials(self, job: Job) -> Credentials | Unavailable:
        cache = self._dispatcher.cache
        if self.blocking:
            return cache.get(job)
        found = cache.peek(job)
        if found is None:
            raise _NeedsWait()
        return found


class Dispatcher:
    """Everything a server needs to answer: registry, cache, config, upstream, metrics, clock."""

    def __init__(self, registry: Registry, cache: CredentialCache, config: HandlerConfig,
                 upstream: Upstream | None, clock: Callable[[], float] = time.time):
        self.registry, self.cache, self.config, self.upstream, self.clock = registry, cache, config, upstream, clock
        self.metrics = Metrics()
        self.workers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="kitebox-slow")
        # At most this many requests from unregistered addresses wait for a registration at
        # once, so other containers on the network cannot tie up the worker threads.
        self._waiting = threading.BoundedSemaphore(8)

    def wait_for_registration(self, address: str) -> Job | None:
        if not self._waiting.acquire(blocking=False):
            return None
        try:
            return self.registry.wait_for(address, REGISTRATION_WAIT)
        finally:
            self._waiting.release()

    def answer(self, request: Request, view: _View) -> Response:
        """Blocking answer (worker thread or threaded server)."""
        view.blocking = True
        try:
            response = handle(request, view, self.clock, self.config)
        finally:
            view.blocking = False
        return self.finish(request, response)

    def finish(self, request: Request, response: Response) -> Response:
        if response.forward is not None:
            response = self._forward(response.forward.path)
        self.metrics.count(request.endpoint, response)
        return response

    def _forward(self, path: str) -> Response:
        with self.metrics.lock:
            self.metrics.forwards += 1
        if self.upstream is None:
            return Response(404, b"Not Found", kind="not-found")
        try:
            status, body = self.upstream.fetch(path)
        except (OSError, http.client.HTTPException):
            return Response(502, b"kitebox: the upstream IMDS did not answer", kind="forward-error")
        return Response(200, body, kind="forward") if status == 200 else Response(404, b"Not Found", kind="not-found")


def render(response: Response, keep_alive: bool, head: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Server: kitebox",
    ]
    lines += [f"{name}: {value}" for name, value in response.headers]
    if not keep_alive:
        lines.append("Connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head_bytes if head else head_bytes + response.body


# -- asyncio ------------------------------------------------------------------------------------


class _Protocol(asyncio.Protocol):
    def __init__(self, dispatcher: Dispatcher, endpoint: str, loop: asyncio.AbstractEventLoop):
        self._d, self._endpoint, self._loop = dispatcher, endpoint, loop
        self._buffer = b""
        self._busy = False
        self._view = _View(dispatcher)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._idle: asyncio.TimerHandle | None = None
        self._last = 0.0

    def connection_made(self, transport) -> None:
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if peer else ""
        with self._d.metrics.lock:
            self._d.metrics.connections += 1
        self._arm()

    def _arm(self) -> None:
        # One timer per connection that re-arms itself, not one per request: a timer handle per
        # request was measurable on the warm path.
        self._last = self._loop.time()
        if self._idle is None:
            self._idle = self._loop.call_later(IDLE_SECONDS, self._close_if_idle)

    def _close_if_idle(self) -> None:
        idle_for = self._loop.time() - self._last
        if idle_for < IDLE_SECONDS:
            self._idle = self._loop.call_later(IDLE_SECONDS - idle_for, self._close_if_idle)
        elif self._transport and not self._transport.is_closing():
            self._transport.close()

    def connection_lost(self, exc) -> None:
        if self._idle:
            self._idle.cancel()
            self._idle = None
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_HEADER_BYTES + MAX_BODY_BYTES:
            self._reply_raw(Response(431, b"Request Header Fields Too Large"), keep_alive=False)
            return
        self._pump()

    def _pump(self) -> None:
        while not self._busy and self._transport is not None:
            parsed = parse_request(self._buffer)
            if parsed is None:
                return
            if isinstance(parsed, Response):
                self._reply_raw(parsed, keep_alive=False)
                return
            method, target, headers, keep_alive, consumed = parsed
            self._buffer = self._buffer[consumed:]
            self._arm()
            request = Request(self._endpoint, method, target, headers, self._peer)
            try:
                response = handle(request, self._view, self._d.clock, self._d.config)
            except _NeedsWait:
                response = None
            if response is not None and response.forward is None:
                self._reply(request, self._d.finish(request, response), keep_alive)
                continue
            self._busy = True
            self._transport.pause_reading()
            future = self._loop.run_in_executor(self._d.workers, self._d.answer, request, self._view)
            future.add_done_callback(lambda f, r=request, k=keep_alive: self._done(r, f, k))
            return

    def _done(self, request: Request, future, keep_alive: bool) -> None:
        self._busy = False
        try:
            response = future.result()
        except Exception:  # a bug: answer 500, keep the proxy up
            response = Response(500, b"kitebox: internal error", kind="error")
        if self._transport is None:
            return
        self._transport.resume_reading()
        self._reply(request, response, keep_alive)
        self._pump()

    def _reply(self, request: Request, response: Response, keep_alive: bool) -> None:
        self._reply_raw(response, keep_alive, head=request.method == "HEAD")

    def _reply_raw(self, response: Response, keep_alive: bool, head: bool = False) -> None:
        if self._transport is None:
            return
        self._transport.write(render(response, keep_alive, head))
        if not keep_alive:
            self._transport.close()


def parse_request(buffer: bytes):
    """(method, target, headers, keep_alive, bytes consumed), None if incomplete, or a 4xx Response."""
    end = buffer.find(b"\r\n\r\n")
    if end == -1:
        return Response(431, b"Request Header Fields Too Large") if len(buffer) > MAX_HEADER_BYTES else None
    try:
        head = buffer[:end].decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        return Response(400, b"Bad Request")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        return Response(505, b"HTTP Version Not Supported")
    headers = []
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return Response(400, b"Bad Request")
        headers.append((name.lower(), value.strip()))
    found = dict(headers)
    if "chunked" in found.get("transfer-encoding", "").lower():
        return Response(400, b"Bad Request: chunked bodies are not accepted")
    length_text = found.get("content-length", "0")
    if not (length_text.isascii() and length_text.isdigit()) or int(length_text) > MAX_BODY_BYTES:
        return Response(400, b"Bad Request")
    length = int(length_text)
    if len(buffer) < end + 4 + length:
        return None
    connection = found.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return method, target, tuple(headers), keep_alive, end + 4 + length


class AsyncServer:
    """Both endpoints on one event loop in a thread of its own; `start()` binds, `stop()` closes."""

    def __init__(self, dispatcher: Dispatcher, host: str, imds_port: int, ecs_port: int):
        self._d, self.host = dispatcher, host
        self.ports = {IMDS: imds_port, ECS: ecs_port}
        self._loop = asyncio.new_event_loop()
        self._servers: list = []
        self._thread: threading.Thread | None = None

    def start(self) -> "AsyncServer":
        for endpoint, port in self.ports.items():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            self.ports[endpoint] = sock.getsockname()[1]
            server = self._loop.run_until_complete(self._loop.create_server(
                lambda e=endpoint: _Protocol(self._d, e, self._loop), sock=sock, backlog=1024))
            self._servers.append(server)
        self._thread = threading.Thread(target=self._loop.run_forever, name="kitebox-proxy-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return

        async def _close():
            for server in self._servers:
                server.close()
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._thread = None
        self._loop.close()
        self._d.workers.shutdown(wait=False, cancel_futures=True)


# -- threads (the stdlib server, kept for comparison and as a fallback) -------------------------


class _ThreadedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_SECONDS
    server: "_ThreadingServer"

    def setup(self) -> None:
        super().setup()
        self._view = _View(self.server.dispatcher)

    def _any(self) -> None:
        length = self.headers.get("Content-Length", "0")
        if length.isascii() and length.isdigit() and int(length) <= MAX_BODY_BYTES:
            self.rfile.read(int(length))
        headers = tuple((k.lower(), v.strip()) for k, v in self.headers.items())
        request = Request(self.server.endpoint, self.command, self.path, headers, self.client_address[0])
        response = self.server.dispatcher.answer(request, self._view)
        self.wfile.write(render(response, not self.close_connection, head=self.command == "HEAD"))

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = _any

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        pass  # one line per request would cost more than the answer; metrics count instead


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


class ThreadedServer:
    def __init__(self, dispatcher: Dispatcher, host: str, imds_port: int, ecs_port: int):
        self._d, self.host = dispatcher, host
        self.ports = {IMDS: imds_port, ECS: ecs_port}
        self._servers: list[_ThreadingServer] = []

    def start(self) -> "ThreadedServer":
        for endpoint, port in self.ports.items():
            server = _ThreadingServer((self.host, port), _ThreadedHandler)
            server.dispatcher, server.endpoint = self._d, endpoint
            self.ports[endpoint] = server.server_address[1]
            threading.Thread(target=server.serve_forever, name=f"kitebox-{endpoint}", daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
        self._d.workers.shutdown(wait=False, cancel_futures=True)


SERVERS = {"asyncio": AsyncServer, "threading": ThreadedServer}
