"""The docker SDK around one ContainerSpec; docker errors become one-line DockerErrors.

    create (stdin open, no TTY, log driver "none") → attach (stdin+stdout+stderr, one socket)
    → start → send the secret records and half-close → stream frames to our fds → wait → remove

Attach comes BEFORE start so no output is lost; the log driver is "none" so the job's output is
never written under the engine's data root (attach does not need a log driver); no TTY, so the
two streams stay apart and signals reach the process, not a terminal (buildkite-contract.md: with
`--tty` docker disables signal proxying); `init` gives the job a PID 1 that forwards the stop
signal and reaps zombies. The docker client is built from the agent's DOCKER_* variables only:
a pipeline that sets DOCKER_HOST must not send kitebox, and the secrets, to another engine.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Mapping

from kitebox.box.spec import ContainerSpec
from kitebox.errors import KiteboxError

_HEADER = struct.Struct(">BxxxL")


class DockerError(KiteboxError):
    """The Docker engine refused or failed a request for the job's container."""


def _explain(error: Exception) -> str:
    text = getattr(error, "explanation", None) or str(error)
    return " ".join(str(text).split())[:300]


def docker_client(environ: Mapping[str, str], job_vars: Mapping[str, str], timeout: int = 60):
    import docker

    env = {k: v for k, v in environ.items() if k.startswith("DOCKER_") and k not in job_vars}
    # Never empty: docker-py reads os.environ (job variables included) when given an empty dict.
    env.setdefault("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.DockerClient.from_env(environment=env, timeout=timeout)
        client.api.ping()
        return client
    except docker.errors.DockerException as error:
        raise DockerError(f"cannot reach the Docker engine: {_explain(error)}") from None


def ensure_image(client, image: str, checkpoint) -> bool:
    """Pull `image` when the engine lacks it; True when it pulled. `checkpoint` may cancel."""
    import docker
    from docker.utils import parse_repository_tag

    try:
        client.images.get(image)
        return False
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as error:
        raise DockerError(f"cannot look up image {image}: {_explain(error)}") from None
    repository, tag = parse_repository_tag(image)
    try:
        for _ in client.api.pull(repository, tag or "latest", stream=True, decode=True):
            checkpoint()
        client.images.get(image)
    except docker.errors.DockerException as error:
        raise DockerError(f"cannot pull image {image}: {_explain(error)}") from None
    return True


def write_all(fd: int, data: bytes) -> None:
    """Unbuffered, whole: the agent timestamps lines as they arrive. A closed output is ignored
    (the stream is still drained, so the job never blocks on a full pipe)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError:
            return


def pump(raw: socket.socket, out_fd: int = 1, err_fd: int = 2) -> None:
    """Demultiplex the attach stream (8-byte header: stream, size) onto our stdout and stderr."""
    buffer = bytearray()
    while True:
        chunk = raw.recv(65536)
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= _HEADER.size:
            stream, size = _HEADER.unpack_from(buffer)
            if len(buffer) < _HEADER.size + size:
                break
            payload = bytes(buffer[_HEADER.size : _HEADER.size + size])
            del buffer[: _HEADER.size + size]
            write_all(err_fd if stream == 2 else out_fd, payload)


class JobContainer:
    """One job container; every method translates docker errors."""

    def __init__(self, client, spec: ContainerSpec):
        self._client = client
        self.spec = spec
        self.id: str | None = None

    def _call(self, what: str, function, *args, **kwargs):
        import docker

        try:
            return function(*args, **kwargs)
        except docker.errors.DockerException as error:
            raise DockerError(f"docker {what} {self.spec.name} failed: {_explain(error)}") from None

    def create(self) -> str:
        from docker.types import LogConfig, Mount

        api, spec = self._client.api, self.spec
        host_config = api.create_host_config(
            mounts=[Mount(m.target, m.source, type="bind", read_only=m.read_only) for m in spec.mounts],
            network_mode=spec.network,
            cap_drop=list(spec.cap_drop),
            cap_add=list(spec.cap_add) or None,
            security_opt=list(spec.security_opt),
            nano_cpus=spec.nano_cpus,
            mem_limit=spec.mem_limit,
            group_add=list(spec.group_add) or None,
            init=True,
            log_config=LogConfig(type="none"),
        )
        created = self._call(
            "create",
            api.create_container,
            spec.image,
            command=list(spec.command),
            user=spec.user,
            environment=[f"{k}={v}" for k, v in spec.environment],
            labels=dict(spec.labels),
            name=spec.name,
            working_dir=spec.working_dir,
            stdin_open=True,  # with detach=False this also sets StdinOnce
            tty=False,
            stop_signal=spec.stop_signal,
            host_config=host_config,
            use_config_proxy=False,  # no proxy variables from a docker config file
        )
        self.id = created["Id"]
        return self.id

    def attach(self) -> socket.socket:
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        sock = self._call("attach", self._client.api.attach_socket, self.id, params=params)
        raw = getattr(sock, "_sock", sock)  # SocketIO over the unix socket → the socket itself
        raw.settimeout(None)  # a silent job is not an error: no read timeout on the stream
        return raw

    def start(self) -> None:
        self._call("start", self._client.api.start, self.id)

    def wait(self) -> int:
        return int(self._call("wait", self._client.api.wait, self.id)["StatusCode"])

    def stop(self, timeout: int) -> None:
        """The stop signal, then SIGKILL after `timeout` seconds (the engine does both)."""
        import docker

        try:
            self._client.api.stop(self.id, timeout=timeout)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException:
            self.kill()

    def kill(self) -> None:
        import docker

        try:
            self._client.api.kill(self.id)
        except docker.errors.DockerException:
            pass

    def remove(self) -> None:
        import docker

        if self.id is None:
            return
        try:
            self._client.api.remove_container(self.id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as error:
            raise DockerError(f"docker remove {self.spec.name} failed: {_explain(error)}") from None
