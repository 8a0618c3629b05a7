"""What the proxy passes around: a registered job, its credentials, one request, one answer.

Frozen and free of I/O, so that `handler.handle` can be tested as a table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from kitebox.core.roles import RoleSession
from kitebox.core.secret import Secret

IMDS, ECS = "imds", "ecs"
EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # what botocore parses (aws-credentials.md)
# botocore extends IMDS credentials with <= 15 min + 2..10 min left: never serve fewer than this.
MIN_SERVED_SECONDS = 25 * 60


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime(EXPIRATION_FORMAT)


def token_sha256(token: str) -> str:
    """What a container label holds instead of the token itself."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Job:
    """One registered job container. `generation` grows with every registration on the proxy."""

    job_id: str
    container_id: str
    address: str
    token: Secret = field(repr=False)  # what the container endpoint's Authorization must equal
    session: RoleSession | None = None  # None: no role, so no credentials at all
    refusal: str | None = None  # a refused role request: the one line naming the rule
    generation: int = 0

    @property
    def role_arn(self) -> str | None:
        return self.session.role_arn if self.session else None

    @property
    def role_name(self) -> str | None:
        return self.session.role_arn.rsplit("/", 1)[-1] if self.session else None


@dataclass(frozen=True)
class Credentials:
    """Temporary credentials from STS; the secret parts are wrapped so they never print."""

    access_key_id: str
    secret_access_key: Secret = field(repr=False)
    token: Secret = field(repr=False)
    expiration: float  # epoch seconds
    last_updated: float
    role_arn: str


@dataclass(frozen=True)
class Unavailable:
    """Why there are no credentials to serve (STS failed, still fetching, too close to expiry)."""

    reason: str


@dataclass(frozen=True)
class Request:
    endpoint: str  # IMDS or ECS: which redirected address the request came in on
    method: str
    target: str  # the request target as sent, e.g. /latest/meta-data/iam/info
    headers: tuple[tuple[str, str], ...]  # names lower-cased
    source: str  # the peer's IP address

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class Forward:
    """Ask the server to fetch this allowlisted path from the upstream IMDS (token, no XFF)."""

    path: str


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()
    forward: Forward | None = None
    # what the metrics count this answer as: "credentials", "token", "refused", "forward", ...
    kind: str = "other"


class RegistryView(Protocol):
    """What `handle` may ask about the world; the real one checks ownership of the address."""

    def job_at(self, address: str) -> Job | None:
        """The job registered at `address`, only if its container still holds that address."""

    def credentials(self, job: Job) -> Credentials | Unavailable:
        """The job's cached credentials, never an STS call on this path unless the cache is cold."""
