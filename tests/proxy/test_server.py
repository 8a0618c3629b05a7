"""The HTTP servers (server.py) on loopback, the request parser, the iptables rules (rules.py),
and STS through moto including the web-identity mode (credentials.py)."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kitebox.core.roles import RoleSession
from kitebox.core.secret import Secret
from kitebox.proxy import rules
from kitebox.proxy.credentials import BotoSts, CredentialCache, CredentialError
from kitebox.proxy.handler import HandlerConfig
from kitebox.proxy.model import Job, Response
from kitebox.proxy.registry import Registry
from kitebox.proxy.server import SERVERS, Dispatcher, parse_request
from tests.proxy.test_cache_registry import Clock, FakeOwnership, FakeSts

ROLE = "arn:aws:iam::111111111111:role/ci-deploy"


class TestParser:
    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=300))
    def test_never_raises(self, data):
        """Any bytes parse to a request, 'need more', or a 4xx answer: never an exception."""
        result = parse_request(data)
        assert result is None or isinstance(result, (Response, tuple))
        if isinstance(result, Response):
            assert 400 <= result.status < 600

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60),
           st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True),
                           st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
                           max_size=5))
    def test_round_trip(self, target, headers):
        """A well-formed request comes back with its method, target and lower-cased headers."""
        headers = {k.lower(): v for k, v in headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
        raw = f"GET /{target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        method, parsed_target, parsed_headers, keep_alive, consumed = parse_request(raw.encode("latin-1"))
        assert (method, parsed_target, consumed) == ("GET", f"/{target}", len(raw))
        assert dict(parsed_headers) == {k: v.strip() for k, v in headers.items()}

    @pytest.mark.parametrize(
        ("raw", "status"),
        [
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET /\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n x: folded\r\n\r\n", 400),
            (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"PUT / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n" + b"x: " + b"a" * 20000, 431),
        ],
        ids=["http2", "no-version", "no-colon", "folded", "chunked", "big-body", "huge-head"],
    )
    def test_malformed(self, raw, status):
        """Malformed or oversized requests are answered 4xx/5xx and the connection closed."""
        assert parse_request(raw).status == status


def make_dispatcher(delay=0.0):
    clock = Clock(time.time())
    registry = Registry(FakeOwnership())
    cache = CredentialCache(FakeSts(clock, delay), lambda record: None, clock=clock)
    job = Job("j1", "c" * 64, "127.0.0.1", Secret("a-token-of-twenty-chars"), RoleSession(ROLE, "buildkite-job-j1"))
    registry.register(job, pid=1)
    return Dispatcher(registry, cache, HandlerConfig(token_key=b"k" * 32, region="eu-west-1"), None, clock), cache


@pytest.fixture(params=sorted(SERVERS))
def server(request):
    dispatcher, cache = make_dispatcher(delay=0.2)
    running = SERVERS[request.param](dispatcher, "127.0.0.1", 0, 0).start()
    yield running, cache
    running.stop()
    cache.close()


class TestServers:
    def test_keep_alive_token_then_credentials_and_cold_miss(self, server):
        """One keep-alive connection: PUT a token, then credentials; the first (cold, STS takes
        200 ms) answer waits for the one STS call off the event loop, later ones are hits."""
        running, cache = server
        conn = http.client.HTTPConnection("127.0.0.1", running.ports["imds"], timeout=5)
        conn.request("PUT", "/latest/api/token", headers={"x-aws-ec2-metadata-token-ttl-seconds": "60"})
        answer = conn.getresponse()
        token = answer.read().decode()
        assert answer.status == 200 and answer.getheader("x-aws-ec2-metadata-token-ttl-seconds") == "60"
        for _ in range(3):
            conn.request("GET", "/latest/meta-data/iam/security-credentials/ci-deploy",
                         headers={"x-aws-ec2-metadata-token": token})
            answer = conn.getresponse()
            assert answer.status == 200 and json.loads(answer.read())["Type"] == "AWS-HMAC"
        conn.close()
        assert cache.sts_calls == 1

    def test_container_endpoint_and_pipelining(self, server):
        """Two pipelined requests on one connection are answered in order."""
        running, _ = server
        sock = socket.create_connection(("127.0.0.1", running.ports["ecs"]), timeout=5)
        request = (b"GET /v1/credentials HTTP/1.1\r\nHost: 169.254.170.2\r\n"
                   b"Authorization: a-token-of-twenty-chars\r\n\r\n")
        sock.sendall(request + request.replace(b"a-token", b"x-token"))
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"HTTP/1.1 ") < 2 and time.monotonic() < deadline:
            data += sock.recv(65536)
        sock.close()
        first, second = data.split(b"HTTP/1.1 ")[1:3]
        assert first.startswith(b"200") and b"RoleArn" in first
        assert second.startswith(b"403")

    def test_head_and_close(self, server):
        """HEAD has no body; Connection: close is honoured."""
        running, _ = server
        conn = http.client.HTTPConnection("127.0.0.1", running.ports["imds"], timeout=5)
        conn.request("HEAD", "/latest/meta-data/instance-id", headers={"Connection": "close"})
        answer = conn.getresponse()
        assert answer.status == 401 and answer.read() == b""
        conn.close()


@pytest.mark.docker
class TestRules:
    REDIRECT = rules.Redirect("kbxtest0", "10.254.254.0/28", "10.254.254.1", 18769, 18770)

    def test_install_is_idempotent_and_remove_is_complete(self):
        """Installing twice leaves one copy of each rule; removing leaves none of our chains."""
        if subprocess.run(["iptables", "-w", "5", "-t", "nat", "-S"], capture_output=True).returncode != 0:
            pytest.skip("no usable iptables here (needs root)")
        try:
            rules.install(self.REDIRECT)
            rules.install(self.REDIRECT)
            assert rules.installed(self.REDIRECT)
            nat = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
            assert nat.count("-j KBX-kbxtest0") == 1 and nat.count("--to-destination 10.254.254.1:18769") == 1
            flt = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
            assert flt.count("-A INPUT -j KBXF-kbxtest0") == 1 and flt.count("-A FORWARD -j KBXF-kbxtest0") == 1
        finally:
            rules.remove(self.REDIRECT)
        assert not rules.installed(self.REDIRECT)
        everything = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        assert "kbxtest0" not in everything


@pytest.mark.moto
class TestStsThroughMoto:
    def test_assume_role_with_tags_and_source_identity(self, moto):
        """AssumeRole with session name, tags and SourceIdentity against moto's STS."""
        sts = BotoSts(moto.client("sts"))
        session = RoleSession(ROLE, "buildkite-job-j1", "ada@example.com", (("buildkite:pipeline", "p"),))
        creds = sts.assume(session, "j1", 3600)
        assert creds.access_key_id.startswith("ASIA") and creds.expiration - time.time() > 3500
        who = moto.client("sts", aws_access_key_id=creds.access_key_id,
                          aws_secret_access_key=creds.secret_access_key.reveal(),
                          aws_session_token=creds.token.reveal()).get_caller_identity()
        assert who["Arn"].endswith("assumed-role/ci-deploy/buildkite-job-j1")

    def test_web_identity_mode(self, moto, tmp_path):
        """AssumeRoleWithWebIdentity with the job's OIDC token file; a missing file fails closed."""
        sts = BotoSts(moto.client("sts"), web_identity_dir=tmp_path)
        session = RoleSession(ROLE, "buildkite-job-j2")
        with pytest.raises(CredentialError, match="web identity token"):
            sts.assume(session, "j2", 3600)
        (tmp_path / "j2.jwt").write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvcmdhbml6YXRpb246YSJ9.c2ln\n")
        creds = sts.assume(session, "j2", 3600)
        assert creds.access_key_id and creds.role_arn == ROLE

    def test_unreachable_sts_is_a_credential_error(self):
        """STS that cannot be reached: CredentialError, one line, no traceback into the answer."""
        import boto3
        import botocore.config

        client = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                       region_name="us-east-1").client(
            "sts", endpoint_url="http://127.0.0.1:9",
            config=botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=1))
        with pytest.raises(CredentialError, match="cannot reach AWS"):
            BotoSts(client).assume(RoleSession(ROLE, "buildkite-job-j3"), "j3", 3600)
