"""Box mode's side of the metadata proxy: the role decision, and one job's registration.

The container gets `AWS_CONTAINER_CREDENTIALS_FULL_URI` in its configuration, but its
authorization token only over stdin with the secrets (`AWS_CONTAINER_AUTHORIZATION_TOKEN`, which
botocore reads when there is no token file): a token in the container's config would be in
`docker inspect`. The container's labels carry the token's SHA-256, so the proxy can recover the
registration after a restart and check a registration against the container it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from kitebox.core.checks import Check
from kitebox.core.decision import Decision
from kitebox.core.roles import ROLE_VARIABLE, RoleSession
from kitebox.core.secret import Secret
from kitebox.errors import KiteboxError
from kitebox.proxy import client

TOKEN_VARIABLE = "AWS_CONTAINER_AUTHORIZATION_TOKEN"


def plan(decision: Decision, job_vars: Mapping[str, str], proxy: bool) -> tuple[RoleSession | None, Check]:
    """The job's role session and its check; a role asked for on a queue without the proxy is refused."""
    session, check = client.plan(decision, job_vars)
    if session is not None and not proxy:
        return None, Check(
            ROLE_VARIABLE, "allowed_roles", False,
            f"{ROLE_VARIABLE} asks for {session.role_arn} but this queue runs without the metadata proxy "
            "(KITEBOX_PROXY=off), so no job here can take a role",
        )
    return session, check


@dataclass
class Registration:
    job_id: str
    session: RoleSession | None
    socket_path: str
    token: str = field(repr=False, default="")
    registered: bool = False

    @classmethod
    def prepare(cls, job_id: str, session: RoleSession | None, socket_path: str) -> "Registration":
        """Refuse (ProxyError, one line) unless the proxy answers; then mint the job's token."""
        from pathlib import Path

        client.ensure_running(Path(socket_path))
        return cls(job_id, session, socket_path, client.new_token())

    def labels(self) -> dict[str, str]:
        return client.labels(self.job_id, self.session.role_arn if self.session else None, self.token)

    def container_env(self) -> dict[str, str]:
        # Without a role the SDK must find nothing: an endpoint that answers 404 makes botocore
        # raise, while IMDS through the proxy simply lists no role.
        return {"AWS_CONTAINER_CREDENTIALS_FULL_URI": client.CREDENTIALS_URI} if self.session else {}

    def secret_env(self) -> dict[str, Secret]:
        return {TOKEN_VARIABLE: Secret(self.token)} if self.session else {}

    def register(self, docker_client, container_id: str, network: str) -> None:
        from pathlib import Path

        info = docker_client.api.inspect_container(container_id)
        address = info["NetworkSettings"]["Networks"].get(network, {}).get("IPAddress", "")
        if not address:
            raise client.ProxyError(f"the job container has no address on {network} to register")
        client.register(self.job_id, container_id, address, self.token, self.session, socket_path=Path(self.socket_path))
        self.registered = True

    def deregister(self) -> None:
        from pathlib import Path

        if not self.registered:
            return
        try:
            client.deregister(self.job_id, Path(self.socket_path))
        except KiteboxError:
            pass  # the proxy also forgets the container when Docker reports it gone
