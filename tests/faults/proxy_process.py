"""`kitebox proxy serve` as a process of its own (its RSS its own, killable), on an --internal
network the test creates, STS from moto, audit to a file; job containers labelled and registered
as box mode will register them (tests/proxy/conftest.py's recipe)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kitebox.box.network import bridge_name

ACCOUNT = "123456789012"


def docker(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"docker {args[0]}: {done.stderr.strip()[-1000:]}"
    return done.stdout.strip()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class ProxyProcess:
    """`kitebox proxy serve` on a fresh --internal network, STS from moto, audit to a file."""

    def __init__(self, moto, image: str, root: Path):
        self.image, self.root = image, root
        self.network = f"kitebox-load-{secrets.token_hex(4)}"
        for attempt in range(10):
            self.subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.0/25"
            done = subprocess.run(["docker", "network", "create", "--internal", "--subnet", self.subnet,
                                   "-o", f"com.docker.network.bridge.name={bridge_name(self.network)}",
                                   self.network], capture_output=True, text=True, timeout=60)
            if done.returncode == 0:
                break
        else:
            pytest.fail(f"could not create a test network: {done.stderr}")
        self.bridge = bridge_name(self.network)
        self.state, self.audit = root / "state", root / "audit.jsonl"
        (root / "tokens").mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KITEBOX_", "BUILDKITE_"))}
        self.env.update(moto.env())
        self.log = open(root / "proxy.log", "ab")
        self.containers: list[str] = []
        self.job_ids: set[str] = set()
        self.launch()

    def launch(self) -> None:
        """Start the daemon (again) on the same state dir; return once its admin socket is up."""
        socket_path = self.state / "proxy.sock"
        if socket_path.exists():
            socket_path.unlink()  # a SIGKILLed proxy's: readiness is the NEW one's socket
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kitebox", "proxy", "serve", "--network", self.network, "--imds-port", "0",
             "--ecs-port", "0", "--state-dir", str(self.state), "--admin", "127.0.0.1:0", "--upstream", "none",
             "--region", "eu-west-1", "--audit", str(self.audit)],
            env=self.env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert self.process.poll() is None and time.monotonic() < deadline, \
                (self.root / "proxy.log").read_text()[-2000:]
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the daemon, as a crash or the OOM killer would: no clean-up at all."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def start_job(self, job_id: str, role: str, script: list[str]) -> str:
        """A job container running `python3 -c <script[0]> <script[1:]...>`, registered."""
        from kitebox.core.roles import RoleSession, session_name
        from kitebox.proxy import client
        from tests.proxy.conftest import owner_labels

        token = client.new_token()
        token_file = self.root / "tokens" / job_id
        token_file.write_text(token)
        os.chmod(token_file, 0o444)
        argv = ["run", "-d", "--network", self.network, "--user", "2000:2000",
                "-v", f"{token_file}:/run/kitebox/aws-token:ro"]
        for key, value in {**client.labels(job_id, role, token), **owner_labels()}.items():
            argv += ["--label", f"{key}={value}"]
        container = docker(*argv, self.image, "python3", "-c", *script)
        self.containers.append(container)
        self.job_ids.add(job_id)
        address = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}',
                         container)
        client.register(job_id, container, address, token, RoleSession(role, session_name(job_id)), wait=10.0,
                        socket_path=self.state / "proxy.sock")
        return container

    def issued(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for line in self.audit.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "kitebox.proxy.credentials" and record.get("outcome") == "issued":
                found.setdefault(record["job"], set()).add(record["access_key_id"])
        return found

    def jobs_registered(self) -> int:
        from kitebox.proxy import client

        return client.call({"op": "ping"}, self.state / "proxy.sock")["jobs"]

    def stop(self) -> None:
        if self.containers:
            subprocess.run(["docker", "rm", "-f", *self.containers], capture_output=True, timeout=120)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        subprocess.run(["docker", "network", "rm", self.network], capture_output=True, timeout=60)
