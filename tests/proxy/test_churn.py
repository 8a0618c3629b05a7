"""A reused address never yields the previous job's credentials (kiam #499, kube2iam #17/#178),
with real containers churning on one address."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time

import pytest

from kitebox.proxy import client
from kitebox.proxy.client import ProxyError
from tests.proxy.conftest import ROLE_A, ROLE_B, Running, docker, moto_sts, raw, sdk, start_proxy

pytestmark = [pytest.mark.docker, pytest.mark.moto]

IMDS = "http://169.254.169.254"
ECS_URL = "http://169.254.170.2/v1/credentials"

# Runs as the job container's own command from its first instant: polls IMDS for credentials
# every 10 ms and prints each access key seen, so requests race the registration and the
# previous holder's death. Bounded: 3000 polls at most (30 s).
POLLER = r"""
import json, time, urllib.request
def get(path, headers, method="GET"):
    req = urllib.request.Request("http://169.254.169.254" + path, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=1) as answer:
        return answer.read().decode()
for _ in range(3000):
    try:
        token = get("/latest/api/token", {"x-aws-ec2-metadata-token-ttl-seconds": "60"}, "PUT")
        h = {"x-aws-ec2-metadata-token": token}
        role = get("/latest/meta-data/iam/security-credentials/", h)
        key = json.loads(get("/latest/meta-data/iam/security-credentials/" + role, h))["AccessKeyId"]
        print(key, flush=True)
    except Exception as error:
        print("-", type(error).__name__, flush=True)
    time.sleep(0.01)
"""


def module_proxy(network, base_image, standin_imds, moto, tmp_path_factory, **kwargs) -> Running:
    audit: list[dict] = []
    root = tmp_path_factory.mktemp("proxy")
    (root / "tokens").mkdir()
    proxy = start_proxy(network, root / "state", standin_imds.url, audit, moto_sts(moto), **kwargs)
    return Running(proxy, audit, network, base_image, root / "tokens")


@pytest.fixture(scope="module")
def quiet(job_network, base_image, standin_imds, moto, tmp_path_factory):
    """A proxy that never hears of a container's death: no Docker events, no sweeper. Only the
    per-request ownership check stands between a reused address and the old credentials."""
    run = module_proxy(job_network, base_image, standin_imds, moto, tmp_path_factory,
                       follow_events=False, refresh_interval=3600)
    yield run
    run.cleanup()
    run.proxy.stop()


def fixed_address(network: str) -> str:
    subnet = docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", network)
    return str(list(ipaddress.ip_network(subnet).hosts())[-1])


class TestReusedAddress:
    def test_new_container_on_a_dead_jobs_address_gets_nothing(self, quiet):
        """A dies unannounced; B starts on A's address before anyone deregisters A: B's requests
        (a token, A's credentials by name, the container endpoint with A's leaked token) all fail;
        once B registers it gets B's own role. Eight rounds, alternating roles."""
        address = fixed_address(quiet.network)
        previous = quiet.start_job("churn-0", ROLE_A, ip=address)
        assert sdk(previous, "imds")["method"] == "iam-role"
        for round_ in range(1, 9):
            docker("rm", "-f", previous.container)  # the proxy is not told
            quiet.containers.remove(previous.container)
            role = ROLE_B if round_ % 2 else ROLE_A
            job = quiet.start_job(f"churn-{round_}", role, ip=address, register=False)
            assert job.address == previous.address
            token = raw(job, f"{IMDS}/latest/api/token", {"x-aws-ec2-metadata-token-ttl-seconds": "60"}, "PUT")
            assert token["status"] == 403, token
            old_role = (ROLE_B if (round_ - 1) % 2 else ROLE_A).rsplit("/", 1)[1]
            leaked = raw(job, ECS_URL, {"Authorization": previous.token})
            assert leaked["status"] == 403 and "AccessKeyId" not in leaked.get("body", ""), leaked
            assert raw(job, f"{IMDS}/latest/meta-data/iam/security-credentials/{old_role}")["status"] in (401, 404)
            from kitebox.core.roles import RoleSession, session_name

            client.register(job.job_id, job.container, job.address, job.token,
                            RoleSession(role, session_name(job.job_id)), wait=5.0, socket_path=quiet.socket)
            found = sdk(job, "imds")
            issued = [r["access_key_id"] for r in quiet.issued(job.job_id) if r["outcome"] == "issued"]
            assert found["method"] == "iam-role" and found["access_key"] in issued
            previous = job

    def test_rapid_churn_each_container_sees_only_its_own_keys(self, quiet):
        """Containers started back to back on one address poll IMDS from their first instant;
        each one only ever sees its own job's access key, never its predecessor's."""
        proxy = quiet
        proxy.cleanup()  # the previous test's last container holds the address
        address = fixed_address(proxy.network)
        seen: dict[str, list[str]] = {}
        for round_ in range(8):
            job_id = f"rapid-{round_}"
            job = proxy.start_job(job_id, ROLE_A if round_ % 2 else ROLE_B, ip=address, register=False,
                                  command=["python3", "-c", POLLER])
            from kitebox.core.roles import RoleSession, session_name

            client.register(job_id, job.container, job.address, job.token,
                            RoleSession(job.role, session_name(job_id)), wait=5.0, socket_path=proxy.socket)
            time.sleep(0.4)
            docker("kill", job.container)
            seen[job_id] = [line.split()[0] for line in docker("logs", job.container).splitlines() if line.strip()]
            docker("rm", "-f", job.container)
            proxy.containers.remove(job.container)
        for job_id, keys in seen.items():
            own = {r["access_key_id"] for r in proxy.issued(job_id) if r["outcome"] == "issued"}
            served = {k for k in keys if k != "-"}
            assert served, f"{job_id} never got credentials: {keys[:5]}"
            assert served <= own, f"{job_id} saw keys of another job: {served - own}"
