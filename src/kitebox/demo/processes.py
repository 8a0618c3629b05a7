"""Stopping the demo's helper servers (moto, sshd, ssh-agent) the same way."""

from __future__ import annotations

import subprocess
import time
from typing import Callable


def terminate(process: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; reaped either way, so no zombie is left."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_answers(process: subprocess.Popen, probe: Callable[[], bool], timeout: float) -> bool:
    """Poll `probe` (an OSError counts as "not yet") until it is true, the process exits, or
    `timeout` seconds pass; True only when the server answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if probe():
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False
