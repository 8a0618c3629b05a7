"""Box mode's operator settings, read once from the agent's environment into a frozen object.

Every KITEBOX_* name here is the operator's (queue configuration): `Settings.from_environ` has
already refused a job whose env file sets one (settings.py), so reading them from the environ
is safe. The one author input, `KITEBOX_JOB_IMAGE`, is read from the JOB's variables and obeyed
only when the operator's allowlist holds it.
"""

from __future__ import annotations

import re
import shlex
import signal
from dataclasses import dataclass
from typing import Mapping

from kitebox.core.checks import Check
from kitebox.errors import ConfigError
from kitebox.settings import parse_flag

DEFAULT_NETWORK = "kitebox-jobs"
DEFAULT_INNER_BOOTSTRAP = "buildkite-agent bootstrap"
DEFAULT_RUN_DIR = "/run/kitebox"
DEFAULT_USER = "2000:2000"  # the `buildkite-agent` user of images/Dockerfile
JOB_IMAGE_VARIABLE = "KITEBOX_JOB_IMAGE"

# Agent defaults (buildkite-contract.md): cancel grace 10 s; signal grace -1 = cancel grace - 1.
DEFAULT_CANCEL_GRACE = 10
_MEMORY = re.compile(r"^[1-9][0-9]*[bkmg]?$", re.IGNORECASE)
_NETWORK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CAPABILITY = re.compile(r"^[A-Z_]+$")


@dataclass(frozen=True)
class BoxSettings:
    image: str
    allowed_images: tuple[str, ...] = ()
    uid: int = 2000
    gid: int = 2000
    cpus: float | None = None
    memory: str | None = None
    allow_docker_socket: bool = False
    network: str = DEFAULT_NETWORK
    network_internal: bool = False
    inner_bootstrap: tuple[str, ...] = tuple(DEFAULT_INNER_BOOTSTRAP.split())
    run_dir: str = DEFAULT_RUN_DIR
    cap_add: tuple[str, ...] = ()
    job_hooks_path: str | None = None  # the operator's hooks the job's bootstrap runs
    # The metadata proxy (issue 4): "required" (default) registers every job with it and refuses
    # to start a container when it does not answer; "off" runs jobs with no AWS credentials at
    # all (the metadata addresses stay rejected by the job network's firewall).
    proxy: bool = True
    proxy_socket: str = "/run/kitebox/proxy/proxy.sock"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "BoxSettings":
        image = environ.get("KITEBOX_IMAGE", "").strip()
        if not image:
            raise ConfigError("KITEBOX_IMAGE is not set: the queue's job image (box mode needs one)")

        def read(name: str, parse, default: str = ""):
            value = environ.get(name, default)
            try:
                return parse(value)
            except ValueError as error:
                raise ConfigError(f"bad kitebox box setting {name}={value!r}: {error}") from None

        uid, gid = read("KITEBOX_USER", _user, DEFAULT_USER)
        hooks = environ.get("KITEBOX_JOB_HOOKS_PATH", environ.get("BUILDKITE_HOOKS_PATH", ""))
        return cls(
            image=image,
            allowed_images=_list(environ.get("KITEBOX_ALLOWED_IMAGES", "")),
            uid=uid,
            gid=gid,
            cpus=read("KITEBOX_CPUS", _cpus),
            memory=read("KITEBOX_MEMORY", _memory),
            allow_docker_socket=read("KITEBOX_ALLOW_DOCKER_SOCKET", parse_flag, "false"),
            network=read("KITEBOX_NETWORK", _network, DEFAULT_NETWORK),
            network_internal=read("KITEBOX_NETWORK_INTERNAL", parse_flag, "false"),
            inner_bootstrap=read("KITEBOX_INNER_BOOTSTRAP", _argv, DEFAULT_INNER_BOOTSTRAP),
            run_dir=environ.get("KITEBOX_RUN_DIR", DEFAULT_RUN_DIR).rstrip("/") or "/",
            cap_add=read("KITEBOX_CAP_ADD", _capabilities),
            job_hooks_path=None if hooks in ("", "none") else hooks,
            proxy=read("KITEBOX_PROXY", _proxy_mode, "required"),
            proxy_socket=environ.get("KITEBOX_PROXY_SOCKET", "/run/kitebox/proxy/proxy.sock"),
        )


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _proxy_mode(value: str) -> bool:
    if value not in ("required", "off"):
        raise ValueError("must be 'required' or 'off'")
    return value == "required"


def _user(value: str) -> tuple[int, int]:
    # Numeric only: a name would be resolved in the image, which the host cannot see, and the
    # host must run the job's ssh-agents as that very uid (agents.py).
    uid, _, gid = value.strip().partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ValueError("not a numeric uid[:gid]")
    return int(uid), int(gid or uid)


def _network(value: str) -> str:
    if not _NETWORK.match(value):
        raise ValueError("not a Docker network name")
    return value


def _argv(value: str) -> tuple[str, ...]:
    argv = tuple(shlex.split(value))
    if not argv:
        raise ValueError("empty")
    return argv


def _cpus(value: str) -> float | None:
    if not value.strip():
        return None
    cpus = float(value)
    if not 0 < cpus <= 1024:
        raise ValueError("not a positive number of CPUs")
    return cpus


def _memory(value: str) -> str | None:
    if not value.strip():
        return None
    if not _MEMORY.match(value.strip()):
        raise ValueError("not a size like 4g or 512m")
    return value.strip().lower()


def _capabilities(value: str) -> tuple[str, ...]:
    caps = tuple(c.upper().removeprefix("CAP_") for c in _list(value))
    for cap in caps:
        if not _CAPABILITY.match(cap) or cap == "ALL":
            raise ValueError(f"{cap!r} is not one capability name")
    return caps


def choose_image(box: BoxSettings, job_vars: Mapping[str, str]) -> tuple[str, Check]:
    """The job's image: the queue's, or the pipeline's request when the allowlist holds it.

    KITEBOX_JOB_IMAGE is a job variable, so the pipeline author's: an image is code that runs
    with the job's secrets, so only the operator's list decides (exact match, no patterns).
    """
    wanted = job_vars.get(JOB_IMAGE_VARIABLE, "").strip()
    if not wanted or wanted == box.image:
        return box.image, Check("KITEBOX_IMAGE", "image", True, f"image {box.image} (queue)")
    if wanted in box.allowed_images:
        return wanted, Check(JOB_IMAGE_VARIABLE, "image", True, f"image {wanted} (allowed override)")
    return box.image, Check(
        JOB_IMAGE_VARIABLE,
        "image",
        False,
        f"image {wanted!r} is not in this queue's KITEBOX_ALLOWED_IMAGES ({len(box.allowed_images)} listed)",
    )


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def signal_grace(environ: Mapping[str, str]) -> int:
    """Seconds kitebox has between the cancel signal and the agent's SIGKILL.

    BUILDKITE_SIGNAL_GRACE_PERIOD_SECONDS; a negative value (default -1) is relative to
    BUILDKITE_CANCEL_GRACE_PERIOD (default 10), as the agent reads it (buildkite-contract.md).
    """
    cancel = _int(environ.get("BUILDKITE_CANCEL_GRACE_PERIOD"))
    cancel = DEFAULT_CANCEL_GRACE if cancel is None or cancel < 0 else cancel
    grace = _int(environ.get("BUILDKITE_SIGNAL_GRACE_PERIOD_SECONDS"))
    if grace is None:
        grace = -1
    return max(0, cancel + grace if grace < 0 else grace)


# What kitebox needs after the container stopped: remove it, stop two agents, remove a dir.
CLEANUP_RESERVE_SECONDS = 1


def stop_timeout(grace: int) -> int:
    """How long the container gets between the stop signal and SIGKILL: the grace, minus what
    kitebox's own clean-up needs before the agent's SIGKILL lands."""
    return max(0, grace - CLEANUP_RESERVE_SECONDS)


def cancel_signal(environ: Mapping[str, str]) -> signal.Signals:
    """BUILDKITE_CANCEL_SIGNAL (set only when not SIGTERM); SIGTERM when absent or unknown."""
    name = environ.get("BUILDKITE_CANCEL_SIGNAL", "").strip().upper()
    if name and not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name] if name else signal.SIGTERM
    except KeyError:
        return signal.SIGTERM
