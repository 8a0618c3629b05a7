"""`kitebox job`: one Buildkite job, decided on the host and run in its own container.

    1. access      evaluate → resolve → audit (the core, as hook mode); refused → one line per
                   refusal, exit 94; no container, no ssh-agent, no build directory
    2. engine      meanwhile, in a thread (it waits on Docker while the main thread waits on
                   SSM): the reaper first (orphans of SIGKILLed kitebox processes), then the job
                   network and its metadata firewall (fail closed)
    3. host side   the image, build and plugin directories, ssh-agents as the container user
    4. container   create → attach → start → secrets over stdin → stream → wait
    5. clean-up    always: container, agents, sockets; the job's exit code is returned unchanged

Messages are kitebox's own `--- ` log groups on stderr, written unbuffered; they never hold a
value. The agent does not redact what the bootstrap script itself prints (buildkite-contract.md).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from pathlib import Path
from typing import Callable, Mapping

from kitebox import hook
from kitebox.adapters.aws import ParameterStore, SecretResolver
from kitebox.box import agents, paths
from kitebox.box import proxied
from kitebox.box.config import BoxSettings, cancel_signal, choose_image, signal_grace, stop_timeout
from kitebox.box.container import JobContainer, docker_client, ensure_image, pump, write_all
from kitebox.box.delivery import records, send
from kitebox.box.network import ensure_network
from kitebox.box.owner import Owner
from kitebox.box.reaper import Reaped, reap_agent_dirs, reap_containers
from kitebox.box.signals import Cancellation, Cancelled
from kitebox.box.spec import ACCESS_TOKEN, HostPaths, container_spec, environment
from kitebox.core.decision import Decision
from kitebox.core.identity import JobIdentity
from kitebox.core.secret import Secret
from kitebox.errors import BadInputError, ConfigError, KiteboxError
from kitebox.evaluate import audit, evaluate, resolve_values
from kitebox.settings import Settings

FILES = Path(__file__).resolve().parent / "files"


def say(line: str) -> None:
    write_all(2, (line + "\n").encode("utf-8", "replace"))


def run(
    environ: Mapping[str, str],
    settings: Settings,
    job_vars: Mapping[str, str],
    store: ParameterStore,
    make_resolver: Callable[[], SecretResolver],
) -> int:
    box = BoxSettings.from_environ(environ)
    grace = signal_grace(environ)
    with Cancellation(cancel_signal(environ), say) as cancel:
        engine = _Engine(environ, job_vars, box)
        engine.start()
        try:
            say("--- :lock: kitebox: checking access")
            identity = JobIdentity.from_environ(environ)
            decision, values, image, session = _decide(identity, box, settings, job_vars, store, make_resolver)
            cancel.checkpoint()
            job = _Job(environ, settings, job_vars, box, identity, grace, cancel)
            return job.run(engine, decision, values, image, session)
        except Cancelled as cancelled:
            say(f"kitebox: cancelled ({cancelled}) before the job container started")
            return cancel.exit_code(None)
        finally:
            engine.close()


class _Engine(threading.Thread):
    """The Docker side that does not depend on the decision, done while SSM answers.

    It never prints (the main thread owns the log) and never raises: a failure is kept and
    raised by `ready()` only if the job is allowed, so a refusal is never hidden behind it.
    Orphan agent dirs are reaped by the main thread after it (stopping them forks a helper,
    and fork and threads do not mix).
    """

    def __init__(self, environ: Mapping[str, str], job_vars: Mapping[str, str], box: BoxSettings):
        super().__init__(name="kitebox-engine", daemon=True)
        self._environ, self._job_vars, self._box = environ, job_vars, box
        self.client = None
        self.reaped_containers: tuple[str, ...] = ()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.client = docker_client(self._environ, self._job_vars)
            self.reaped_containers = reap_containers(self.client)
            lock = Path(self._box.run_dir) / "network.lock"
            ensure_network(self.client, self._box.network, self._box.network_internal, lock)
        except BaseException as error:  # handed to the main thread by ready()
            self.error = error

    def ready(self, checkpoint: Callable[[], None]):
        while self.is_alive():
            self.join(timeout=0.2)
            checkpoint()
        if self.error is not None:
            raise self.error
        return self.client

    def close(self) -> None:
        self.join(timeout=30)
        if self.client is not None:
            self.client.close()


def _decide(identity, box, settings, job_vars, store, make_resolver):
    if not identity.job_id:
        raise BadInputError("BUILDKITE_JOB_ID is not set: kitebox job runs as the agent's bootstrap-script")
    decision = evaluate(identity, settings, store)
    decision, values = resolve_values(decision, make_resolver)
    image, image_check = choose_image(box, job_vars)
    session, role_check = proxied.plan(decision, job_vars, box.proxy)
    decision = dataclasses.replace(decision, checks=decision.checks + (image_check, role_check))
    audit(decision, settings, "box")
    if not decision.allowed:
        raise hook.refuse(decision)
    return decision, values, image, session


class _Job:
    """The host-side resources of one job, so that clean-up knows exactly what exists."""

    def __init__(self, environ, settings, job_vars, box: BoxSettings, identity: JobIdentity, grace: int, cancel):
        self.environ, self.settings, self.job_vars, self.box = environ, settings, job_vars, box
        self.identity, self.grace, self.cancel = identity, grace, cancel
        self.owner = Owner.me()
        self.client = None
        self.container: JobContainer | None = None
        self.agent_dir: str | None = None
        self.stream: socket.socket | None = None
        self.registration: proxied.Registration | None = None

    def run(self, engine: _Engine, decision: Decision, values: dict[str, Secret], image: str, session) -> int:
        try:
            return self._run(engine, decision, values, image, session)
        finally:
            self._clean_up()

    def _run(self, engine: _Engine, decision: Decision, values: dict[str, Secret], image: str, session) -> int:
        box, cancel = self.box, self.cancel
        if box.proxy:
            # Fail closed: no proxy, no job container (it could not get its role, and nothing
            # else may answer its metadata requests).
            self.registration = proxied.Registration.prepare(self.identity.job_id, session, box.proxy_socket)
        say("--- :docker: kitebox: preparing the job container")
        self.client = engine.ready(cancel.checkpoint)
        reaped = Reaped(engine.reaped_containers, reap_agent_dirs(box.run_dir))
        if reaped.containers or reaped.agent_dirs:
            say(reaped.line())
        if ensure_image(self.client, image, cancel.checkpoint):
            say(f"kitebox: pulled {image}")
        host = self._host_paths()
        cancel.checkpoint()
        sockets: dict[str, str] = {}
        if decision.keys:
            keys = {k.purpose: (k.key, k.parameter) for k in decision.keys}
            started = agents.start(box.run_dir, self.identity.job_id, keys, box.uid, box.gid, self.owner)
            self.agent_dir = started.directory
            sockets = dict(started.sockets)
            host = dataclasses.replace(host, agent_dir=started.directory)
        names = ", ".join(values) or "none"
        keys_text = ", ".join(k.purpose for k in decision.keys) or "none"
        say(f"kitebox: {len(values)} secret(s) [{names}]; deploy keys: {keys_text}; image {image}")
        if host.docker_socket:
            say(f":warning: kitebox: this queue mounts the Docker socket into the job ({host.docker_socket})")
        env = environment(
            self.environ, self.job_vars, values, host, sockets, self.settings.keep_repo_key_after_checkout, self.grace
        )
        if self.registration is not None:
            env.update(self.registration.container_env())
        spec = container_spec(
            identity=self.identity,
            box=box,
            image=image,
            env=env,
            paths=host,
            owner=self.owner,
            stop_signal=cancel_signal(self.environ).name,
            extra_labels=self.registration.labels() if self.registration else None,
        )
        payload = dict(values)
        if self.environ.get(ACCESS_TOKEN):
            payload[ACCESS_TOKEN] = Secret(self.environ[ACCESS_TOKEN])
        if self.registration is not None:
            payload.update(self.registration.secret_env())
        self.container = JobContainer(self.client, spec)
        cancel.checkpoint()
        self.container.create()
        self.stream = self.container.attach()
        cancel.checkpoint()
        say(f"--- :docker: kitebox: starting job container {spec.name}")
        self.container.start()
        cancel.running(lambda: self.container.stop(stop_timeout(self.grace)))
        if self.registration is not None:
            # Before the secrets go over stdin, so the job cannot run before its role is known.
            self.registration.register(self.client, self.container.id, box.network)
        try:
            send(self.stream, records(payload))
        except OSError:
            pass  # the entry step is gone already: its output and exit status say why
        pump(self.stream)
        status = self.container.wait()
        if cancel.requested is not None:
            return cancel.exit_code(status)
        return status

    def _host_paths(self) -> HostPaths:
        environ, box = self.environ, self.box
        build_path = environ.get("BUILDKITE_BUILD_PATH", "")
        if not build_path:
            raise ConfigError("BUILDKITE_BUILD_PATH is not set (the agent sets it for its bootstrap-script)")
        build_dir = paths.prepare(paths.job_dir(build_path, self.identity), box.uid, box.gid)
        plugins_path = environ.get("BUILDKITE_PLUGINS_PATH") or None
        plugins_dir = None
        if plugins_path:
            plugins_dir = paths.prepare(paths.job_dir(plugins_path, self.identity), box.uid, box.gid)
        binary = os.path.join(environ.get("BUILDKITE_BIN_PATH", ""), "buildkite-agent")
        hooks = box.job_hooks_path if box.job_hooks_path and os.path.isdir(box.job_hooks_path) else None
        docker_socket, gid = None, None
        if box.allow_docker_socket:
            docker_socket = _docker_socket(environ, self.job_vars)
            gid = os.stat(docker_socket).st_gid
        return HostPaths(
            build_path=os.path.normpath(build_path),
            build_dir=build_dir,
            files_dir=str(FILES),
            plugins_path=plugins_path and os.path.normpath(plugins_path),
            plugins_dir=plugins_dir,
            hooks_dir=hooks,
            agent_binary=binary if environ.get("BUILDKITE_BIN_PATH") and os.path.isfile(binary) else None,
            docker_socket=docker_socket,
            docker_socket_gid=gid,
        )

    def _clean_up(self) -> None:
        problems = []
        if self.registration is not None:
            self.registration.deregister()
        if self.stream is not None:
            self.stream.close()
        if self.container is not None:
            try:
                self.container.remove()
            except KiteboxError as error:
                problems.append(str(error))
        if self.agent_dir is not None:
            try:
                agents.stop(self.agent_dir)
            except KiteboxError as error:
                problems.append(str(error))
        self.cancel.join(timeout=1)
        if problems:
            # The job's own exit status stands; the reaper removes the rest at the next job.
            say(f"kitebox: clean-up incomplete: {problems[0]}")


def _docker_socket(environ: Mapping[str, str], job_vars: Mapping[str, str]) -> str:
    host = environ.get("DOCKER_HOST", "") if "DOCKER_HOST" not in job_vars else ""
    path = host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"
    if not os.path.exists(path):
        raise ConfigError(f"KITEBOX_ALLOW_DOCKER_SOCKET=true but there is no Docker socket at {path}")
    return path
