"""Load on this 2-core machine, repeated: many boxed jobs at once, each with its own secret;
many job containers on the metadata proxy at once, each with its own role. Zero errors, zero
cross-talk, nothing left behind after each round, the proxy's memory flat across rounds.

    KITEBOX_SLOW=1   30 boxed jobs × 2 rounds; 30 proxy jobs × 2 rounds
    normal suite     10 boxed jobs × 2 rounds; 10 proxy jobs × 2 rounds (each well under 60 s)

Box mode does not register its containers with the proxy yet (src/kitebox/box/job.py), so the
roles are exercised on the proxy alone, with job containers labelled and registered as box mode
will (tests/proxy/conftest.py's `start_job` recipe), against `kitebox proxy serve` as a separate
process, so that its RSS is its own. Inside the boxed jobs, images/agent-stand-in/bootstrap STANDS
IN for `buildkite-agent bootstrap`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kitebox.box.network import bridge_name
from tests.box.conftest import BASE
from tests.box.test_concurrency import finish
from tests.faults.leftovers import Scope, assert_nothing_left

pytestmark = pytest.mark.docker

ROUND_DEADLINE = {10: 100, 30: 280}  # seconds for one round of boxed jobs, by size
PROBE = r"""
echo "mine $(printf %s "$MY_SECRET" | sha256sum | cut -d' ' -f1)"
env | sed -n 's/^\(LOAD_[A-Z0-9_]*\)=.*/var \1/p'
echo "sockets $(ls /run/kitebox/ssh | grep -c sock)"
"""


# -- boxed jobs ------------------------------------------------------------------------------------


def boxed_round(world, round_: int, count: int) -> None:
    """`count` jobs at once, each on its own agent and pipeline, with a secret of its own under
    a variable name of its own too (LOAD_<i>): it must see its value, and no other job's name."""
    batch = []
    for i in range(count):
        secret = f"load-{round_}-{i}-{secrets.token_hex(16)}"
        pipeline = f"load-{round_}-{i}"
        world.put(f"{BASE}/{pipeline}/env/my-secret", secret)
        world.put(f"{BASE}/{pipeline}/env/load-{i}", "x")
        job = world.variant(BUILDKITE_PIPELINE_SLUG=pipeline, BUILDKITE_AGENT_NAME=f"load-agent-{i}",
                            BUILDKITE_COMMAND=PROBE)
        batch.append((job, secret))
    started = time.monotonic()
    results = finish([job.start() for job, _ in batch], started + ROUND_DEADLINE[count])
    hashes = [hashlib.sha256(secret.encode()).hexdigest() for _, secret in batch]
    errors = []
    for i, ((job, secret), (code, out, err)) in enumerate(zip(batch, results)):
        lines = out.splitlines()
        others = [j for j, h in enumerate(hashes) if j != i and h in out]
        seen = sorted(line.split()[1] for line in lines if line.startswith("var "))
        if code != 0 or f"mine {hashes[i]}" not in lines or others or seen != [f"LOAD_{i}"] \
                or "sockets 2" not in lines or secret in out + err:
            errors.append((i, code, others, seen, err[-500:]))
    assert errors == [], f"round {round_}: {errors[:3]}"


def run_boxed(world, docker_client, count: int, rounds: int = 2) -> None:
    scope = Scope(roots=[world.root], run_dirs=[world.run_dir],
                  tokens=[])  # the job network is the session's: its rules stay, by design
    for round_ in range(rounds):
        boxed_round(world, round_, count)
        assert_nothing_left(scope)


class TestBoxedJobs:
    def test_ten_jobs_twice(self, world, docker_client):
        """10 boxed jobs at once, twice: each sees only its own secret and variable names, both
        sockets; no container, agent or socket dir left after either round."""
        run_boxed(world, docker_client, 10)

    @pytest.mark.slow
    def test_thirty_jobs_twice(self, world, docker_client):
        """30 boxed jobs at once on two cores, twice: the same, under three times the load."""
        run_boxed(world, docker_client, 30)


# -- the proxy, as its own process --------------------------------------------------------------------

ACCOUNT = "123456789012"
FETCHER = r"""
import json, sys, time, urllib.request
token = open("/run/kitebox/aws-token").read().strip()
keys, errors = set(), 0
for _ in range(int(sys.argv[1])):
    for url, headers in (("http://169.254.170.2/v1/credentials", {"Authorization": token}),):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as answer:
                document = json.loads(answer.read())
                keys.add((document["AccessKeyId"], document["RoleArn"]))
        except Exception as error:
            errors += 1
    t = urllib.request.Request("http://169.254.169.254/latest/api/token", method="PUT",
                               headers={"x-aws-ec2-metadata-token-ttl-seconds": "60"})
    try:
        v2 = {"x-aws-ec2-metadata-token": urllib.request.urlopen(t, timeout=5).read().decode()}
        base = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
        name = urllib.request.urlopen(urllib.request.Request(base, headers=v2), timeout=5).read().decode()
        document = json.loads(urllib.request.urlopen(urllib.request.Request(base + name, headers=v2), timeout=5).read())
        keys.add((document["AccessKeyId"], name))
    except Exception:
        errors += 1
print(json.dumps({"keys": sorted(keys), "errors": errors}))
"""


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
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KITEBOX_", "BUILDKITE_"))}
        env.update(moto.env())
        self.log = open(root / "proxy.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kitebox", "proxy", "serve", "--network", self.network, "--imds-port", "0",
             "--ecs-port", "0", "--state-dir", str(self.state), "--admin", "127.0.0.1:0", "--upstream", "none",
             "--region", "eu-west-1", "--audit", str(self.audit)],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not (self.state / "proxy.sock").exists():
            assert self.process.poll() is None and time.monotonic() < deadline, (root / "proxy.log").read_text()
            time.sleep(0.05)
        self.containers: list[str] = []
        self.job_ids: set[str] = set()

    def start_job(self, job_id: str, role: str, fetches: int) -> str:
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
        # the fetcher waits for /tmp/go, so every container is registered before any asks
        script = "import os, time\nwhile not os.path.exists('/tmp/go'): time.sleep(0.05)\n" + FETCHER
        container = docker(*argv, self.image, "python3", "-c", script, str(fetches))
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


def proxy_round(proxy: ProxyProcess, round_: int, count: int, fetches: int) -> None:
    roles = {f"load-{round_}-{i}": f"arn:aws:iam::{ACCOUNT}:role/load-role-{round_}-{i}" for i in range(count)}
    with ThreadPoolExecutor(4) as pool:
        containers = dict(zip(roles, pool.map(lambda item: proxy.start_job(item[0], item[1], fetches), roles.items())))
    for container in containers.values():
        docker("exec", container, "touch", "/tmp/go")
    outputs = {}
    for job_id, container in containers.items():
        docker("wait", container, timeout=120)
        outputs[job_id] = json.loads(docker("logs", container).splitlines()[-1])
    issued = proxy.issued()
    for job_id, out in outputs.items():
        assert out["errors"] == 0, (job_id, out)
        seen_keys = {key for key, _ in out["keys"]}
        seen_roles = {role for _, role in out["keys"]}
        assert seen_keys and seen_keys <= issued.get(job_id, set()), f"{job_id} saw another job's keys"
        assert seen_roles == {roles[job_id], roles[job_id].rsplit("/", 1)[1]}, (job_id, seen_roles)
    subprocess.run(["docker", "rm", "-f", *containers.values()], capture_output=True, timeout=120)
    for container in containers.values():
        proxy.containers.remove(container)
    deadline = time.monotonic() + 20  # the proxy forgets them through Docker's events
    while proxy.jobs_registered() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proxy.jobs_registered() == 0, "registrations outlived their containers"


def run_proxy_load(moto, image, tmp_path, count: int, fetches: int, rounds: int = 2) -> None:
    proxy = ProxyProcess(moto, image, tmp_path)
    rss = []
    try:
        for round_ in range(rounds):
            proxy_round(proxy, round_, count, fetches)
            rss.append(rss_kib(proxy.process.pid))
    finally:
        proxy.stop()
    # Flat: the second round ends within 10% (+4 MiB of allocator slack) of the first.
    assert rss[-1] <= rss[0] * 1.10 + 4096, f"proxy RSS grew across rounds: {rss} KiB"
    assert proxy.process.returncode == 0, (tmp_path / "proxy.log").read_text()[-2000:]
    assert_nothing_left(Scope(job_ids=proxy.job_ids, networks=[proxy.network],
                              tokens=[proxy.subnet, proxy.bridge]))
    print(f"proxy RSS after each round: {[round(r / 1024, 1) for r in rss]} MiB")


@pytest.mark.moto
class TestProxyJobs:
    def test_ten_jobs_twice(self, moto, base_image, tmp_path):
        """10 job containers with 10 roles at once, twice: each only ever sees its own keys
        and role, through both endpoints; registrations end with their containers; flat RSS."""
        run_proxy_load(moto, base_image, tmp_path, 10, fetches=20)

    @pytest.mark.slow
    def test_thirty_jobs_twice(self, moto, base_image, tmp_path):
        """30 job containers with 30 roles at once, twice, 50 fetches each: the same."""
        run_proxy_load(moto, base_image, tmp_path, 30, fetches=50)
