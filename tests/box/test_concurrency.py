"""Several agents on one host (the Elastic CI Stack's AgentsPerInstance): concurrent jobs never
share secrets, sockets, env or build directories, and cancelling them at random points leaves
nothing behind.

Each job container runs images/agent-stand-in/bootstrap, which STANDS IN for `buildkite-agent
bootstrap` (no agent binary here). Bounded: every job has a deadline, and the 20-job versions
are sized to fit two cores in well under two minutes.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import threading
import time
import uuid

import pytest

from tests.box.conftest import BASE, leftovers, wait_for

pytestmark = pytest.mark.docker

NOTHING = {"containers": [], "agents": [], "agent_dirs": []}
DEADLINE = 110  # seconds for a whole batch of jobs
PROBE = r"""
printf 'mine %s\n' "$(printf %s "$MY_SECRET" | sha256sum | cut -d' ' -f1)"
echo "sockets $(ls /run/kitebox/ssh | grep sock | tr '\n' ' ')"
echo "me $BUILDKITE_JOB_ID" > "$BUILDKITE_BUILD_CHECKOUT_PATH/owner.txt"
echo "dir $BUILDKITE_BUILD_CHECKOUT_PATH"
"""


def jobs(world, count: int, command: str) -> list:
    """`count` jobs, each on its own agent and pipeline with its own secret."""
    made = []
    for i in range(count):
        secret = f"secret-{i}-{uuid.uuid4().hex}"
        world.put(f"{BASE}/app-{i}/env/my-secret", secret)
        job = world.variant(BUILDKITE_PIPELINE_SLUG=f"app-{i}", BUILDKITE_AGENT_NAME=f"agent-{i}",
                            BUILDKITE_COMMAND=command)
        made.append((job, secret))
    return made


def finish(processes, deadline: float) -> list[tuple[int, str, str]]:
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in processes:
                if other.poll() is None:
                    os.killpg(other.pid, signal.SIGKILL)
            pytest.fail("a batch of concurrent jobs ran over its deadline")
        results.append((process.returncode, out.decode(), err.decode()))
    return results


def run_isolated(world, docker_client, count: int) -> None:
    batch = jobs(world, count, PROBE)
    deadline = time.monotonic() + DEADLINE
    results = finish([job.start() for job, _ in batch], deadline)
    hashes = [hashlib.sha256(secret.encode()).hexdigest() for _, secret in batch]
    for i, ((job, _), (code, out, err)) in enumerate(zip(batch, results)):
        assert code == 0, err
        assert f"mine {hashes[i]}" in out.splitlines()
        assert not any(h in out for j, h in enumerate(hashes) if j != i)
        assert "sockets global.sock repo.sock " in out.splitlines()
        assert f"dir {job.build_dir}" in out.splitlines()
        assert (job.build_dir / "owner.txt").read_text() == f"me {job.job_id}\n"
    assert leftovers(docker_client, world) == NOTHING


def run_random_cancels(world, docker_client, count: int, seed: int) -> None:
    """Job i is signalled in phase i % 3: at once (during the access check), a little later
    (host set-up, container creation, checkout), or once its command runs; each with jitter."""
    rng = random.Random(seed)
    world.agent["BUILDKITE_CANCEL_GRACE_PERIOD"] = "6"
    batch = jobs(world, count, 'echo started; touch "$BUILDKITE_BUILD_CHECKOUT_PATH/.started"; sleep 60')
    plans = [(i % 3, rng.uniform(0, 0.5), rng.uniform(0.5, 3), rng.uniform(0, 1)) for i in range(count)]
    processes = [job.start() for job, _ in batch]
    started = time.monotonic()

    def cancel(i: int) -> None:
        phase, early, later, after_start = plans[i]
        if phase == 0:
            time.sleep(early)
        elif phase == 1:
            time.sleep(later)
        else:
            marker = batch[i][0].build_dir / ".started"
            assert wait_for(marker.exists, 60, 0.1), f"job {i} never reached its command"
            time.sleep(after_start)
        os.killpg(processes[i].pid, signal.SIGTERM)

    threads = [threading.Thread(target=cancel, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1, started + DEADLINE - time.monotonic()))
    results = finish(processes, started + DEADLINE)
    codes = [code for code, _, _ in results]
    assert all(code != 0 for code in codes), (seed, codes, [err for _, _, err in results])
    # The last phase really cancelled running jobs: their command had started.
    assert all("started" in results[i][1] for i in range(count) if plans[i][0] == 2), seed
    assert leftovers(docker_client, world) == NOTHING, f"seed {seed}"


class TestIsolation:
    """Concurrent jobs with different secrets each see only their own."""

    def test_five_jobs(self, world, docker_client):
        """Five at once: own secret, own two sockets, own build directory."""
        run_isolated(world, docker_client, 5)

    def test_twenty_jobs(self, world, docker_client):
        """Twenty at once, as many agents on one instance would run them."""
        run_isolated(world, docker_client, 20)


class TestRandomCancels:
    """The cancel signal at a random point of each job (before, during or after container
    start) leaves no container, no ssh-agent, no socket dir, without any reaper."""

    def test_five_jobs(self, world, docker_client):
        """Five jobs, each cancelled in one of three phases."""
        seed = int(os.environ.get("KITEBOX_TEST_SEED", random.randrange(1 << 30)))
        run_random_cancels(world, docker_client, 5, seed)

    def test_twenty_jobs(self, world, docker_client):
        """Twenty jobs, each cancelled in one of three phases."""
        seed = int(os.environ.get("KITEBOX_TEST_SEED", random.randrange(1 << 30)))
        run_random_cancels(world, docker_client, 20, seed)
