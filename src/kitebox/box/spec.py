"""The job container, as data: a pure function from the decision's outcome to a frozen spec.

What goes in the container's CONFIG (which `docker inspect` shows and the engine stores on
disk): the job's variables, the agent-added variables the bootstrap needs, the NAMES of the
secrets (in BUILDKITE_REDACTED_VARS), container paths. What never does: a secret value, the
agent's per-job access token (both go over stdin, delivery.py), the agent's own token.

Container layout:
    /run/kitebox/lib     kitebox's entry step and hook shim (package files, read-only)
    /run/kitebox/ssh     this job's ssh-agent sockets (read-only; connecting needs no write)
    /run/kitebox/bin     the host's buildkite-agent binary, read-only, first on PATH
    <build dir>          per agent and pipeline, persistent, at the same path as on the host
    <plugins path>       a per agent and pipeline directory of the host's plugins path
    <operator hooks>     the operator's hooks, read-only, at their host path
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from kitebox.box.config import BoxSettings, stop_timeout
from kitebox.box.owner import Owner
from kitebox.core import shell
from kitebox.core.identity import JobIdentity
from kitebox.errors import BadInputError
from kitebox.hook import GLOBAL_SOCK, REPO_SOCK

LIB = "/run/kitebox/lib"
SSH = "/run/kitebox/ssh"
BIN = "/run/kitebox/bin"
DOCKER_SOCKET = "/var/run/docker.sock"
ENTRY = f"{LIB}/entry.sh"

# Added by the agent to the bootstrap's environment (buildkite-contract.md) and passed on as
# they are. The rest of that list is rewritten below (paths, grace) or never passed (tokens).
PASSED_AGENT_VARIABLES = (
    "BUILDKITE_AGENT_ENDPOINT",
    "BUILDKITE_AGENT_PID",
    "BUILDKITE_BUILD_PATH",
    "BUILDKITE_CANCEL_SIGNAL",
    "BUILDKITE_PTY",
    "BUILDKITE_SHELL",
    "BUILDKITE_IGNORED_ENV",
)
# Never in the container's config: the first is a per-job secret (it goes over stdin), the rest
# are host paths or host-only settings that mean nothing in the container.
NEVER_IN_CONFIG = frozenset(
    {
        "BUILDKITE_AGENT_ACCESS_TOKEN",
        "BUILDKITE_AGENT_TOKEN",
        "BUILDKITE_ENV_FILE",
        "BUILDKITE_ENV_JSON_FILE",
        "BUILDKITE_BOOTSTRAP_SCRIPT_PATH",
        "BUILDKITE_SOCKETS_PATH",
        "BUILDKITE_HOOKS_PATH",
        "BUILDKITE_BIN_PATH",
    }
)
ACCESS_TOKEN = "BUILDKITE_AGENT_ACCESS_TOKEN"
# The agent's default patterns (buildkite-contract.md), used when the agent passed none.
AGENT_DEFAULT_REDACTED = (
    "*_PASSWORD,*_SECRET,*_TOKEN,*_PRIVATE_KEY,*_SSH_KEY,*_ACCESS_KEY,*_SECRET_KEY,"
    "*_CONNECTION_STRING,*_API_KEY"
)
_NAME = re.compile(r"[^a-zA-Z0-9_.-]")


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class HostPaths:
    """Host paths kitebox prepared for this job (None: not mounted)."""

    build_path: str
    build_dir: str
    files_dir: str
    plugins_path: str | None = None
    plugins_dir: str | None = None
    hooks_dir: str | None = None
    agent_dir: str | None = None
    agent_binary: str | None = None
    docker_socket: str | None = None
    docker_socket_gid: int | None = None


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...]
    user: str
    environment: tuple[tuple[str, str], ...]
    mounts: tuple[Mount, ...]
    labels: tuple[tuple[str, str], ...]
    network: str
    working_dir: str
    stop_signal: str
    cap_drop: tuple[str, ...] = ("ALL",)
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ("no-new-privileges",)
    nano_cpus: int | None = None
    mem_limit: str | None = None
    group_add: tuple[str, ...] = ()

    def env(self) -> dict[str, str]:
        return dict(self.environment)


def container_name(job_id: str) -> str:
    """`kitebox-<job id>`; the job id is author input, so only Docker's name characters stay."""
    return "kitebox-" + (_NAME.sub("-", job_id)[:64] or "job")


def environment(
    environ: Mapping[str, str],
    job_vars: Mapping[str, str],
    secret_names: Iterable[str],
    paths: HostPaths,
    sockets: Mapping[str, str],
    keep_repo_key: bool,
    grace: int,
) -> dict[str, str]:
    """The container's configured environment. `sockets` maps purpose → socket file name."""
    secrets = list(secret_names)
    env = {k: v for k, v in job_vars.items() if k not in NEVER_IN_CONFIG and k not in secrets}
    env.update({k: environ[k] for k in PASSED_AGENT_VARIABLES if k in environ})
    redacted = environ.get("BUILDKITE_REDACTED_VARS", AGENT_DEFAULT_REDACTED)
    env["BUILDKITE_REDACTED_VARS"] = shell.append_redacted(redacted, secrets)
    # The inner bootstrap gets the time kitebox gives the container, less a second for itself.
    timeout = stop_timeout(grace)
    env["BUILDKITE_CANCEL_GRACE_PERIOD"] = str(timeout)
    env["BUILDKITE_SIGNAL_GRACE_PERIOD_SECONDS"] = str(max(0, timeout - 1))
    env["BUILDKITE_BUILD_PATH"] = paths.build_path
    # The mounted directory, whatever the author put in the job's env for it.
    env["BUILDKITE_BUILD_CHECKOUT_PATH"] = paths.build_dir
    if paths.plugins_dir and paths.plugins_path:
        env["BUILDKITE_PLUGINS_PATH"] = paths.plugins_path
    if paths.agent_binary:
        env["BUILDKITE_BIN_PATH"] = BIN
    for purpose, variable in (("repo", REPO_SOCK), ("global", GLOBAL_SOCK)):
        env.pop(variable, None)
        if purpose in sockets:
            env[variable] = f"{SSH}/{sockets[purpose]}"
    env["KITEBOX_KEEP_REPO_KEY"] = "true" if keep_repo_key else "false"
    env.pop("KITEBOX_OPERATOR_HOOKS_PATH", None)
    if paths.hooks_dir:
        env["KITEBOX_OPERATOR_HOOKS_PATH"] = paths.hooks_dir
    for name, value in env.items():
        if "\x00" in value:
            raise BadInputError(f"job variable {name} holds a NUL byte; it cannot be an environment variable")
    return env


def mounts(paths: HostPaths) -> tuple[Mount, ...]:
    out = [Mount(paths.files_dir, LIB), Mount(paths.build_dir, paths.build_dir, read_only=False)]
    if paths.plugins_dir and paths.plugins_path:
        out.append(Mount(paths.plugins_dir, paths.plugins_path, read_only=False))
    if paths.hooks_dir:
        out.append(Mount(paths.hooks_dir, paths.hooks_dir))
    if paths.agent_dir:
        out.append(Mount(paths.agent_dir, SSH))
    if paths.agent_binary:
        out.append(Mount(paths.agent_binary, f"{BIN}/buildkite-agent"))
    if paths.docker_socket:
        out.append(Mount(paths.docker_socket, DOCKER_SOCKET))
    return tuple(out)


def container_spec(
    *,
    identity: JobIdentity,
    box: BoxSettings,
    image: str,
    env: Mapping[str, str],
    paths: HostPaths,
    owner: Owner,
    stop_signal: str,
    extra_labels: Mapping[str, str] | None = None,
) -> ContainerSpec:
    labels = {**(extra_labels or {}), "kitebox.job": identity.job_id, "kitebox.pipeline": identity.pipeline_slug,
              **owner.labels()}
    groups = (str(paths.docker_socket_gid),) if paths.docker_socket and paths.docker_socket_gid is not None else ()
    return ContainerSpec(
        name=container_name(identity.job_id),
        image=image,
        # Through bash, so the entry step needs no executable bit wherever kitebox is installed.
        command=("/bin/bash", ENTRY, *box.inner_bootstrap),
        user=f"{box.uid}:{box.gid}",
        environment=tuple(sorted(env.items())),
        mounts=mounts(paths),
        labels=tuple(sorted(labels.items())),
        network=box.network,
        working_dir=paths.build_path,
        stop_signal=stop_signal,
        # A non-root job holds no capability anyway; dropping ALL also empties the bounding
        # set, so nothing in the image (file capabilities, setuid) can regain one. NET_RAW in
        # particular would let a job forge another container's address (issue 3).
        cap_drop=("ALL",),
        cap_add=box.cap_add,
        security_opt=("no-new-privileges",),
        nano_cpus=int(box.cpus * 1e9) if box.cpus else None,
        mem_limit=box.memory,
        group_add=groups,
    )
