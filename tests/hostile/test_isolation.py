"""A job container against the metadata proxy: it cannot use another job's credentials (IMDSv2
token, container-endpoint token, role name), nor reach the proxy's administrative doors (the
admin socket, the admin HTTP port). The proxy alone, as box mode does not register with it yet;
real containers on an --internal network, the real iptables redirect, moto's STS.

Already in tests/proxy (not repeated): only the proxy answers at 169.254.169.254:80, other ports
there and at 169.254.170.2 are refused (test_integration.py::TestRedirect); B's token from A's
address is refused (::test_container_endpoint_wants_this_jobs_token); a reused address gets
nothing (test_churn.py).
"""

from __future__ import annotations

import json

import pytest

from tests.proxy.conftest import ROLE_A, ROLE_B, raw

pytestmark = [pytest.mark.docker, pytest.mark.moto]

IMDS = "http://169.254.169.254"
ECS_URL = "http://169.254.170.2/v1/credentials"
TTL = {"x-aws-ec2-metadata-token-ttl-seconds": "60"}

PROBE = r"""
import json, os, socket, sys
out = {}
for host, port in json.loads(sys.argv[1]):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, port)); out[f"{host}:{port}"] = "connected"
    except Exception as e:
        out[f"{host}:{port}"] = type(e).__name__
    s.close()
for path in json.loads(sys.argv[2]):
    out[path] = "exists" if os.path.lexists(path) else "absent"
print(json.dumps(out))
"""


def token(job) -> str:
    answer = raw(job, f"{IMDS}/latest/api/token", TTL, "PUT")
    assert answer["status"] == 200, answer
    return answer["body"]


class TestAnotherJobsCredentials:
    def test_a_token_minted_for_a_is_useless_in_b(self, proxy):
        """A's IMDSv2 token, sent from B's container: 401 on every path, A's role name included."""
        a = proxy.start_job("iso-a", ROLE_A)
        b = proxy.start_job("iso-b", ROLE_B)
        stolen = {"x-aws-ec2-metadata-token": token(a)}
        for path in ("iam/security-credentials/", "iam/security-credentials/pipeline-a-deploy",
                     "iam/security-credentials/pipeline-b-deploy", "iam/info"):
            answer = raw(b, f"{IMDS}/latest/meta-data/{path}", stolen)
            assert answer["status"] == 401 and "SecretAccessKey" not in answer.get("body", ""), (path, answer)

    def test_b_cannot_ask_for_as_role_by_name(self, proxy):
        """With its own valid token, B asking for A's role by name gets 404, never A's keys."""
        a = proxy.start_job("iso-a2", ROLE_A)
        b = proxy.start_job("iso-b2", ROLE_B)
        own = {"x-aws-ec2-metadata-token": token(b)}
        answer = raw(b, f"{IMDS}/latest/meta-data/iam/security-credentials/pipeline-a-deploy", own)
        assert answer["status"] == 404 and "SecretAccessKey" not in answer["body"]
        mine = raw(b, f"{IMDS}/latest/meta-data/iam/security-credentials/pipeline-b-deploy", own)
        assert mine["status"] == 200 and json.loads(mine["body"])["AccessKeyId"]
        assert raw(a, ECS_URL, {"Authorization": a.token})["status"] == 200  # A is served, to A

    def test_as_container_token_used_from_b_gets_nothing(self, proxy):
        """A's container-endpoint token leaked into B (same network, registered): 403 from B's
        address; only A's own address with A's token is served."""
        a = proxy.start_job("iso-a3", ROLE_A)
        b = proxy.start_job("iso-b3", ROLE_B)
        answer = raw(b, ECS_URL, {"Authorization": a.token})
        assert answer["status"] == 403 and "AccessKeyId" not in answer["body"], answer
        assert json.loads(raw(a, ECS_URL, {"Authorization": a.token})["body"])["RoleArn"] == ROLE_A


class TestAdministrativeDoors:
    def test_admin_port_and_socket_unreachable_from_a_job(self, proxy):
        """The admin HTTP port (loopback) is not reachable from a job container, neither on the
        gateway nor on the container's own loopback; the admin socket's path, the proxy's state
        directory and box mode's default socket path do not exist inside the container."""
        job = proxy.start_job("iso-admin", ROLE_A)
        host, port = proxy.proxy.admin_http.address
        gateway = proxy.proxy.server.host
        targets = [(gateway, port), ("127.0.0.1", port), ("169.254.169.254", port), ("169.254.170.2", port)]
        paths = [str(proxy.socket), str(proxy.socket.parent), "/run/kitebox/proxy/proxy.sock", "/run/kitebox/proxy"]
        result = json.loads(job.python(PROBE, json.dumps(targets), json.dumps(paths)))
        for target in targets:
            assert result[f"{target[0]}:{target[1]}"] != "connected", (target, result)
        for path in paths:
            assert result[path] == "absent", (path, result)
        assert host == "127.0.0.1"  # and it answers there, on the host
