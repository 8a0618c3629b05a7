"""The `cloudwatch:<log-group>` audit sink: one stream per instance, batched, nothing lost at exit.

Seed 000's "poor man's audit log" found CloudWatch noisy (one stream per event) and its events
lacked the build creator; here every audit line (which names the creator) goes to ONE stream per
instance (the host name), in batches.

Lines are queued by the caller and sent by one background thread, so a job never waits on
CloudWatch. The queue is drained at interpreter exit (atexit) and on SIGTERM — the agent's cancel
signal — before the previous SIGTERM behaviour runs. A batch CloudWatch refuses is written to
stderr as `kitebox-audit <line>` (the agent's or the unit's log keeps it), never dropped. The
handler only signals the sender thread and waits for it, so it never re-enters botocore from
inside whatever the main thread was doing.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable

import botocore.exceptions

from kitebox.errors import ConfigError

# PutLogEvents limits: 10,000 events and 1,048,576 bytes per call, counting 26 bytes per event;
# one event at most 256 KiB. Batches stay well inside.
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 1_000_000
EVENT_OVERHEAD = 26
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD
FLUSH_INTERVAL = 2.0  # seconds a line may wait while the process keeps running
EXIT_TIMEOUT = 10.0  # the agent's signal grace is at least 10 s; the Elastic Stack gives 60 s


class CloudWatchSink:
    """Queue of (timestamp ms, line) for one log group and stream, drained by one thread."""

    def __init__(self, client, group: str, stream: str, *, interval: float = FLUSH_INTERVAL,
                 max_events: int = MAX_BATCH_EVENTS, fallback: Callable[[str], None] | None = None):
        self._client = client
        self.group = group
        self.stream = stream
        self._interval = interval
        self._max_events = max_events
        self._fallback = fallback or _to_stderr
        self._pending: list[tuple[int, str]] = []
        self._wake = threading.Condition()
        self._closing = False
        self._stream_ready = False
        self._thread: threading.Thread | None = None
        self.calls = 0

    def add(self, line: str) -> None:
        event = (int(time.time() * 1000), line.rstrip("\n"))
        with self._wake:
            if self._closing:  # after close: nothing will send it, so it goes to the fallback now
                self._fallback(event[1])
                return
            self._pending.append(event)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kitebox-audit-cloudwatch", daemon=True)
                self._thread.start()
            if len(self._pending) >= self._max_events:
                self._wake.notify()

    def close(self, timeout: float = EXIT_TIMEOUT) -> None:
        """Send everything queued, then stop; lines still unsent after `timeout` go to the fallback."""
        with self._wake:
            self._closing = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._wake:
            left, self._pending = self._pending, []
        for _, line in left:
            self._fallback(line)

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._closing and len(self._pending) < self._max_events:
                    self._wake.wait(self._interval)
                batch, self._pending = self._pending, []
                closing = self._closing
            if batch:
                self._send(batch)
            if closing:
                with self._wake:
                    if not self._pending:
                        return

    def _send(self, events: list[tuple[int, str]]) -> None:
        for batch in _batches(events, self._max_events):
            try:
                self._ensure_stream()
                self._client.put_log_events(
                    logGroupName=self.group, logStreamName=self.stream,
                    logEvents=[{"timestamp": ts, "message": message} for ts, message in batch],
                )
                self.calls += 1
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
                _to_stderr_note(f"CloudWatch Logs {self.group}/{self.stream} refused {len(batch)} audit "
                                f"line(s): {_describe(error)}; they follow on stderr")
                for _, message in batch:
                    self._fallback(message)

    def _ensure_stream(self) -> None:
        if self._stream_ready:
            return
        try:
            self._client.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
                raise
        self._stream_ready = True


def _batches(events: list[tuple[int, str]], max_events: int):
    """Chronological batches within PutLogEvents' limits (an over-long line is cut, and says so)."""
    events = sorted(events, key=lambda e: e[0])  # stable: same-millisecond lines keep their order
    batch: list[tuple[int, str]] = []
    size = 0
    for ts, message in events:
        encoded = message.encode("utf-8")
        if len(encoded) > MAX_EVENT_BYTES:
            message = encoded[: MAX_EVENT_BYTES - 20].decode("utf-8", "ignore") + " …[truncated]"
            encoded = message.encode("utf-8")
        cost = len(encoded) + EVENT_OVERHEAD
        if batch and (len(batch) >= max_events or size + cost > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((ts, message))
        size += cost
    if batch:
        yield batch


def _describe(error: Exception) -> str:
    if isinstance(error, botocore.exceptions.ClientError):
        info = error.response.get("Error", {})
        return f"{info.get('Code', 'Error')}: {info.get('Message', '')}".strip()
    return type(error).__name__


def _to_stderr(line: str) -> None:
    try:
        sys.stderr.write(f"kitebox-audit {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _to_stderr_note(message: str) -> None:
    try:
        sys.stderr.write(f"kitebox: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# -- one sink per log group per process, closed at exit and on SIGTERM --------------------------

_sinks: dict[str, CloudWatchSink] = {}
_lock = threading.Lock()
_previous_sigterm: object = None
_hooks_installed = False


def sink_for(group: str, client_factory: Callable[[], object] | None = None) -> CloudWatchSink:
    """The process's sink for `group` (stream: this host's name), created on first use."""
    with _lock:
        found = _sinks.get(group)
        if found is None:
            try:
                client = (client_factory or _default_client)()
            except botocore.exceptions.BotoCoreError as error:
                raise ConfigError(f"audit sink cloudwatch:{group}: {_describe(error)}") from None
            found = _sinks[group] = CloudWatchSink(client, group, stream_name())
            _install_exit_hooks()
        return found


def stream_name() -> str:
    # One stream per instance; several agents on one instance share it (PutLogEvents needs no
    # sequence token since 2023, so concurrent writers are fine).
    return socket.gethostname() or "unknown-host"


def close_all() -> None:
    with _lock:
        sinks = list(_sinks.values())
        _sinks.clear()
    for sink in sinks:
        sink.close()


def _default_client():
    import boto3

    from kitebox.adapters.aws import client_config

    return boto3.session.Session().client("logs", config=client_config(3, 5.0))


def _install_exit_hooks() -> None:
    global _hooks_installed, _previous_sigterm
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(close_all)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit still drains
    try:
        _previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        pass


def _on_sigterm(signum, frame) -> None:
    close_all()
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # the default: die of SIGTERM, as the process would have without us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
