"""One ssh-agent per deploy key, in a 0700 directory private to the job.

One agent per key, because with several keys in one agent the git server accepts the first key
for authentication and then refuses authorization (buildkite-contract.md, seed plugin). Keys go
to `ssh-add -` over stdin: never written to disk. Every agent's pid is recorded in the job's
directory so `stop_agents` kills all of them (the seed leaked all but the last).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kitebox.core.secret import Secret
from kitebox.errors import SshAgentError

MARKER = ".kitebox-agents"
STOP_GRACE_SECONDS = 2.0
_PID = re.compile(r"SSH_AGENT_PID=(\d+);")


@dataclass(frozen=True)
class Agent:
    purpose: str  # "repo" or "global"
    socket: str
    pid: int


def make_agent_dir(job_id: str, parent: str | None = None) -> Path:
    """A fresh 0700 directory for this job's sockets (mkdtemp creates it 0700, unguessable)."""
    safe = re.sub(r"[^A-Za-z0-9-]", "", job_id)[:36] or "job"
    directory = Path(tempfile.mkdtemp(prefix=f"kitebox-{safe}-", dir=parent))
    (directory / MARKER).write_text("sockets and pids of kitebox's ssh-agents for one job\n")
    return directory


def start_agent(directory: Path, purpose: str, key: Secret, parameter: str) -> Agent:
    """Start an agent at <directory>/<purpose>.sock and load `key` into it from memory."""
    socket = directory / f"{purpose}.sock"
    try:
        started = subprocess.run(
            ["ssh-agent", "-s", "-a", str(socket)],
            capture_output=True, text=True, timeout=10, check=True,
            env=_clean_env(),
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise SshAgentError(f"could not start ssh-agent for the {purpose} key: {error}") from None
    match = _PID.search(started.stdout)
    if not match:
        raise SshAgentError(f"ssh-agent for the {purpose} key did not report its pid")
    agent = Agent(purpose, str(socket), int(match[1]))
    (directory / f"{purpose}.pid").write_text(f"{agent.pid}\n")
    _add_key(agent, key, parameter)
    return agent


def _clean_env() -> dict[str, str]:
    # No askpass, no display: a passphrase-protected key must fail, not hang on a prompt.
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    keep["SSH_ASKPASS_REQUIRE"] = "never"
    return keep


def _add_key(agent: Agent, key: Secret, parameter: str) -> None:
    text = key.reveal().replace("\r\n", "\n")
    if not text.endswith("\n"):
        text += "\n"  # SSM often loses the final newline; OpenSSH's parser needs it
    env = _clean_env() | {"SSH_AUTH_SOCK": agent.socket}
    try:
        added = subprocess.run(
            ["ssh-add", "-q", "-"], input=text, capture_output=True, text=True, timeout=10, env=env
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise SshAgentError(f"ssh-add for {parameter} failed to run: {error}") from None
    if added.returncode != 0:
        # ssh-add's own message is not echoed: it is not needed and could quote the input.
        raise SshAgentError(
            f"{parameter} does not hold a usable private key (OpenSSH or PEM, no passphrase); "
            "regenerate it with `kitebox keys create`"
        )


def start_agents(directory: Path, keys: dict[str, tuple[Secret, str]]) -> list[Agent]:
    """Start one agent per key; on any failure stop the ones started and remove the directory."""
    agents: list[Agent] = []
    try:
        for purpose, (key, parameter) in keys.items():
            agents.append(start_agent(directory, purpose, key, parameter))
    except BaseException:
        stop_agents(directory)
        raise
    return agents


def _is_our_agent(pid: int, directory: Path) -> bool:
    """True when `pid` is an ssh-agent bound to a socket in `directory` (guards against pid reuse
    and against a job that rewrote the pid file's environment variables)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and os.path.basename(argv[0]) == b"ssh-agent" and any(
        a.startswith(str(directory).encode() + b"/") for a in argv
    )


def stop_agents(directory: Path) -> int:
    """Kill every agent recorded in `directory` and remove it; returns how many were killed.

    Only a directory kitebox made (marker file, owned by us, 0700) is touched.
    """
    if not is_agent_dir(directory):
        return 0
    ours = []
    for pidfile in directory.glob("*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if _is_our_agent(pid, directory):
            ours.append(pid)
    for pid in ours:
        _signal(pid, signal.SIGTERM)
    # Wait for them to go (they are not our children, so poll), then SIGKILL what is left:
    # "stopped" must mean gone, for the caller and for a test that checks at once.
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while any(_is_our_agent(pid, directory) for pid in ours) and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in ours:
        if _is_our_agent(pid, directory):
            _signal(pid, signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)
    return len(ours)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def is_agent_dir(directory: Path) -> bool:
    try:
        info = directory.lstat()
    except OSError:
        return False
    return (
        directory.is_dir()
        and not directory.is_symlink()
        and info.st_uid == os.getuid()
        and info.st_mode & 0o777 == 0o700
        and (directory / MARKER).is_file()
        and directory.name.startswith("kitebox-")
    )
