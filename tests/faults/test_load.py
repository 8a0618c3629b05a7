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
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.box.conftest import BASE
from tests.box.test_concurrency import finish
from tests.faults.leftovers import Scope, assert_nothing_left
from tests.faults.proxy_process import ACCOUNT, ProxyProcess, docker, rss_kib

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


# every container is registered before any of them asks
WAIT_FOR_GO = "import os, time\nwhile not os.path.exists('/tmp/go'): time.sleep(0.05)\n"


def proxy_round(proxy: ProxyProcess, round_: int, count: int, fetches: int) -> None:
    roles = {f"load-{round_}-{i}": f"arn:aws:iam::{ACCOUNT}:role/load-role-{round_}-{i}" for i in range(count)}
    with ThreadPoolExecutor(4) as pool:
        containers = dict(zip(roles, pool.map(
            lambda item: proxy.start_job(item[0], item[1], [WAIT_FOR_GO + FETCHER, str(fetches)]), roles.items())))
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
