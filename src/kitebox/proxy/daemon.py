"""The daemon put together: rules, servers, registry, cache, Docker events, admin, state.

Start order matters: the redirect rules exist before the servers answer (and are removed after
they stop), registrations are recovered before the admin socket accepts new ones, and the admin
socket exists only once everything behind it works, so `client.ensure_running()` true means
"ready". Fail closed throughout: a registration Docker does not confirm is refused.
"""

from __future__ import annotations

import gc
import hmac
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kitebox.core.roles import RoleSession
from kitebox.core.secret import Secret
from kitebox.proxy import rules
from kitebox.proxy.admin import AdminHttp, AdminSocket
from kitebox.proxy.credentials import CredentialCache, Sts, run_refresher
from kitebox.proxy.docker import LABEL_JOB, LABEL_ROLE, LABEL_TOKEN, Docker, DockerError, follow_events
from kitebox.proxy.handler import DEFAULT_PASSTHROUGH, HandlerConfig
from kitebox.proxy.model import Job, token_sha256
from kitebox.proxy.registry import ProcOwnership, Registry
from kitebox.proxy.server import SERVERS, Dispatcher, Upstream
from kitebox.proxy.state import StateFile

# Its own directory under box mode's /run/kitebox: box mode keeps per-uid agent dirs there that
# job users must traverse, so only this leaf is 0700.
DEFAULT_STATE_DIR = Path("/run/kitebox/proxy")
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class ProxyConfig:
    job_network: str = "kitebox-jobs"
    imds_port: int = 8769
    ecs_port: int = 8770
    state_dir: Path = DEFAULT_STATE_DIR
    admin_host: str = "127.0.0.1"
    admin_port: int = 9750
    upstream: str | None = "http://169.254.169.254"  # None: allowlisted paths answer 404
    region: str = ""
    availability_zone: str = ""
    allow_imdsv1: bool = False
    duration: int = 3600
    server: str = "asyncio"
    install_rules: bool = True
    follow_events: bool = True
    passthrough: tuple[str, ...] = DEFAULT_PASSTHROUGH
    refresh_interval: float = 15.0

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "proxy.sock"


class RegistrationError(Exception):
    """A registration the proxy refuses; the message is one line for box mode's log."""


@dataclass
class Proxy:
    config: ProxyConfig
    sts: Sts
    audit: Callable[[dict], None]
    docker: Docker = field(default_factory=Docker)
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.state = StateFile(self.config.state_dir)
        self.token_key, self._saved = self.state.load()
        self.registry = Registry(ProcOwnership())
        self.cache = CredentialCache(self.sts, self.audit, duration=self.config.duration, clock=self.clock)
        handler_config = HandlerConfig(
            token_key=self.token_key, region=self.config.region, availability_zone=self.config.availability_zone,
            allow_imdsv1=self.config.allow_imdsv1, passthrough=self.config.passthrough,
        )
        upstream = Upstream(self.config.upstream) if self.config.upstream else None
        self.dispatcher = Dispatcher(self.registry, self.cache, handler_config, upstream, self.clock)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.redirect: rules.Redirect | None = None
        self.server = None
        self.admin_socket: AdminSocket | None = None
        self.admin_http: AdminHttp | None = None
        self.started_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "Proxy":
        bridge, subnet, gateway = self.docker.network(self.config.job_network)
        self.server = SERVERS[self.config.server](self.dispatcher, gateway, self.config.imds_port, self.config.ecs_port)
        self.server.start()
        from kitebox.proxy.model import ECS, IMDS

        self.redirect = rules.Redirect(bridge, subnet, gateway, self.server.ports[IMDS], self.server.ports[ECS])
        if self.config.install_rules:
            rules.install(self.redirect)
        self._recover()
        for target, name in ((self._refresh_loop, "kitebox-refresh"), (self._events_loop, "kitebox-events")):
            if name == "kitebox-events" and not self.config.follow_events:
                continue
            threading.Thread(target=target, name=name, daemon=True).start()
        self.admin_http = AdminHttp(self.config.admin_host, self.config.admin_port, self.health, self.metrics).start()
        self.admin_socket = AdminSocket(self.config.socket_path, self.dispatch).start()
        self.started_at = time.time()
        # Everything allocated so far lives as long as the daemon: keep it out of the cyclic
        # collector's scans, whose pauses otherwise show in the warm path's p99.
        gc.freeze()
        self.audit({"event": "kitebox.proxy.started", "network": self.config.job_network,
                    "listen": gateway, "ports": dict(self.server.ports), "jobs": len(self.registry.jobs())})
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.admin_socket:
            self.admin_socket.stop()
        if self.admin_http:
            self.admin_http.stop()
        if self.server:
            self.server.stop()
        if self.redirect and self.config.install_rules:
            rules.remove(self.redirect)
        self.cache.close()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.config.refresh_interval):
            for job in self.registry.sweep():
                self._forgotten(job, "container init process exited")
            self.cache.refresh_due()

    def _events_loop(self) -> None:
        follow_events(self.docker, self._stop, self.forget_container)

    def forget_container(self, container_id: str, why: str) -> None:
        job = self.registry.forget_container(container_id) if container_id else None
        if job:
            self._forgotten(job, why)

    def _forgotten(self, job: Job, why: str) -> None:
        self.cache.forget(job)
        self._save()
        self.audit({"event": "kitebox.proxy.deregistered", "job": job.job_id,
                    "container": job.container_id[:12], "why": why})

    def _save(self) -> None:
        self.state.save(self.token_key, self.registry.jobs())

    # -- registration -----------------------------------------------------------------------

    def register(self, job: Job, wait: float = 0.0) -> tuple[Job, str]:
        """Confirm the registration with Docker, add it, prefetch credentials; (job, credential state)."""
        token = job.token.reveal()
        if len(token) < MIN_TOKEN_LENGTH or any(c in token for c in "\r\n"):
            raise RegistrationError("the token must be at least 16 characters with no CR or LF")
        try:
            facts = self.docker.inspect(job.container_id)
        except DockerError as error:
            raise RegistrationError(str(error)) from None
        if facts is None or not facts.running:
            raise RegistrationError(f"container {job.container_id[:12]} is not running")
        job = Job(job.job_id, facts.id, job.address, job.token, job.session, job.refusal)
        actual = facts.address_on(self.config.job_network)
        if actual != job.address:
            raise RegistrationError(
                f"container {facts.id[:12]} has address {actual} on {self.config.job_network}, not {job.address}")
        expected = {LABEL_JOB: job.job_id, LABEL_TOKEN: token_sha256(token), LABEL_ROLE: job.role_arn or ""}
        for label, value in expected.items():
            if not hmac.compare_digest(facts.label(label) or "", value):
                raise RegistrationError(f"container {facts.id[:12]}'s label {label} does not match the registration")
        try:
            job, replaced = self.registry.register(job, facts.pid)
        except LookupError as error:
            raise RegistrationError(str(error)) from None
        for old in replaced:
            self.cache.forget(old)
        self.cache.prefetch(job)
        self._save()
        self.audit({"event": "kitebox.proxy.registered", "job": job.job_id, "container": job.container_id[:12],
                    "address": job.address, "role": job.role_arn, "refusal": job.refusal,
                    "generation": job.generation})
        state = "none" if job.session is None else "pending"
        if job.session is not None and wait > 0:
            found = self.cache.get_within(job, wait)
            state = "ready" if found is True else f"failed: {found}"
        return job, state

    def deregister(self, job_id: str) -> bool:
        job = self.registry.deregister(job_id)
        if job:
            self._forgotten(job, "deregistered")
        return job is not None

    def _recover(self) -> None:
        """Re-register what the state file holds, where Docker confirms it; say what is dropped."""
        saved, self._saved = self._saved, []
        for job in saved:
            try:
                self.register(job)
            except RegistrationError as error:
                self.audit({"event": "kitebox.proxy.not-recovered", "job": job.job_id, "why": str(error)})
        known = {j.container_id for j in self.registry.jobs()}
        try:
            labelled = self.docker.labelled()
        except Exception:
            labelled = []
        for container in labelled:
            if container not in known:
                self.audit({"event": "kitebox.proxy.not-recovered", "container": container[:12],
                            "why": "labelled as a kitebox job but not in the state file: its token is unknown"})
        self._save()

    def dispatch(self, message: dict) -> dict:
        op = message.get("op")
        try:
            if op == "register":
                session = message.get("session")
                job = Job(
                    job_id=str(message["job_id"]),
                    container_id=str(message["container_id"]),
                    address=str(message["address"]),
                    token=Secret(str(message["token"])),
                    session=RoleSession.from_json(session) if session else None,
                    refusal=message.get("refusal"),
                )
                job, state = self.register(job, float(message.get("wait", 0) or 0))
                return {"ok": True, "generation": job.generation, "credentials": state}
            if op == "deregister":
                return {"ok": True, "found": self.deregister(str(message["job_id"]))}
            if op == "ping":
                return {"ok": True, "jobs": len(self.registry.jobs())}
            return {"ok": False, "error": f"unknown op {op!r}"}
        except KeyError as error:
            return {"ok": False, "error": f"missing field {error}"}
        except RegistrationError as error:
            self.audit({"event": "kitebox.proxy.registration-refused", "job": message.get("job_id"), "why": str(error)})
            return {"ok": False, "error": str(error)}

    # -- operations -------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict]:
        rules_ok = (not self.config.install_rules) or (self.redirect is not None and rules.installed(self.redirect))
        document = {"status": "ok" if rules_ok else "rules missing", "jobs": len(self.registry.jobs()),
                    "uptime_seconds": round(time.time() - self.started_at, 1)}
        return rules_ok, document

    def metrics(self) -> str:
        m = self.dispatcher.metrics
        lines = [
            "# TYPE kitebox_proxy_requests_total counter",
        ]
        with m.lock:
            for (endpoint, kind, status), count in sorted(m.requests.items()):
                lines.append(f'kitebox_proxy_requests_total{{endpoint="{endpoint}",kind="{kind}",status="{status}"}} {count}')
            forwards, connections = m.forwards, m.connections
        lines += [
            "# TYPE kitebox_proxy_forwards_total counter", f"kitebox_proxy_forwards_total {forwards}",
            "# TYPE kitebox_proxy_connections_total counter", f"kitebox_proxy_connections_total {connections}",
            "# TYPE kitebox_proxy_jobs gauge", f"kitebox_proxy_jobs {len(self.registry.jobs())}",
            "# TYPE kitebox_proxy_credentials_cached gauge", f"kitebox_proxy_credentials_cached {len(self.cache)}",
            "# TYPE kitebox_proxy_sts_calls_total counter", f"kitebox_proxy_sts_calls_total {self.cache.sts_calls}",
            "# TYPE kitebox_proxy_sts_failures_total counter",
            f"kitebox_proxy_sts_failures_total {self.cache.sts_failures}",
        ]
        return "\n".join(lines) + "\n"
