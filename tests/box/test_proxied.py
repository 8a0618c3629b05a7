"""Box mode with the metadata proxy (issue 4): a boxed job asking for an allowed role gets that
role's credentials from the container endpoint, its token never in `docker inspect`; a job
asking for a role it may not have, or any job when the proxy does not answer, starts no
container. The inner bootstrap is the agent stand-in (images/agent-stand-in/bootstrap)."""

from __future__ import annotations

import json

import pytest

from kitebox.proxy.credentials import BotoSts
from kitebox.proxy.daemon import Proxy, ProxyConfig
from tests.box.conftest import BASE, PIPELINE, job_containers

ROLE = "arn:aws:iam::123456789012:role/app-deploy"
OTHER = "arn:aws:iam::123456789012:role/someone-elses"
# In the container: which credentials the SDK chain finds, without any AWS call (no network).
PROBE = ("python3 -c 'import botocore.session; c = botocore.session.get_session().get_credentials(); "
         "print(\"CREDENTIALS\", c.method if c else None, bool(c and c.access_key))'")


@pytest.fixture
def proxy(world, tmp_path):
    """kitebox's proxy on the box world's job network, STS from the moto server."""
    audit: list[dict] = []
    config = ProxyConfig(
        job_network=world.network.name, imds_port=0, ecs_port=0, state_dir=tmp_path / "proxy",
        admin_port=0, upstream=None, region="us-east-1", availability_zone="us-east-1a",
    )
    running = Proxy(config, BotoSts(world.aws.client("sts")), audit.append).start()
    world.agent.update(KITEBOX_PROXY="required", KITEBOX_PROXY_SOCKET=str(config.socket_path))
    try:
        yield running, audit
    finally:
        running.stop()


class TestWithTheProxy:
    """The job's role comes from the proxy; nothing about it is in the container's config."""

    def test_allowed_role_reaches_the_sdk(self, world, proxy, docker_client):
        """KITEBOX_ROLE naming an allowed role → the SDK in the job finds container-role credentials."""
        running, audit = proxy
        world.put(f"{BASE}/{PIPELINE}/allowed_roles", ROLE, "String")
        world.job.update(KITEBOX_ROLE=ROLE, BUILDKITE_COMMAND=PROBE)
        done = world.run()
        assert done.returncode == 0, done.stdout + done.stderr
        assert "CREDENTIALS container-role True" in done.stdout
        issued = [line for line in audit if line.get("job") == world.job_id]
        assert issued and issued[0]["role"] == ROLE
        assert json.dumps(issued).count("SecretAccessKey") == 0

    def test_no_role_no_credentials(self, world, proxy):
        """A job that asks for no role finds no credentials at all (never the instance role)."""
        world.job.update(BUILDKITE_COMMAND=PROBE)
        done = world.run()
        assert done.returncode == 0, done.stdout + done.stderr
        assert "CREDENTIALS None False" in done.stdout

    def test_role_not_allowed_starts_nothing(self, world, proxy, docker_client):
        """A role outside allowed_roles refuses the job in one line naming the rule; no container."""
        world.put(f"{BASE}/{PIPELINE}/allowed_roles", ROLE, "String")
        world.job.update(KITEBOX_ROLE=OTHER)
        done = world.run()
        assert done.returncode == 94
        assert "allowed_roles" in done.stderr
        assert job_containers(docker_client, world.job_id) == []


class TestWithoutTheProxy:
    """Fail closed when the proxy is required but absent, or a role is asked on a proxy-less queue."""

    def test_proxy_required_but_not_running(self, world, docker_client, tmp_path):
        """KITEBOX_PROXY=required and no proxy: one line naming the socket, exit 95, no container."""
        world.agent.update(KITEBOX_PROXY="required", KITEBOX_PROXY_SOCKET=str(tmp_path / "absent.sock"))
        done = world.run()
        assert done.returncode == 95
        assert "the kitebox proxy does not answer" in done.stderr
        assert job_containers(docker_client, world.job_id) == []

    def test_role_requested_on_a_queue_without_proxy(self, world, docker_client):
        """KITEBOX_ROLE on a KITEBOX_PROXY=off queue is refused (exit 94), never silently ignored."""
        world.put(f"{BASE}/{PIPELINE}/allowed_roles", ROLE, "String")
        world.job.update(KITEBOX_ROLE=ROLE)
        done = world.run()
        assert done.returncode == 94 and "KITEBOX_PROXY=off" in done.stderr
        assert job_containers(docker_client, world.job_id) == []
