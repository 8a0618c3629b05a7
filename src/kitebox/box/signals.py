"""Cancellation: the agent's cancel signal, turned into "stop the container, then clean up".

The agent sends the cancel signal (BUILDKITE_CANCEL_SIGNAL, default SIGTERM) to the bootstrap
script's whole PROCESS GROUP, then SIGKILL once the grace period is over (buildkite-contract.md).
The container is not in that group (containerd's shim is its parent), which is why `docker run`
as a bootstrap leaves zombie containers. So the handler never raises into whatever the main
thread was doing: it records the signal and, once the container runs, stops it from a separate
thread; the main thread sees the output stream end, collects the exit status and cleans up as
on any other exit. Before the container runs, the main thread checks `requested` between steps.
The job's ssh-agents are unaffected by the group signal: ssh-agent calls setsid().
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


class Cancelled(Exception):
    """Raised by the main thread at a step boundary once a cancel signal arrived."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Cancellation:
    """Installed for the duration of one job; `stop` is how the running container is stopped."""

    def __init__(self, extra: signal.Signals | None = None, say: Callable[[str], None] | None = None):
        self.signals = tuple(dict.fromkeys((*HANDLED, *((extra,) if extra else ()))))
        self.requested: int | None = None
        self._say = say or (lambda line: None)
        self._stop: Callable[[], None] | None = None
        self._stopper: threading.Thread | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "Cancellation":
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None:
            return  # already cancelling: a second signal changes nothing
        self.requested = signum
        self._say(f"--- :octagonal_sign: kitebox: {signal.Signals(signum).name} received, cancelling the job")
        self._start_stopper()

    def checkpoint(self) -> None:
        """Between steps: give up before creating anything more."""
        if self.requested is not None:
            raise Cancelled(self.requested)

    def running(self, stop: Callable[[], None]) -> None:
        """The container runs now; `stop` stops it. A signal that came first stops it at once."""
        self._stop = stop
        if self.requested is not None:
            self._start_stopper()

    def _start_stopper(self) -> None:
        if self._stop is None or self._stopper is not None:
            return
        self._stopper = threading.Thread(target=self._stop, name="kitebox-stop", daemon=True)
        self._stopper.start()

    def join(self, timeout: float) -> None:
        if self._stopper is not None:
            self._stopper.join(timeout)

    def exit_code(self, container_status: int | None) -> int:
        """A cancelled job never reports success: the container's failure, else 128 + signal."""
        if container_status:
            return container_status
        return 128 + (self.requested or signal.SIGTERM)

