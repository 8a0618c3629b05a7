"""What box mode calls: talk to the proxy over its root-only socket, and prepare a job container.

    ensure_running()                        refuse to start a job container without a proxy
    plan(identity, decision, job_env)       which role (core.roles.choose_role) and its session
    new_token(), labels(...), container_env(token_file)
    register(...) / deregister(job_id)

The integration, in order (box mode):
 1. ensure_running(); role, check = plan(...); if not check.passed: print check.line(), refuse.
 2. token = new_token(); write it to a 0400 file owned by the job user on a tmpfs, bind it
    read-only into the container; docker create with labels(job, role, token) and
    container_env(<path inside the container>).
 3. docker start; register(job_id, container_id, address, token, session, wait=5.0).
 4. at the end: deregister(job_id) (the proxy also forgets the container when Docker says it died).
"""

from __future__ import annotations

import json
import secrets
import socket
from pathlib import Path
from typing import Mapping

from kitebox.core.checks import Check
from kitebox.core.decision import Decision
from kitebox.core.roles import ROLE_VARIABLE, RoleSession, choose_role, role_session
from kitebox.errors import KiteboxError
from kitebox.proxy.docker import LABEL_JOB, LABEL_ROLE, LABEL_TOKEN
from kitebox.proxy.model import token_sha256

DEFAULT_SOCKET = Path("/run/kitebox/proxy/proxy.sock")
CREDENTIALS_URI = "http://169.254.170.2/v1/credentials"


class ProxyError(KiteboxError):
    """The proxy is not running, or refused a registration; the job container must not start."""


def call(message: dict, socket_path: Path = DEFAULT_SOCKET, timeout: float = 10.0) -> dict:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(json.dumps(message).encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except OSError as error:
        raise ProxyError(
            f"the kitebox proxy does not answer on {socket_path} ({error.strerror or error}); "
            "start it (systemctl start kitebox-proxy) before running jobs"
        ) from None
    try:
        return json.loads(answer)
    except ValueError:
        raise ProxyError("the kitebox proxy sent an unreadable answer") from None


def ensure_running(socket_path: Path = DEFAULT_SOCKET, timeout: float = 2.0) -> None:
    """Raise ProxyError unless the proxy answers: box mode then refuses to start the container."""
    answer = call({"op": "ping"}, socket_path, timeout)
    if not answer.get("ok"):
        raise ProxyError(f"the kitebox proxy is not ready: {answer.get('error', 'no reason given')}")


def plan(decision: Decision, job_env: Mapping[str, str]) -> tuple[RoleSession | None, Check]:
    """The job's role session (None: no credentials) and the Check to show or refuse with."""
    arn, check = choose_role(job_env.get(ROLE_VARIABLE, ""), decision.roles)
    return (role_session(arn, decision.identity) if arn else None), check


def new_token() -> str:
    return secrets.token_urlsafe(32)


def labels(job_id: str, role_arn: str | None, token: str) -> dict[str, str]:
    """Container labels the proxy checks a registration (and a recovery) against."""
    return {LABEL_JOB: job_id, LABEL_ROLE: role_arn or "", LABEL_TOKEN: token_sha256(token)}


def container_env(token_file: str) -> dict[str, str]:
    """The job container's AWS variables: the container endpoint first in the SDK chain, IMDS as it is."""
    return {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": CREDENTIALS_URI,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": token_file,
    }


def register(
    job_id: str,
    container_id: str,
    address: str,
    token: str,
    session: RoleSession | None,
    refusal: str | None = None,
    wait: float = 5.0,
    socket_path: Path = DEFAULT_SOCKET,
) -> dict:
    answer = call({
        "op": "register", "job_id": job_id, "container_id": container_id, "address": address,
        "token": token, "session": session.as_json() if session else None, "refusal": refusal, "wait": wait,
    }, socket_path, timeout=wait + 10)
    if not answer.get("ok"):
        raise ProxyError(f"the kitebox proxy refused job {job_id}: {answer.get('error')}")
    return answer


def deregister(job_id: str, socket_path: Path = DEFAULT_SOCKET) -> bool:
    answer = call({"op": "deregister", "job_id": job_id}, socket_path)
    return bool(answer.get("found"))
