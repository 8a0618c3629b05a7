"""What survives a proxy restart: a root-only state file on RAM-backed /run.

Labels on the job container say which job it runs and hold the SHA-256 of its token, never the
token (a label is readable by anyone who may `docker inspect`). A hash cannot be turned back into
the token the container already holds in its token file, so the tokens themselves (and the
IMDSv2 signing key) are kept in `<state dir>/proxy-state.json`, mode 0600 in a 0700 directory:
/run is a tmpfs, so nothing reaches a disk and a reboot, which ends every job container anyway,
forgets them. On start the proxy re-registers an entry only if its container still runs, on the
same address, with labels whose job, role and token hash match: nothing lost, nothing invented.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from pathlib import Path

from kitebox.core.roles import RoleSession
from kitebox.core.secret import Secret
from kitebox.proxy.model import Job

FILE_NAME = "proxy-state.json"


class StateFile:
    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / FILE_NAME
        self._lock = threading.Lock()

    def load(self) -> tuple[bytes, list[Job]]:
        """(token key, jobs); a fresh random key and no jobs if there is no usable file."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            key = bytes.fromhex(data["token_key"])
            jobs = [
                Job(
                    job_id=entry["job_id"],
                    container_id=entry["container_id"],
                    address=entry["address"],
                    token=Secret(entry["token"]),
                    session=RoleSession.from_json(entry["session"]) if entry.get("session") else None,
                    refusal=entry.get("refusal"),
                )
                for entry in data.get("jobs", ())
            ]
            return key, jobs
        except (OSError, ValueError, KeyError, TypeError):
            return secrets.token_bytes(32), []

    def save(self, key: bytes, jobs: list[Job]) -> None:
        document = {
            "version": 1,
            "token_key": key.hex(),
            "jobs": [
                {
                    "job_id": j.job_id,
                    "container_id": j.container_id,
                    "address": j.address,
                    "token": j.token.reveal(),
                    "session": j.session.as_json() if j.session else None,
                    "refusal": j.refusal,
                }
                for j in jobs
            ],
        }
        with self._lock:
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            self.directory.mkdir(mode=0o700, exist_ok=True)
            os.chmod(self.directory, 0o700)
            temporary = self.path.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, json.dumps(document).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
