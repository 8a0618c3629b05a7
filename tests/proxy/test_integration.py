"""The proxy end to end: real job containers on an --internal network, the real iptables
redirect, STS from moto, and Debian's boto3 inside the containers (issue 4, "Testing")."""

from __future__ import annotations

import json
import os
import stat
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from kitebox.core.decision import Decision
from kitebox.core.identity import JobIdentity
from kitebox.proxy import client, rules
from kitebox.proxy.client import ProxyError
from tests.proxy.conftest import REGION, ROLE_A, ROLE_B, ROLE_DENIED, raw, sdk, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.moto]

IMDS = "http://169.254.169.254"
ECS_URL = "http://169.254.170.2/v1/credentials"


def caller_arn(moto, found: dict) -> str:
    """Who moto says these credentials belong to: proves the container got its own role."""
    sts = moto.client("sts", aws_access_key_id=found["access_key"], aws_secret_access_key=found["secret"],
                      aws_session_token=found["token"])
    return sts.get_caller_identity()["Arn"]


class TestRedirect:
    def test_rules_in_place_and_nothing_else_reachable(self, proxy):
        """The DNAT rules exist, and a job reaching 169.254.169.254 or .170.2 on any other port is
        refused at once: it can reach nothing there but the proxy (never the real IMDS)."""
        assert rules.installed(proxy.proxy.redirect)
        job = proxy.start_job("job-probe", None)
        probe = r"""
import socket, sys, time, json
out = {}
for host, port in [("169.254.169.254", 443), ("169.254.169.254", 8080), ("169.254.170.2", 443),
                   ("169.254.169.254", 80)]:
    s = socket.socket(); s.settimeout(3); t = time.monotonic()
    try:
        s.connect((host, port)); out[f"{host}:{port}"] = "connected"
    except Exception as e:
        out[f"{host}:{port}"] = type(e).__name__
    s.close()
print(json.dumps(out))
"""
        result = json.loads(job.python(probe))
        assert result["169.254.169.254:80"] == "connected"  # the proxy
        for key in ("169.254.169.254:443", "169.254.169.254:8080", "169.254.170.2:443"):
            assert result[key] == "ConnectionRefusedError", result

    def test_proxy_ports_refuse_other_interfaces(self, proxy):
        """The proxy's ports on the gateway answer the job network only (here: not loopback)."""
        host = proxy.proxy.server.host
        port = proxy.proxy.server.ports["imds"]
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{host}:{port}/latest/meta-data/", timeout=2)


class TestSdkInsideJobContainers:
    def test_pipelines_a_and_b_at_once_get_their_own_roles_and_c_nothing(self, proxy, moto):
        """A's and B's jobs, running at the same time, each get their own role through IMDS and
        through the container endpoint; C, with no role, gets no credentials at all."""
        a = proxy.start_job("job-a", ROLE_A)
        b = proxy.start_job("job-b", ROLE_B)
        c = proxy.start_job("job-c", None)
        with ThreadPoolExecutor(6) as pool:
            futures = {(j.job_id, mode): pool.submit(sdk, j, mode) for j in (a, b, c) for mode in ("imds", "container")}
            found = {key: f.result() for key, f in futures.items()}
        for job, role_name in ((a, "pipeline-a-deploy"), (b, "pipeline-b-deploy")):
            via_imds, via_container = found[(job.job_id, "imds")], found[(job.job_id, "container")]
            assert via_imds["method"] == "iam-role", via_imds
            assert via_container["method"] == "container-role", via_container
            for answer in (via_imds, via_container):
                assert caller_arn(moto, answer) == (
                    f"arn:aws:sts::123456789012:assumed-role/{role_name}/buildkite-job-{job.job_id}")
        assert found[("job-c", "imds")]["method"] is None
        assert found[("job-c", "container")]["method"] is None
        # one STS call per job, made at registration: the SDK requests were cache hits
        assert len(proxy.issued("job-a")) == 1 and len(proxy.issued("job-b")) == 1
        assert proxy.issued("job-c") == []

    def test_first_request_may_beat_the_registration(self, proxy):
        """A job asking before its registration has landed (box mode registers right after
        `docker start`) is held briefly and then answered, not refused (kube2iam #136)."""
        early = r"""
import json, time, urllib.request
def get(path, headers, method="GET"):
    req = urllib.request.Request("http://169.254.169.254" + path, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=1) as answer:  # botocore's IMDS timeout
        return answer.read().decode()
started = time.monotonic()
token = get("/latest/api/token", {"x-aws-ec2-metadata-token-ttl-seconds": "60"}, "PUT")
h = {"x-aws-ec2-metadata-token": token}
role = get("/latest/meta-data/iam/security-credentials/", h)
key = json.loads(get("/latest/meta-data/iam/security-credentials/" + role, h))["AccessKeyId"]
print(json.dumps({"key": key, "seconds": time.monotonic() - started}), flush=True)
time.sleep(120)
"""
        job = proxy.start_job("job-early", ROLE_A, register=False, command=["python3", "-c", early])
        time.sleep(0.25)  # the container's first request is in flight, waiting
        from kitebox.core.roles import RoleSession, session_name

        client.register("job-early", job.container, job.address, job.token,
                        RoleSession(ROLE_A, session_name("job-early")), wait=5.0, socket_path=proxy.socket)
        from tests.proxy.conftest import docker

        assert wait_for(lambda: docker("logs", job.container).strip(), timeout=10)
        result = json.loads(docker("logs", job.container).splitlines()[0])
        assert result["seconds"] < 1.0  # every step within botocore's 1 s IMDS timeout
        assert result["key"] in [r["access_key_id"] for r in proxy.issued("job-early") if r["outcome"] == "issued"]

    def test_region_from_imds(self, proxy):
        """botocore in the container finds the region through IMDS (placement/availability-zone)."""
        job = proxy.start_job("job-region", None)
        assert sdk(job, "imds")["region"] == REGION

    def test_instance_role_is_never_reachable(self, proxy, standin_imds):
        """Even asking by the instance role's name, through either version, yields 404; the
        upstream (which does offer an instance role) never sees a credentials request."""
        job = proxy.start_job("job-nosy", ROLE_A)
        token = raw(job, f"{IMDS}/latest/api/token", {"x-aws-ec2-metadata-token-ttl-seconds": "60"}, "PUT")
        assert token["status"] == 200 and token["headers"]["x-aws-ec2-metadata-token-ttl-seconds"] == "60"
        headers = {"x-aws-ec2-metadata-token": token["body"]}
        for path in ("iam/security-credentials/the-instance-role", "user-data", "iam/security-credentials/x"):
            assert raw(job, f"{IMDS}/latest/meta-data/{path}", headers)["status"] == 404
        assert raw(job, f"{IMDS}/latest/meta-data/iam/security-credentials/")["status"] == 401  # IMDSv1 off
        assert not any("security-credentials" in path for _, path, _ in standin_imds.requests)

    def test_allowlisted_path_forwarded_with_a_token_and_no_forwarded_for(self, proxy, standin_imds):
        """instance-id reaches the upstream with the proxy's own token and no X-Forwarded-For."""
        job = proxy.start_job("job-fwd", None)
        token = raw(job, f"{IMDS}/latest/api/token", {"x-aws-ec2-metadata-token-ttl-seconds": "60"}, "PUT")["body"]
        answer = raw(job, f"{IMDS}/latest/meta-data/instance-id", {"x-aws-ec2-metadata-token": token})
        assert (answer["status"], answer["body"]) == (200, "i-0standin000000000")
        gets = [h for method, path, h in standin_imds.requests if path == "/latest/meta-data/instance-id"]
        assert gets and all(h.get("x-aws-ec2-metadata-token") == "upstream-token" for h in gets)
        assert all("x-forwarded-for" not in h for _, _, h in standin_imds.requests)

    def test_container_endpoint_wants_this_jobs_token(self, proxy):
        """Another job's token, or none, from this container's address: refused."""
        a = proxy.start_job("job-tok-a", ROLE_A)
        b = proxy.start_job("job-tok-b", ROLE_B)
        assert raw(a, ECS_URL, {"Authorization": b.token})["status"] == 403
        assert raw(a, ECS_URL)["status"] == 401
        assert raw(a, ECS_URL, {"Authorization": a.token})["status"] == 200


class TestRefusalsAndFailures:
    def test_refused_role_is_one_line_naming_the_rule(self, proxy):
        """A job asking for a role its pipeline may not take: box mode gets one line naming the
        rule and node from plan(); if registered anyway, the job reads that line and gets nothing."""
        decision = Decision(JobIdentity(job_id="job-d", pipeline_slug="pipe-d"), (), (),
                            roles=((ROLE_A, "/vendors/buildkite/pipe-d/allowed_roles"),))
        session, check = client.plan(decision, {"KITEBOX_ROLE": ROLE_B})
        assert session is None and not check.passed
        line = check.line()
        assert "\n" not in line and "allowed_roles" in line and "/vendors/buildkite/pipe-d/allowed_roles" in line
        job = proxy.start_job("job-d", None, refusal=line)
        assert sdk(job, "imds")["method"] is None
        answer = raw(job, ECS_URL, {"Authorization": job.token})
        assert answer["status"] == 403 and json.loads(answer["body"])["message"] == line

    def test_sts_refusal_fails_closed_with_an_audit_line(self, proxy):
        """STS refusing the role: an error answer without credentials and an audit line saying why."""
        job = proxy.start_job("job-denied", ROLE_DENIED)
        answer = raw(job, ECS_URL, {"Authorization": job.token})
        assert answer["status"] == 500 and "AccessDenied" in answer["body"] and "AccessKeyId" not in answer["body"]
        assert sdk(job, "imds")["method"] is None
        failed = [r for r in proxy.issued("job-denied") if r["outcome"] == "failed"]
        assert failed and "AccessDenied" in failed[0]["error"] and failed[0]["role"] == ROLE_DENIED

    def test_registration_with_wrong_labels_is_refused(self, proxy):
        """A registration whose token does not match the container's label is refused."""
        with pytest.raises(ProxyError, match="label kitebox.token-sha256"):
            proxy.start_job("job-mislabelled", ROLE_A, labels_token="something-else-entirely-0123")

    def test_no_secret_in_audit_inspect_or_state_permissions(self, proxy):
        """Audit lines hold no secret key or token; labels hold the token's hash only; the state
        file and the admin socket are 0600 in a 0700 directory."""
        job = proxy.start_job("job-secrets", ROLE_A)
        found = sdk(job, "container")
        audit_text = json.dumps(proxy.audit)
        assert found["secret"] not in audit_text and found["token"] not in audit_text and job.token not in audit_text
        from tests.proxy.conftest import docker

        inspected = docker("inspect", job.container)
        assert job.token not in inspected and found["secret"] not in inspected
        state_dir = proxy.proxy.config.state_dir
        assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(state_dir / "proxy-state.json").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(proxy.socket).st_mode) == 0o600


class TestOperations:
    def test_health_and_metrics(self, proxy):
        """Health and Prometheus metrics answer on the admin address."""
        host, port = proxy.proxy.admin_http.address
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=3) as answer:
            assert json.loads(answer.read())["status"] == "ok"
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=3) as answer:
            text = answer.read().decode()
        assert "kitebox_proxy_sts_calls_total" in text and "kitebox_proxy_jobs" in text

    def test_ensure_running(self, proxy, tmp_path):
        """ensure_running passes with the proxy up, and refuses (box mode must not start) without."""
        client.ensure_running(proxy.socket)
        with pytest.raises(ProxyError, match="does not answer"):
            client.ensure_running(tmp_path / "nothing.sock")

    def test_dead_container_forgotten_through_docker_events(self, proxy):
        """When a job container dies, the proxy forgets it without being told."""
        from tests.proxy.conftest import docker

        job = proxy.start_job("job-dies", ROLE_A)
        assert proxy.proxy.registry.by_job("job-dies") is not None
        docker("rm", "-f", job.container)
        assert wait_for(lambda: proxy.proxy.registry.by_job("job-dies") is None, timeout=10)
