"""Docker behind two small pieces: inspecting a container, and following its events.

The proxy trusts a registration only as far as Docker confirms it: the container runs, sits on
the job network at the given address, and carries the labels box mode set at create time
(`kitebox.job`, `kitebox.role`, `kitebox.token-sha256`: the token's hash, never the token).
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

LABEL_JOB = "kitebox.job"
LABEL_ROLE = "kitebox.role"
LABEL_TOKEN = "kitebox.token-sha256"


@dataclass(frozen=True)
class ContainerFacts:
    id: str
    pid: int
    running: bool
    addresses: tuple[tuple[str, str], ...]  # (network name, IPv4 address)
    labels: tuple[tuple[str, str], ...]

    def address_on(self, network: str) -> str | None:
        return dict(self.addresses).get(network)

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)


class DockerError(Exception):
    """Docker could not answer; the message is one line."""


class Docker:
    def __init__(self, client=None):
        import docker

        self._client = client or docker.from_env(timeout=10)

    def inspect(self, container_id: str) -> ContainerFacts | None:
        import docker

        try:
            found = self._client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as error:
            raise DockerError(f"docker inspect {container_id[:12]} failed: {error}") from None
        networks = found.get("NetworkSettings", {}).get("Networks") or {}
        return ContainerFacts(
            id=found["Id"],
            pid=int(found["State"].get("Pid") or 0),
            running=bool(found["State"].get("Running")),
            addresses=tuple((name, net.get("IPAddress", "")) for name, net in sorted(networks.items())),
            labels=tuple(sorted((found["Config"].get("Labels") or {}).items())),
        )

    def labelled(self) -> list[str]:
        """Ids of running containers that carry the kitebox.job label (recovery after a restart)."""
        return [c["Id"] for c in self._client.api.containers(filters={"label": LABEL_JOB, "status": "running"})]

    def network(self, name: str) -> tuple[str, str, str]:
        """(bridge interface, subnet, gateway) of a bridge network, e.g. the job network."""
        import docker

        try:
            found = self._client.api.inspect_network(name)
        except docker.errors.DockerException as error:
            raise DockerError(f"docker network {name!r}: {error}") from None
        config = (found.get("IPAM", {}).get("Config") or [{}])[0]
        bridge = (found.get("Options") or {}).get("com.docker.network.bridge.name") or f"br-{found['Id'][:12]}"
        if not config.get("Subnet"):
            raise DockerError(f"docker network {name!r} has no IPv4 subnet")
        # With --subnet and no --gateway, Docker takes the first host address and does not say so.
        gateway = config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
        return bridge, config["Subnet"], gateway

    def events(self, stop: threading.Event) -> Iterator[dict]:
        """Container and network events, until `stop` is set (the stream is closed then)."""
        stream = self._client.events(decode=True, filters={"type": ["container", "network"]})
        closer = threading.Thread(target=lambda: (stop.wait(), stream.close()), daemon=True)
        closer.start()
        try:
            yield from stream
        except Exception:  # the stream closed under us: that is how stop() ends it
            if not stop.is_set():
                raise

    def close(self) -> None:
        self._client.close()


# Container events after which the container no longer runs, or no longer has its address.
_GONE = frozenset({"die", "stop", "destroy"})  # not "kill": a signal may not be fatal


def follow_events(docker: Docker, stop: threading.Event, forget: Callable[[str, str], None]) -> None:
    """Call forget(container id, why) for every container that dies or leaves a network.

    Housekeeping: the ownership check in registry.py is what guards each request; this makes
    dead registrations go away promptly and frees their cache entries. Reconnects after errors.
    """
    while not stop.is_set():
        try:
            for event in docker.events(stop):
                kind, action = event.get("Type"), event.get("Action", "")
                actor = event.get("Actor", {})
                if kind == "container" and action in _GONE:
                    forget(actor.get("ID", ""), action)
                elif kind == "network" and action == "disconnect":
                    forget(actor.get("Attributes", {}).get("container", ""), "network disconnect")
        except Exception:
            stop.wait(1.0)
