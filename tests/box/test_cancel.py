"""Cancellation and crashes, signalled as the agent signals: the cancel signal to kitebox's whole
PROCESS GROUP, SIGKILL to the group after the grace period (buildkite-contract.md).

The job container runs images/agent-stand-in/bootstrap, which STANDS IN for `buildkite-agent
bootstrap` (no agent binary here); its command pauses so the signal lands mid-job.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from kitebox.box.owner import Owner
from kitebox.box.reaper import reap_containers
from tests.box.conftest import job_containers, leftovers, paused, wait_for, wait_ready

pytestmark = pytest.mark.docker

NOTHING = {"containers": [], "agents": [], "agent_dirs": []}
GRACE = 6  # BUILDKITE_CANCEL_GRACE_PERIOD: the signal grace is then 5 s, the container's stop timeout 4 s


def cancel_after_ready(world, signum=signal.SIGTERM) -> tuple[subprocess.Popen, float]:
    world.agent["BUILDKITE_CANCEL_GRACE_PERIOD"] = str(GRACE)
    world.job["BUILDKITE_COMMAND"] = paused("echo started")
    process = world.start()
    wait_ready(world, process)
    signalled = time.monotonic()
    os.killpg(process.pid, signum)
    return process, signalled


class TestCancel:
    """The cancel signal stops the container within the grace and leaves nothing behind."""

    def test_sigterm_to_the_group(self, world, docker_client):
        """SIGTERM: container stopped and removed, agents stopped, socket dir gone, exit non-zero."""
        process, signalled = cancel_after_ready(world)
        out, err = process.communicate(timeout=GRACE + 30)
        took = time.monotonic() - signalled
        assert process.returncode not in (0, None), err.decode()
        assert took < GRACE - 1, f"kitebox took {took:.1f}s, over the signal grace"
        assert "SIGTERM received, cancelling the job" in err.decode()
        assert leftovers(docker_client, world) == NOTHING

    def test_configured_cancel_signal(self, world, docker_client):
        """BUILDKITE_CANCEL_SIGNAL=SIGINT is honoured like SIGTERM."""
        world.agent["BUILDKITE_CANCEL_SIGNAL"] = "SIGINT"
        process, _ = cancel_after_ready(world, signal.SIGINT)
        process.communicate(timeout=GRACE + 30)
        assert process.returncode not in (0, None)
        assert leftovers(docker_client, world) == NOTHING

    def test_a_job_that_ignores_the_signal_is_killed_in_time(self, world, docker_client):
        """An inner bootstrap that traps SIGTERM is SIGKILLed by the engine after the stop
        timeout, still inside the grace."""
        world.agent["KITEBOX_INNER_BOOTSTRAP"] = (
            "bash -c 'trap \"\" TERM INT; exec /run/kitebox/bin/buildkite-agent bootstrap'"
        )
        process, signalled = cancel_after_ready(world)
        process.communicate(timeout=GRACE + 30)
        took = time.monotonic() - signalled
        assert process.returncode not in (0, None)
        assert GRACE - 3 <= took < GRACE - 1, f"took {took:.1f}s"
        assert leftovers(docker_client, world) == NOTHING


class TestCrash:
    """After a SIGKILL kitebox can do nothing; the reaper removes what it left."""

    def sigkill_mid_job(self, world, docker_client):
        world.job["BUILDKITE_COMMAND"] = paused("echo started")
        process = world.start()
        wait_ready(world, process)
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
        left = leftovers(docker_client, world)
        # The orphan container may already be gone: any kitebox on this engine reaps orphans
        # (other test sessions share it). Agent dirs live under this world's run dir only.
        assert len(left["containers"]) <= 1 and len(left["agent_dirs"]) == 1 and len(left["agents"]) == 2
        return left

    def test_kitebox_reap(self, world, docker_client):
        """`kitebox reap` removes the orphan container, kills its ssh-agents, removes their dir."""
        self.sigkill_mid_job(world, docker_client)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KITEBOX_", "BUILDKITE_"))}
        env["KITEBOX_RUN_DIR"] = str(world.run_dir)
        done = subprocess.run([sys.executable, "-m", "kitebox", "reap"], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert re.search(r"reaped [0-9]+ orphan container\(s\), 1 agent dir\(s\)", done.stdout), done.stdout
        assert wait_for(lambda: leftovers(docker_client, world) == NOTHING, 10)

    def test_next_job_reaps(self, world, docker_client):
        """The next job on the host reaps first, then runs normally."""
        self.sigkill_mid_job(world, docker_client)
        (world.build_dir / ".go").touch()
        following = world.variant(BUILDKITE_COMMAND="echo second job")
        done = following.run()
        assert done.returncode == 0, done.stderr
        assert re.search(r"reaped [0-9]+ orphan container\(s\), 1 agent dir\(s\)", done.stderr), done.stderr
        assert leftovers(docker_client, world) == NOTHING

    def test_container_reaper_by_labels(self, docker_client, job_image):
        """Containers whose owner is gone (dead pid, other boot, reused pid) are removed; a live
        owner's container stays. (Another session's reaper may win the race: then it is gone too.)"""
        dead = _dead_pid()
        me = Owner.me()
        owners = {
            "dead-pid": Owner(dead, "1", me.boot),
            "other-boot": Owner(me.pid, me.start, "another-boot"),
            "pid-reused": Owner(me.pid, "1", me.boot),
            "alive": me,
        }
        made = {}
        try:
            for name, owner in owners.items():
                made[name] = docker_client.containers.create(
                    job_image, ["sleep", "60"], labels={"kitebox.job": f"reaper-test-{name}", **owner.labels()},
                    network_mode="none",
                ).id
            reap_containers(docker_client)
            remaining = {c["Id"] for c in job_containers(docker_client)}
            assert made["alive"] in remaining
            for name in ("dead-pid", "other-boot", "pid-reused"):
                assert made[name] not in remaining, name
        finally:
            for container_id in made.values():
                try:
                    docker_client.api.remove_container(container_id, force=True)
                except Exception:
                    pass

    def test_live_jobs_are_not_reaped(self, world, docker_client):
        """A reaper run while a job runs leaves that job alone."""
        world.job["BUILDKITE_COMMAND"] = paused("echo started")
        process = world.start()
        try:
            wait_ready(world, process)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("KITEBOX_", "BUILDKITE_"))}
            env["KITEBOX_RUN_DIR"] = str(world.run_dir)
            done = subprocess.run([sys.executable, "-m", "kitebox", "reap"], env=env, capture_output=True,
                                  text=True, timeout=60)
            assert re.search(r"reaped [0-9]+ orphan container\(s\), 0 agent dir\(s\)", done.stdout), done.stdout
            assert len(job_containers(docker_client, world.job_id)) == 1
        finally:
            (world.build_dir / ".go").touch()
            process.communicate(timeout=60)
        assert process.returncode == 0


def _dead_pid() -> int:
    """A pid that existed a moment ago and is gone now."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
