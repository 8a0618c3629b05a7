"""Which kitebox process owns a container or an agent directory, and whether it still runs.

A pid alone is not an identity: after a reboot, or once the pid is reused, another process
holds it. So an owner is (pid, the process's start time in clock ticks since boot, boot id);
it is alive only when all three still match.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    return BOOT_ID.read_text().strip()


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (starttime), or None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19]


@dataclass(frozen=True)
class Owner:
    pid: int
    start: str
    boot: str

    @classmethod
    def me(cls) -> "Owner":
        pid = os.getpid()
        return cls(pid, start_time(pid) or "", boot_id())

    def labels(self) -> dict[str, str]:
        return {"kitebox.pid": str(self.pid), "kitebox.pid-start": self.start, "kitebox.boot-id": self.boot}

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> "Owner | None":
        try:
            return cls(int(labels["kitebox.pid"]), labels.get("kitebox.pid-start", ""), labels["kitebox.boot-id"])
        except (KeyError, ValueError):
            return None

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "start": self.start, "boot": self.boot})

    @classmethod
    def from_json(cls, text: str) -> "Owner | None":
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["start"]), str(data["boot"]))
        except (ValueError, KeyError, TypeError):
            return None


def is_alive(owner: Owner | None, current_boot: str, start_of=start_time) -> bool:
    """True when `owner` is a process running now (same boot, same pid, same start time).

    An unreadable owner counts as dead: kitebox always writes one, so there is no live owner
    to protect. `start_of` is injectable so the rule can be tested without processes.
    """
    if owner is None or owner.boot != current_boot:
        return False
    started = start_of(owner.pid)
    if started is None:
        return False
    return not owner.start or started == owner.start
