"""The reaper: what a SIGKILLed kitebox left behind, removed at the next job start or by `kitebox reap`.

A SIGKILL (the agent's, after the grace period) gives kitebox no chance to clean up: the job
container keeps running and the ssh-agents keep their keys. Both carry their owner (owner.py):
containers in labels (`kitebox.job`, `kitebox.pid`, `kitebox.pid-start`, `kitebox.boot-id`),
agent directories in an `owner` file. Anything whose owner no longer runs is an orphan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kitebox.box import agents
from kitebox.box.owner import Owner, boot_id, is_alive

JOB_LABEL = "kitebox.job"
# An agent directory gets its owner file right after mkdtemp; one without it is a crash in
# between, or a directory another job is creating this very moment: give that one a minute.
OWNERLESS_GRACE_SECONDS = 60


@dataclass(frozen=True)
class Reaped:
    containers: tuple[str, ...]  # container names
    agent_dirs: tuple[str, ...]

    def line(self) -> str:
        return f"kitebox: reaped {len(self.containers)} orphan container(s), {len(self.agent_dirs)} agent dir(s)"


def reap_containers(client) -> tuple[str, ...]:
    import docker.errors

    current = boot_id()
    removed = []
    for summary in client.api.containers(all=True, filters={"label": JOB_LABEL}):
        if is_alive(Owner.from_labels(summary.get("Labels") or {}), current):
            continue
        try:
            client.api.remove_container(summary["Id"], force=True)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as error:
            if error.status_code == 409:  # another reaper is removing it right now
                continue
            raise
        removed.append((summary.get("Names") or [summary["Id"][:12]])[0].lstrip("/"))
    return tuple(removed)


def reap_agent_dirs(run_dir: str, now: float | None = None) -> tuple[str, ...]:
    current = boot_id()
    now = time.time() if now is None else now
    removed = []
    for directory in sorted(Path(run_dir).glob("u*/kitebox-*")):
        owner = agents.read_owner(directory)
        if owner is None:
            try:
                if now - directory.lstat().st_mtime < OWNERLESS_GRACE_SECONDS:
                    continue
            except OSError:
                continue
        elif is_alive(owner, current):
            continue
        agents.stop(str(directory))
        if not directory.exists():
            removed.append(str(directory))
    return tuple(removed)


def reap(client, run_dir: str) -> Reaped:
    return Reaped(reap_containers(client), reap_agent_dirs(run_dir))
