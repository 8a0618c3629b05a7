"""Fixtures for the proxy's integration tests: a job network, a stand-in IMDS, a running proxy,
and job containers registered the way box mode will register them.

Nothing here can reach a real metadata service: the network is `--internal`, the proxy's
upstream is `StandInImds` on loopback, and every job container is started only after the test
has asserted that the redirect rules are installed (`start_job` checks it itself).
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kitebox.proxy import client, rules
from kitebox.proxy.credentials import BotoSts, CredentialError
from kitebox.proxy.daemon import Proxy, ProxyConfig

ACCOUNT = "123456789012"
ROLE_A = f"arn:aws:iam::{ACCOUNT}:role/pipeline-a-deploy"
ROLE_B = f"arn:aws:iam::{ACCOUNT}:role/pipeline-b-deploy"
ROLE_DENIED = f"arn:aws:iam::{ACCOUNT}:role/sts-refuses-this"
REGION = "eu-west-1"
TOKEN_IN_CONTAINER = "/run/kitebox/aws-token"


class StandInImds:
    """A loopback stand-in for the real IMDS, recording what the proxy forwards to it.

    It also offers an instance role, so a test can prove the proxy never hands it out."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                owner.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.command == "PUT" and self.path == "/latest/api/token":
                    body = b"upstream-token"
                elif self.headers.get("x-aws-ec2-metadata-token") != "upstream-token":
                    self.send_response(401)
                    self.end_headers()
                    return
                elif self.path == "/latest/meta-data/instance-id":
                    body = b"i-0standin000000000"
                elif self.path.startswith("/latest/meta-data/iam/security-credentials"):
                    body = b"the-instance-role"
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = _answer

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()


class RefusingSts:
    """Moto's STS, except that it refuses ROLE_DENIED the way AWS would (moto grants any role)."""

    def __init__(self, inner):
        self.inner = inner

    def assume(self, session, job_id, duration):
        if session.role_arn == ROLE_DENIED:
            raise CredentialError(f"STS call for {ROLE_DENIED} failed: AccessDenied: not authorized to perform sts:AssumeRole")
        return self.inner.assume(session, job_id, duration)


def owner_labels() -> dict[str, str]:
    """Box mode's owner labels naming this test process, so that a concurrent `kitebox reap`
    (box mode's tests) sees a live owner and leaves our kitebox.job containers alone."""
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    return {
        "kitebox.pid": str(os.getpid()),
        "kitebox.pid-start": stat[stat.rindex(")") + 2:].split()[19],
        "kitebox.boot-id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
    }


def docker(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"docker {args[0]} exited {done.returncode}: {done.stderr.strip()[-2000:]} {done.stdout.strip()[-2000:]}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def job_network(base_image) -> str:
    """A fresh `--internal` network (small subnet, so addresses are reused quickly)."""
    name = f"kitebox-proxytest-{secrets.token_hex(4)}"
    for attempt in range(10):  # another network (another engineer's test) may hold a subnet
        subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.{16 * secrets.randbelow(16)}/28"
        try:
            docker("network", "create", "--internal", "--subnet", subnet, name)
            break
        except AssertionError:
            if attempt == 9:
                raise
    yield name
    leftovers = docker("ps", "-aq", "--filter", f"network={name}")
    if leftovers:
        docker("rm", "-f", *leftovers.split())
    docker("network", "rm", name)


@pytest.fixture(scope="module")
def standin_imds():
    server = StandInImds()
    yield server
    server.close()


@dataclass
class Running:
    proxy: Proxy
    audit: list[dict]
    network: str
    image: str
    token_dir: Path
    containers: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.proxy.config.socket_path

    def start_job(self, job_id: str, role: str | None, *, register=True, refusal=None, labels_token=None,
                  ip: str | None = None, session=None, command: list[str] | None = None) -> "JobContainer":
        """Start a job container as box mode would: labels, token file, env; then register it."""
        assert rules.installed(self.proxy.redirect), "redirect rules must exist before any job container starts"
        token = client.new_token()
        token_file = self.token_dir / f"{job_id}-{secrets.token_hex(3)}"
        token_file.write_text(token)
        os.chown(token_file, 2000, 2000)
        os.chmod(token_file, 0o400)
        argv = ["run", "-d", "--network", self.network, "--user", "2000:2000"]
        if ip:
            argv += ["--ip", ip]
        for key, value in {**client.labels(job_id, role, labels_token or token), **owner_labels()}.items():
            argv += ["--label", f"{key}={value}"]
        for key, value in client.container_env(TOKEN_IN_CONTAINER).items():
            argv += ["-e", f"{key}={value}"]
        argv += ["-e", "AWS_CONFIG_FILE=/dev/null", "-e", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
                 "-v", f"{token_file}:{TOKEN_IN_CONTAINER}:ro", self.image, *(command or ["sleep", "600"])]
        container = docker(*argv)
        self.containers.append(container)
        address = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}', container)
        job = JobContainer(job_id, container, address, token, role)
        if register:
            from kitebox.core.roles import RoleSession, session_name

            if session is None and role:
                session = RoleSession(role, session_name(job_id), "ada@example.com", (("buildkite:pipeline", job_id),))
            client.register(job_id, container, address, token, session, refusal=refusal, wait=5.0,
                            socket_path=self.socket)
        return job

    def cleanup(self) -> None:
        """Remove this test's job containers (the /28 job network holds 13 at most)."""
        if self.containers:
            subprocess.run(["docker", "rm", "-f", *self.containers], capture_output=True, timeout=120)
            self.containers.clear()

    def issued(self, job_id: str) -> list[dict]:
        return [r for r in self.audit if r.get("event") == "kitebox.proxy.credentials" and r["job"] == job_id]


@dataclass
class JobContainer:
    job_id: str
    container: str
    address: str
    token: str
    role: str | None

    def python(self, code: str, *args: str, timeout: float = 60) -> str:
        return docker("exec", self.container, "python3", "-c", code, *args, timeout=timeout)


def moto_sts(moto) -> BotoSts:
    """STS on the session's moto server with explicit fake keys and endpoint: nothing is read from
    the environment (which the autouse fixture wipes per test), so boto3 never looks for IMDS."""
    return BotoSts(moto.client("sts"))


def start_proxy(network: str, state_dir: Path, upstream: str, audit: list, sts, *, follow_events=True,
                refresh_interval=15.0) -> Proxy:
    config = ProxyConfig(
        job_network=network, imds_port=0, ecs_port=0, state_dir=state_dir, admin_port=0,
        upstream=upstream, region=REGION, availability_zone=f"{REGION}b", follow_events=follow_events,
        refresh_interval=refresh_interval,
    )
    return Proxy(config, RefusingSts(sts), audit.append).start()


@pytest.fixture(scope="module")
def running(job_network, standin_imds, base_image, moto, tmp_path_factory) -> Running:
    audit: list[dict] = []
    root = tmp_path_factory.mktemp("proxy")
    state_dir, token_dir = root / "state", root / "tokens"
    token_dir.mkdir()
    proxy = start_proxy(job_network, state_dir, standin_imds.url, audit, moto_sts(moto))
    run = Running(proxy, audit, job_network, base_image, token_dir)
    try:
        yield run
    finally:
        run.cleanup()
        run.proxy.stop()


@pytest.fixture
def proxy(running) -> Running:
    """The module's running proxy; the job containers a test starts are removed after it."""
    yield running
    running.cleanup()


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


# Runs inside a job container with Debian's python3-boto3 (botocore 1.29): which credentials the
# SDK's own chain finds, through IMDS only ("imds") or the container endpoint ("container").
# botocore 1.29 predates AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, so for "container" the script
# reads the file and sets AWS_CONTAINER_AUTHORIZATION_TOKEN, as newer SDKs do by themselves.
SDK_PROBE = r"""
import json, os, sys
import botocore.session
mode = sys.argv[1]
if mode == "imds":
    for name in list(os.environ):
        if name.startswith("AWS_CONTAINER_"):
            del os.environ[name]
else:
    with open(os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]) as f:
        os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = f.read().strip()
session = botocore.session.get_session()
from botocore.utils import IMDSRegionProvider  # the SDK's own IMDS region lookup (the AZ path)
out = {"region": IMDSRegionProvider(session).provide()}
try:
    creds = session.get_credentials()
except Exception as error:
    creds, out["error"] = None, type(error).__name__ + ": " + str(error)
if creds is not None:
    frozen = creds.get_frozen_credentials()
    out.update(method=creds.method, access_key=frozen.access_key, secret=frozen.secret_key, token=frozen.token)
else:
    out["method"] = None
print(json.dumps(out))
"""

RAW_GET = r"""
import json, sys, urllib.request, urllib.error
url, headers, method = sys.argv[1], json.loads(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "GET")
request = urllib.request.Request(url, headers=headers, method=method)
try:
    with urllib.request.urlopen(request, timeout=3) as answer:
        print(json.dumps({"status": answer.status, "body": answer.read().decode(), "headers": dict(answer.headers)}))
except urllib.error.HTTPError as error:
    print(json.dumps({"status": error.code, "body": error.read().decode(), "headers": dict(error.headers)}))
except Exception as error:
    print(json.dumps({"status": None, "error": type(error).__name__ + ": " + str(error)}))
"""


def sdk(job: JobContainer, mode: str) -> dict:
    return json.loads(job.python(SDK_PROBE, mode))


def raw(job: JobContainer, url: str, headers: dict | None = None, method: str = "GET") -> dict:
    return json.loads(job.python(RAW_GET, url, json.dumps(headers or {}), method))
