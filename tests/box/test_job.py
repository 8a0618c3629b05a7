"""`kitebox job` end to end: real dockerd, sshd, ssh-agents, git and moto; kitebox is started as
the agent starts a bootstrap-script (its environment, env file, own process group).

In the container, images/agent-stand-in/bootstrap STANDS IN for `buildkite-agent bootstrap`
(there is no agent binary here), following the agent's phase order: global environment hook →
plugin checkout → pre-checkout → checkout → post-checkout → pre-command → command → pre-exit
(buildkite-contract.md). The sshd's two repos each accept only their own deploy key.
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from tests.box.conftest import BASE, PIPELINE, job_containers, leftovers

pytestmark = pytest.mark.docker

SECRET = "box-s3cr3t value"
PROBE = r"""
printf 'secret %s\n' "$(printf %s "$MY_SECRET" | sha256sum | cut -d' ' -f1)"
printf 'token %s\n' "$(printf %s "$BUILDKITE_AGENT_ACCESS_TOKEN" | sha256sum | cut -d' ' -f1)"
echo "operator-env $OPERATOR_ENVIRONMENT_HOOK"
echo "ssh $SSH_AUTH_SOCK"
echo "redacted $BUILDKITE_REDACTED_VARS"
echo "user $(id -u):$(id -g) caps $(grep CapEff /proc/self/status | cut -f2)"
echo "nnp $(grep NoNewPrivs /proc/self/status | cut -f2)"
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def created_containers(client, job_id: str, since: float) -> list:
    events = client.events(since=since, until=time.time() + 1, decode=True,
                           filters={"type": "container", "event": "create"})
    return [e for e in events if e.get("Actor", {}).get("Attributes", {}).get("kitebox.job") == job_id]


class TestFullJob:
    """One job: plugin with the global key, checkout with the repo key, secrets, exit code."""

    def test_end_to_end(self, world, docker_client):
        """Everything the agent's own bootstrap would get, and nothing left behind."""
        world.put(f"{BASE}/{PIPELINE}/env/my-secret", SECRET)
        world.job["BUILDKITE_COMMAND"] = PROBE
        done = world.run()
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        plugin_dirs = list((world.root / "plugins" / "agent-1" / "acme" / PIPELINE).iterdir())
        assert [(d / "README").read_text() for d in plugin_dirs] == ["this is box-plugin\n"]
        assert (world.build_dir / "README").read_text() == "this is box-app\n"
        assert f"secret {sha(SECRET)}" in lines
        assert f"token {sha(world.agent['BUILDKITE_AGENT_ACCESS_TOKEN'])}" in lines
        assert "operator-env ran" in lines  # the operator's environment hook, chained
        assert "operator pre-command hook (linked as is)" in lines
        assert "ssh /run/kitebox/ssh/global.sock" in lines  # post-checkout switched back
        assert "redacted *_PASSWORD" in done.stdout and done.stdout.count("MY_SECRET") == 1
        assert "user 2000:2000 caps 0000000000000000" in lines and "nnp 1" in lines
        for group in ("--- :lock: kitebox: checking access", "--- :docker: kitebox: starting job container"):
            assert group in done.stderr
        assert "kitebox: using the repository's deploy key for checkout" in done.stderr
        audit = json.loads((world.root / "audit.jsonl").read_text())
        assert (audit["mode"], audit["outcome"], audit["job"]) == ("box", "allowed", world.job_id)
        assert leftovers(docker_client, world) == {"containers": [], "agents": [], "agent_dirs": []}

    @pytest.mark.parametrize("code", [1, 7, 125])
    def test_exit_code_passes_through(self, world, code):
        """The job's exit status is kitebox's, unchanged (125 included, though the agent reads it
        as process_run_error: it is the job's to choose)."""
        world.job["BUILDKITE_COMMAND"] = f"echo failing; exit {code}"
        done = world.run()
        assert done.returncode == code, done.stderr
        assert "failing" in done.stdout

    def test_build_dir_persists_per_pipeline(self, world):
        """A second job of the same pipeline on the same agent finds the first one's files."""
        world.job["BUILDKITE_COMMAND"] = 'echo kept > "$BUILDKITE_BUILD_CHECKOUT_PATH/from-first-job"'
        assert world.run().returncode == 0
        second = world.variant(BUILDKITE_COMMAND='cat "$BUILDKITE_BUILD_CHECKOUT_PATH/from-first-job"')
        done = second.run()
        assert done.returncode == 0 and "kept" in done.stdout.splitlines()


class TestRefusedJob:
    """A refused job prints one line per refusal, exits 94, and never creates a container."""

    def assert_nothing_created(self, world, docker_client, since, done):
        assert done.returncode == 94, done.stderr
        assert created_containers(docker_client, world.job_id, since) == []
        assert not world.build_dir.exists()
        assert not world.run_dir.exists() or list(world.run_dir.glob("u*/kitebox-*")) == []

    def test_acl_refusal(self, world, docker_client):
        """allowed_teams without the build's team: refused before any Docker call."""
        world.put(f"{BASE}/{PIPELINE}/allowed_teams", "sre", "String")
        since = time.time()
        done = world.run()
        self.assert_nothing_created(world, docker_client, since, done)
        assert f"[rule allowed_teams at {BASE}/{PIPELINE}/allowed_teams]" in done.stderr
        assert json.loads((world.root / "audit.jsonl").read_text())["outcome"] == "refused"

    def test_admission_refusal(self, world, docker_client):
        """A pipeline pinned to another repository may not build this one."""
        world.put(f"{BASE}/{PIPELINE}/repository", "git@github.com:acme/other.git", "String")
        since = time.time()
        done = world.run()
        self.assert_nothing_created(world, docker_client, since, done)
        assert "rule repository" in done.stderr

    def test_image_outside_allowlist(self, world, docker_client):
        """KITEBOX_JOB_IMAGE (author input) naming an image the queue does not allow."""
        world.job["KITEBOX_JOB_IMAGE"] = "evil/image:latest"
        since = time.time()
        done = world.run()
        self.assert_nothing_created(world, docker_client, since, done)
        assert "[rule image at KITEBOX_JOB_IMAGE]" in done.stderr

    def test_image_inside_allowlist(self, world, base_image):
        """An allowed override is used (the base image also has the buildkite-agent user)."""
        world.agent["KITEBOX_ALLOWED_IMAGES"] = base_image
        world.job["KITEBOX_JOB_IMAGE"] = base_image
        done = world.run()
        assert done.returncode == 0, done.stderr
        assert f"image {base_image}" in done.stderr

    def test_job_cannot_set_kitebox_settings(self, world, docker_client):
        """A KITEBOX_* setting in the job's env file (author input) is a one-line error, exit 95."""
        world.job["KITEBOX_ALLOW_DOCKER_SOCKET"] = "true"
        since = time.time()
        done = world.run()
        assert done.returncode == 95
        assert done.stderr.strip().splitlines() == [
            "kitebox: KITEBOX_ALLOW_DOCKER_SOCKET is set by the pipeline (a job variable); kitebox "
            "settings and AWS configuration come from the agent's environment only"
        ]
        assert created_containers(docker_client, world.job_id, since) == []


class TestHardening:
    """Queue settings that loosen or tighten the container, visible to the job."""

    def test_docker_socket_only_when_allowed_and_announced(self, world):
        """No socket by default; with KITEBOX_ALLOW_DOCKER_SOCKET=true it is there and the log says so."""
        world.job["BUILDKITE_COMMAND"] = "test -S /var/run/docker.sock && echo socket || echo no-socket"
        assert "no-socket" in world.run().stdout.splitlines()
        world.agent["KITEBOX_ALLOW_DOCKER_SOCKET"] = "true"
        done = world.variant().run()
        assert "socket" in done.stdout.splitlines()
        assert "mounts the Docker socket into the job" in done.stderr

    def test_limits(self, world, docker_client):
        """KITEBOX_CPUS and KITEBOX_MEMORY become the container's cgroup limits."""
        world.agent.update(KITEBOX_CPUS="0.5", KITEBOX_MEMORY="256m")
        world.job["BUILDKITE_COMMAND"] = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; true"
        done = world.run()
        assert str(256 * 1024 * 1024) in done.stdout
        assert job_containers(docker_client, world.job_id) == []


class TestJobCannotSteerKitebox:
    """Job variables are in kitebox's own environment too (buildkite-contract.md); the ones that
    would choose what kitebox runs as root or which engine it talks to are not obeyed."""

    def test_job_set_path_does_not_pick_kitebox_binaries(self, world):
        """A PATH whose first directory holds a fake iptables-save / ssh-agent is not used on the host."""
        trap = world.root / "trap"
        trap.mkdir()
        for name in ("iptables-save", "iptables", "ssh-agent", "ssh-add"):
            (trap / name).write_text(f"#!/bin/sh\ntouch {trap}/used-{name}\nexit 1\n")
            (trap / name).chmod(0o755)
        world.job["PATH"] = f"{trap}:/usr/local/bin:/usr/bin:/bin"
        done = world.run()
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in trap.iterdir() if p.name.startswith("used-")) == []

    def test_job_set_docker_host_is_ignored(self, world):
        """DOCKER_HOST from the job would send kitebox (and the secrets) to another engine."""
        world.job["DOCKER_HOST"] = "tcp://127.0.0.1:9"
        done = world.run()
        assert done.returncode == 0, done.stderr
