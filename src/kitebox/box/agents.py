"""The job's ssh-agents: on the HOST (keys never enter the container), as the CONTAINER's uid.

Why that uid: ssh-agent drops any client whose uid is neither 0 nor its own ("uid mismatch:
peer euid ..."), so an agent started by root cannot serve a job running as 2000. kitebox
therefore forks; the child drops to the container's uid:gid and calls the functions hook mode
uses (sshagent.make_agent_dir, start_agents, stop_agents), so the directory is 0700 and owned
by that uid, which is what stop_agents insists on. Keys reach the child by fork, in memory:
never argv, never disk. The container gets the directory read-only (connecting to a socket
needs no write access to the mount).

Layout:  <run dir>/u<uid>/kitebox-<job>-XXXXXXXX/{repo,global}.sock, *.pid, owner
`owner` records the kitebox process (owner.py), so the reaper can tell an orphan.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kitebox.adapters.sshagent import make_agent_dir, start_agents, stop_agents
from kitebox.box.owner import Owner
from kitebox.core.secret import Secret
from kitebox.errors import KiteboxError, SshAgentError

OWNER_FILE = "owner"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class JobAgents:
    directory: str
    sockets: tuple[tuple[str, str], ...]  # (purpose, socket file name)


def user_dir(run_dir: str, uid: int) -> Path:
    return Path(run_dir) / f"u{uid}"


def _prepare_user_dir(run_dir: str, uid: int, gid: int) -> Path:
    """<run dir> (0755) and <run dir>/u<uid> (0700, owned by uid), refusing a symlink."""
    os.makedirs(run_dir, mode=0o755, exist_ok=True)
    directory = user_dir(run_dir, uid)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = directory.lstat()
    if directory.is_symlink() or not directory.is_dir():
        raise SshAgentError(f"{directory} is not a directory kitebox made")
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.chown(directory, uid, gid)
    os.chmod(directory, 0o700)
    return directory


def _ignore(signum, frame) -> None:  # a Python-level handler: reset to default by exec
    pass


def as_user(uid: int, gid: int, function: Callable, *args):
    """Run `function(*args)` in a child that dropped to uid:gid; return its JSON-able result.

    A KiteboxError in the child is raised again here with its message. The child leaves the
    process group the agent signals and ignores the cancel signal: it finishes its short,
    bounded task so that the parent's clean-up knows what exists.
    """
    if os.geteuid() == uid:
        return function(*args)
    if os.geteuid() != 0:
        raise SshAgentError(f"kitebox must run as root to start ssh-agents as the container user {uid}")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 1
        try:
            os.close(read_end)
            # Out of kitebox's process group, so the agent's group signals reach neither this
            # child nor its ssh-add (whose death would read as "not a usable key").
            os.setpgid(0, 0)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(signum, _ignore)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.environ["PATH"] = SAFE_PATH
            try:
                answer = {"ok": function(*args)}
            except KiteboxError as error:
                answer = {"error": str(error)}
            except Exception as error:  # a bug: its type only, a message could quote a key
                answer = {"error": f"internal error in the agent helper: {type(error).__name__}"}
            with os.fdopen(write_end, "w") as pipe:
                json.dump(answer, pipe)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    try:
        answer = json.loads(text)
    except ValueError:
        raise SshAgentError("the ssh-agent helper process died") from None
    if "error" in answer:
        raise SshAgentError(answer["error"])
    return answer["ok"]


def _start(parent: str, job_id: str, keys: dict[str, tuple[Secret, str]], owner_json: str) -> dict:
    directory = make_agent_dir(job_id, parent)
    try:
        (directory / OWNER_FILE).write_text(owner_json)
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
        raise SshAgentError(f"cannot write {directory / OWNER_FILE}") from None
    agents = start_agents(directory, keys)  # on failure it stops them and removes the directory
    return {"directory": str(directory), "sockets": [[a.purpose, Path(a.socket).name] for a in agents]}


def start(run_dir: str, job_id: str, keys: dict[str, tuple[Secret, str]], uid: int, gid: int, owner: Owner) -> JobAgents:
    """One agent per key in a fresh directory owned by uid:gid."""
    parent = _prepare_user_dir(run_dir, uid, gid)
    result = as_user(uid, gid, _start, str(parent), job_id, keys, owner.to_json())
    return JobAgents(result["directory"], tuple((p, s) for p, s in result["sockets"]))


def stop(directory: str) -> int:
    """Kill the agents recorded in `directory` and remove it, as the directory's owner."""
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return 0
    return as_user(info.st_uid, info.st_gid, lambda: stop_agents(Path(directory)))


def read_owner(directory: Path) -> Owner | None:
    try:
        return Owner.from_json((directory / OWNER_FILE).read_text())
    except OSError:
        return None
