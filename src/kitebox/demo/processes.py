"""Stopping the demo's helper servers (moto, sshd, ssh-agent) the same way."""

from __future__ import annotations

import subprocess


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
