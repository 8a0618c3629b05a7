"""What a fault may leave behind, and the one check every fault test ends with.

The Docker engine, iptables and /proc are shared with other tests (and other engineers' test
sessions) running at the same time, so every check is SCOPED to what the test made: its job ids
or its directories (containers, by label or by mount), the networks it created, the subnets and
bridges of those networks (iptables), and the directories it handed to kitebox (ssh-agents,
kitebox-* socket dirs, temp files).

    scope = Scope(job_ids={...}, roots=[tmp], networks=[...], tokens=[subnet, bridge], tmpdirs=[tmp])
    assert_nothing_left(scope)          # polls (bounded) until clean, then fails listing what is left
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NOTHING: dict[str, list] = {}


@dataclass
class Scope:
    job_ids: set[str] = field(default_factory=set)  # containers labelled kitebox.job=<id>
    roots: list[Path] = field(default_factory=list)  # containers mounting anything under these
    networks: list[str] = field(default_factory=list)  # networks the test created and removed
    tokens: list[str] = field(default_factory=list)  # subnets/bridges that no iptables rule may mention
    tmpdirs: list[Path] = field(default_factory=list)  # TMPDIRs given to kitebox: must end empty
    run_dirs: list[Path] = field(default_factory=list)  # box mode's KITEBOX_RUN_DIR: no u*/kitebox-* left
    allowed_files: set[str] = field(default_factory=set)  # names in a tmpdir the test itself put there


def _docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    return done.stdout if done.returncode == 0 else ""


def containers(scope: Scope) -> list[str]:
    found = []
    ids = _docker("ps", "-aq", "--no-trunc", "--filter", "label=kitebox.job").split()
    if not ids:
        return found
    for info in json.loads(_docker("inspect", *ids) or "[]"):  # one may vanish meanwhile: fine
        labels = (info.get("Config") or {}).get("Labels") or {}
        mounts = [m.get("Source", "") for m in info.get("Mounts") or ()]
        mine = labels.get("kitebox.job") in scope.job_ids or any(
            source.startswith(str(root).rstrip("/") + "/") for root in scope.roots for source in mounts)
        if mine:
            found.append(info.get("Name", info["Id"][:12]).lstrip("/"))
    return found


def networks(scope: Scope) -> list[str]:
    if not scope.networks:
        return []
    existing = set(_docker("network", "ls", "--format", "{{.Name}}").split())
    return [name for name in scope.networks if name in existing]


def iptables_rules(scope: Scope) -> list[str]:
    if not scope.tokens:
        return []
    lines = []
    for table in ("filter", "nat"):
        done = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, timeout=30)
        lines += [f"{table}: {line}" for line in done.stdout.splitlines()
                  if line.startswith(("-A", ":")) and any(token in line for token in scope.tokens)]
    return lines


def _argv(pid: str) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def ssh_agents(scope: Scope) -> list[int]:
    places = [str(p).encode() for p in (*scope.tmpdirs, *scope.run_dirs, *scope.roots)]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = _argv(entry)
        if argv and os.path.basename(argv[0]) == b"ssh-agent" and any(p in a for a in argv for p in places):
            found.append(int(entry))
    return found


def socket_dirs(scope: Scope) -> list[str]:
    found = []
    for tmp in scope.tmpdirs:
        found += [str(p) for p in Path(tmp).glob("kitebox-*")]
    for run_dir in scope.run_dirs:
        found += [str(p) for p in Path(run_dir).glob("u*/kitebox-*")]
    return sorted(found)


def temp_files(scope: Scope) -> list[str]:
    found = []
    for tmp in scope.tmpdirs:
        if Path(tmp).exists():
            found += [str(p) for p in Path(tmp).iterdir() if p.name not in scope.allowed_files]
    return sorted(found)


def check(scope: Scope) -> dict[str, list]:
    """Everything of this scope still there; {} when nothing is."""
    found = {
        "containers": containers(scope),
        "networks": networks(scope),
        "iptables": iptables_rules(scope),
        "ssh-agents": ssh_agents(scope),
        "socket-dirs": socket_dirs(scope),
        "temp-files": temp_files(scope),
    }
    return {kind: items for kind, items in found.items() if items}


def assert_nothing_left(scope: Scope, timeout: float = 15.0) -> None:
    """Poll (at most `timeout` s: a container's removal or an agent's exit may lag) until clean."""
    deadline = time.monotonic() + timeout
    left = check(scope)
    while left and time.monotonic() < deadline:
        time.sleep(0.25)
        left = check(scope)
    assert left == NOTHING, f"left behind: {left}"
