"""Box-mode faults beyond tests/box: a bigger cancel storm, and dockerd restarted mid-job.

Already in tests/box (not repeated): kitebox SIGKILLed mid-job, then `kitebox reap` or the next
job removes what it left (test_cancel.py::TestCrash); 5- and 20-job random cancel storms
(test_concurrency.py::TestRandomCancels). Inside the job containers, images/agent-stand-in/
bootstrap STANDS IN for `buildkite-agent bootstrap`.

    KITEBOX_SLOW=1                      the 30-job storm, twice (two seeds)
    KITEBOX_SLOW=1 KITEBOX_DISRUPTIVE=1 dockerd restarted mid-job: it stops EVERY container on
                                        this engine (other sessions' too); never run it where
                                        others share the engine
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.box.conftest import paused, wait_ready
from tests.box.test_concurrency import run_random_cancels
from tests.faults.leftovers import Scope, assert_nothing_left

pytestmark = pytest.mark.docker

# Read at collection: the autouse fixture removes KITEBOX_* before each test runs.
DISRUPTIVE = os.environ.get("KITEBOX_DISRUPTIVE") == "1"
DOCKERD_LOG = os.environ.get("KITEBOX_DOCKERD_LOG", "/var/log/kitebox-dockerd.log")


def box_scope(world) -> Scope:
    return Scope(roots=[world.root], run_dirs=[world.run_dir])


@pytest.mark.slow
class TestCancelStorm:
    def test_thirty_jobs_cancelled_at_random_points_twice(self, world, docker_client):
        """30 jobs, each cancelled before, during or after its container starts; two rounds with
        two seeds (KITEBOX_TEST_SEED fixes the first). Nothing left after each round."""
        first = int(os.environ.get("KITEBOX_TEST_SEED", random.randrange(1 << 30)))
        for seed in (first, first + 1):
            # The same 30 agents and pipelines again: the last round's "command started" markers
            # would let this round's cancels fire before the commands start.
            for marker in Path(world.agent["BUILDKITE_BUILD_PATH"]).glob("*/*/*/.started"):
                marker.unlink()
            run_random_cancels(world, docker_client, 30, seed)
            assert_nothing_left(box_scope(world))


# -- dockerd restarted mid-job ---------------------------------------------------------------------


def dockerd_pid() -> int | None:
    done = subprocess.run(["pgrep", "-x", "-o", "dockerd"], capture_output=True, text=True)
    return int(done.stdout.split()[0]) if done.returncode == 0 and done.stdout.strip() else None


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def restart_dockerd() -> None:
    """Stop dockerd (SIGTERM, as an upgrade or systemctl restart does) and start it EXACTLY as
    scripts/setup does; bounded: 60 s to stop, 60 s to answer again."""
    pid = dockerd_pid()
    assert pid is not None, "no dockerd to restart"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists(), "dockerd did not stop within 60 s"
    # scripts/setup: setsid dockerd --bridge=none --ip-masq=false </dev/null >>"$DOCKERD_LOG" 2>&1 &
    subprocess.run(["bash", "-c", 'setsid dockerd --bridge=none --ip-masq=false </dev/null >>"$1" 2>&1 &',
                    "restart", DOCKERD_LOG], check=True, timeout=30)
    deadline = time.monotonic() + 60
    while not engine_answers():
        assert time.monotonic() < deadline, f"dockerd did not answer within 60 s (log {DOCKERD_LOG})"
        time.sleep(1)


@pytest.mark.slow
@pytest.mark.skipif(not DISRUPTIVE, reason="restarts dockerd: set KITEBOX_DISRUPTIVE=1 (and KITEBOX_SLOW=1)")
class TestDockerdRestart:
    def test_restart_mid_job_reports_and_cleans_up(self, world, docker_client):
        """dockerd restarts while the job's command runs: kitebox ends the job non-zero within a
        bounded time, says so, stops its ssh-agents itself; once the engine is back the reaper
        (or kitebox's own clean-up) leaves no container, and the next job runs normally."""
        world.job["BUILDKITE_COMMAND"] = paused("echo started")
        process = world.start()
        wait_ready(world, process)
        restarted_at = time.monotonic()
        restart_dockerd()
        try:
            out, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"kitebox job did not end within 120 s of the restart:\n{err.decode()[-2000:]}")
        took = time.monotonic() - restarted_at
        assert process.returncode not in (0, None), err.decode()
        assert took < 120
        messages = [line for line in err.decode().splitlines() if line.startswith("kitebox")]
        assert messages, "kitebox said nothing about the lost job"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KITEBOX_", "BUILDKITE_"))}
        env["KITEBOX_RUN_DIR"] = str(world.run_dir)
        reaped = subprocess.run([sys.executable, "-m", "kitebox", "reap"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert reaped.returncode == 0 and re.search(r"reaped [0-9]+ orphan", reaped.stdout), reaped.stderr
        assert_nothing_left(box_scope(world), timeout=30)
        following = world.variant(BUILDKITE_COMMAND="echo after the restart")
        done = following.run()
        assert done.returncode == 0 and "after the restart" in done.stdout, done.stderr
        assert_nothing_left(box_scope(world))
