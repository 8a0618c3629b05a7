"""The job's directories on the host: its build directory and its plugins directory.

Both are per agent and per pipeline, and persistent (checkouts and plugin clones are reused, as
with the agent's own layout `<build path>/<agent name>/<org>/<pipeline>`). The organisation and
pipeline slugs and the agent name come from job variables, so each part is reduced to
`[A-Za-z0-9_-]`: no `/`, no `..`, nothing that leaves the operator's directory. Parents are
created by kitebox (root-owned); only the leaf is handed to the container user, and only the
leaf is mounted, so a job can never plant a symlink where another pipeline's directory goes.

Plugins get the same per-pipeline split: one shared plugins directory, writable by every job,
would let one pipeline rewrite a plugin another pipeline then runs with its own secrets.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kitebox.core.identity import JobIdentity
from kitebox.errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def part(value: str) -> str:
    """One path component from author input: never empty, never `.`/`..`, never a `/`."""
    return _UNSAFE.sub("-", value) or "-"


def job_dir(root: str, identity: JobIdentity) -> str:
    """`<root>/<agent name>/<org>/<pipeline>`, each part sanitised."""
    if not os.path.isabs(root):
        raise ConfigError(f"{root!r} is not an absolute path")
    parts = (identity.agent_name, identity.organization_slug, identity.pipeline_slug)
    return os.path.join(os.path.normpath(root), *(part(p) for p in parts))


def prepare(directory: str, uid: int, gid: int) -> str:
    """Create `directory` (parents as the current user, 0755) and give the leaf to uid:gid."""
    path = Path(directory)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        path.mkdir(mode=0o755)
    except FileExistsError:
        pass
    info = path.lstat()
    if path.is_symlink() or not path.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory")
    if (info.st_uid, info.st_gid) != (uid, gid) and os.geteuid() == 0:
        os.lchown(directory, uid, gid)
    return directory
