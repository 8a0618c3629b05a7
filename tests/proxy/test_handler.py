"""The pure request logic (src/kitebox/proxy/handler.py): every path and every failure, as tables."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kitebox.core.roles import RoleSession
from kitebox.core.secret import Secret
from kitebox.proxy.handler import HandlerConfig, handle
from kitebox.proxy.model import ECS, IMDS, Credentials, Forward, Job, Request, Unavailable

NOW = 1_800_000_000.0
ROLE = "arn:aws:iam::111111111111:role/ci-deploy"
A, B, C = "172.30.0.2", "172.30.0.3", "172.30.0.4"
KEY = b"k" * 32
CONFIG = HandlerConfig(token_key=KEY, region="eu-west-1", availability_zone="eu-west-1b")

JOB_A = Job("job-a", "c" * 64, A, Secret("token-a"), RoleSession(ROLE, "buildkite-job-job-a"), generation=1)
JOB_C = Job("job-c", "d" * 64, C, Secret("token-c"), None, generation=3)  # no role
CREDS = Credentials("ASIAEXAMPLE", Secret("s3cr3t"), Secret("sessiontoken"), NOW + 3600, NOW - 60, ROLE)


@dataclass
class FakeView:
    jobs: dict = field(default_factory=lambda: {A: JOB_A, C: JOB_C})
    creds: object = CREDS
    asked: list = field(default_factory=list)

    def job_at(self, address):
        return self.jobs.get(address)

    def credentials(self, job):
        self.asked.append(job.job_id)
        return self.creds


def clock():
    return NOW


def req(target, method="GET", source=A, endpoint=IMDS, **headers):
    pairs = tuple((k.lower().replace("_", "-"), v) for k, v in headers.items())
    return Request(endpoint, method, target, pairs, source)


def token_for(source=A, view=None, ttl="21600"):
    answer = handle(req("/latest/api/token", "PUT", source, x_aws_ec2_metadata_token_ttl_seconds=ttl),
                    view or FakeView(), clock, CONFIG)
    assert answer.status == 200
    return answer.body.decode()


def v2(target, source=A, view=None, token=None, **headers):
    view = view or FakeView()
    token = token if token is not None else token_for(source if source in view.jobs else A, view)
    return handle(req(target, source=source, x_aws_ec2_metadata_token=token, **headers), view, clock, CONFIG)


class TestToken:
    @pytest.mark.parametrize("ttl", ["1", "21600", "300", " 60 "], ids=["min", "max", "mid", "spaces"])
    def test_put_mints_a_token_and_echoes_the_ttl(self, ttl):
        """PUT /latest/api/token answers 200 and echoes the TTL header (the Rust SDK needs it)."""
        answer = handle(req("/latest/api/token", "PUT", x_aws_ec2_metadata_token_ttl_seconds=ttl),
                        FakeView(), clock, CONFIG)
        assert answer.status == 200 and answer.body.startswith(b"kbx1-")
        assert dict(answer.headers)["x-aws-ec2-metadata-token-ttl-seconds"] == ttl.strip()

    @pytest.mark.parametrize("ttl", [None, "0", "21601", "-5", "abc", ""], ids=["missing", "zero", "over", "neg", "word", "empty"])
    def test_bad_ttl_is_400(self, ttl):
        """A TTL outside 1..21600 is 400, on which botocore gives up rather than fall back to v1."""
        headers = {} if ttl is None else {"x_aws_ec2_metadata_token_ttl_seconds": ttl}
        answer = handle(req("/latest/api/token", "PUT", **headers), FakeView(), clock, CONFIG)
        assert answer.status == 400

    def test_get_on_token_path_is_405(self):
        """Only PUT mints a token."""
        assert handle(req("/latest/api/token"), FakeView(), clock, CONFIG).status == 405

    def test_unregistered_caller_gets_no_token(self):
        """An address with no registered job gets no token."""
        answer = handle(req("/latest/api/token", "PUT", B, x_aws_ec2_metadata_token_ttl_seconds="60"),
                        FakeView(), clock, CONFIG)
        assert answer.status == 403

    def test_token_is_bound_to_the_job(self):
        """A token minted for job A is refused from C's address, and after A re-registers."""
        token = token_for(A)
        assert v2("/latest/meta-data/iam/security-credentials/", C, token=token).status == 401
        reregistered = FakeView(jobs={A: replace(JOB_A, generation=2)})
        assert v2("/latest/meta-data/iam/security-credentials/", A, reregistered, token=token).status == 401

    def test_expired_token_is_refused(self):
        """A token is valid for its TTL only."""
        token = token_for(ttl="1")
        later = handle(req("/latest/meta-data/iam/security-credentials/", x_aws_ec2_metadata_token=token),
                       FakeView(), lambda: NOW + 2, CONFIG)
        assert later.status == 401

    @pytest.mark.parametrize("token", ["", "x", "kbx1-abc.def", "kbx1-!!.??", "kbx2-" + "a" * 40], ids=["empty", "junk", "bad-mac", "bad-b64", "prefix"])
    def test_forged_token_is_refused(self, token):
        """Only a token this proxy signed with its key is accepted."""
        assert v2("/latest/meta-data/iam/security-credentials/", token=token).status == 401

    def test_token_from_another_key_is_refused(self):
        """A token signed by another proxy (another key) is refused."""
        other = HandlerConfig(token_key=b"x" * 32, region="eu-west-1")
        token = handle(req("/latest/api/token", "PUT", x_aws_ec2_metadata_token_ttl_seconds="60"),
                       FakeView(), clock, other).body.decode()
        assert v2("/latest/meta-data/iam/security-credentials/", token=token).status == 401


class TestImdsPaths:
    def test_role_listing_is_the_role_name_only(self):
        """security-credentials/ lists exactly one role name: botocore uses the whole body."""
        answer = v2("/latest/meta-data/iam/security-credentials/")
        assert (answer.status, answer.body) == (200, b"ci-deploy")

    def test_credentials_in_the_exact_imds_format(self):
        """security-credentials/<role> is the IMDS JSON: Code, LastUpdated, Type, keys, Expiration."""
        answer = v2("/latest/meta-data/iam/security-credentials/ci-deploy")
        document = json.loads(answer.body)
        assert answer.status == 200 and answer.content_type == "application/json"
        assert document == {
            "Code": "Success",
            "LastUpdated": "2027-01-15T07:59:00Z",
            "Type": "AWS-HMAC",
            "AccessKeyId": "ASIAEXAMPLE",
            "SecretAccessKey": "s3cr3t",
            "Token": "sessiontoken",
            "Expiration": "2027-01-15T09:00:00Z",
        }

    @pytest.mark.parametrize(
        "target",
        [
            "/latest/meta-data/iam/security-credentials/other-role",
            "/latest/meta-data/iam/security-credentials/instance-role",
            "/latest/meta-data/iam/security-credentials/ci-deploy/",
            "/latest/user-data",
            "/latest/user-data/",
            "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
            "/latest/meta-data/public-keys/0/openssh-key",
            "/2021-07-15/meta-data/iam/security-credentials/ci-deploy",
            "/latest/meta-data/iam/security-credentials/../security-credentials/ci-deploy",
            "/latest//meta-data/iam/security-credentials/ci-deploy",
            "/",
        ],
        ids=["other-role", "instance-role", "trailing-slash", "user-data", "user-data-slash",
             "identity-credentials", "public-keys", "dated-version", "dotdot", "double-slash", "root"],
    )
    def test_everything_else_is_404(self, target):
        """Other roles, the instance role, user-data and unknown paths: 404 (or 400 if malformed)."""
        assert v2(target).status in (400, 404)

    def test_iam_info(self):
        """iam/info describes the job's role, not the instance profile."""
        document = json.loads(v2("/latest/meta-data/iam/info").body)
        assert document["Code"] == "Success"
        assert document["InstanceProfileArn"] == "arn:aws:iam::111111111111:instance-profile/ci-deploy"

    @pytest.mark.parametrize(
        ("target", "expected"),
        [
            ("/latest/meta-data/placement/availability-zone", "eu-west-1b"),
            ("/latest/meta-data/placement/availability-zone/", "eu-west-1b"),
            ("/latest/meta-data/placement/region", "eu-west-1"),
        ],
        ids=["az-botocore", "az-slash", "region"],
    )
    def test_region_paths(self, target, expected):
        """botocore reads the AZ, others placement/region (aws-credentials.md)."""
        answer = v2(target)
        assert (answer.status, answer.body.decode()) == (200, expected)

    def test_identity_document_carries_region_only(self):
        """Go v2 reads `region` from the identity document; nothing of the instance is added."""
        document = json.loads(v2("/latest/dynamic/instance-identity/document").body)
        assert document == {"region": "eu-west-1", "availabilityZone": "eu-west-1b"}

    def test_region_forwarded_when_not_configured(self):
        """With no region configured the three region paths are forwarded upstream instead."""
        bare = HandlerConfig(token_key=KEY)
        token = handle(req("/latest/api/token", "PUT", x_aws_ec2_metadata_token_ttl_seconds="60"),
                       FakeView(), clock, bare).body.decode()
        answer = handle(req("/latest/meta-data/placement/region", x_aws_ec2_metadata_token=token),
                        FakeView(), clock, bare)
        assert answer.forward == Forward("/latest/meta-data/placement/region")

    @pytest.mark.parametrize("target", ["/latest/meta-data/instance-id", "/latest/meta-data/instance-type?x=1"],
                             ids=["instance-id", "query-dropped"])
    def test_allowlisted_paths_are_forwarded(self, target):
        """A short allowlist goes upstream: the answer tells the server which path to fetch."""
        answer = v2(target)
        assert answer.forward == Forward(target.split("?")[0])

    def test_forwarding_needs_a_registered_job(self):
        """An unregistered address gets nothing forwarded either (IMDSv1 allowed, no job)."""
        loose = replace(CONFIG, allow_imdsv1=True)
        assert handle(req("/latest/meta-data/instance-id", source=B), FakeView(), clock, loose).status == 404

    def test_job_without_role_gets_no_credentials(self):
        """No role → 404 everywhere, never the instance role (issue 4)."""
        view = FakeView()
        assert v2("/latest/meta-data/iam/security-credentials/", C, view).status == 404
        assert v2("/latest/meta-data/iam/info", C, view).status == 404
        assert view.asked == []

    def test_refused_role_answers_with_the_rule(self):
        """A job whose role request was refused reads the refusal line in the 404 body."""
        line = "kitebox refused this job: role 'admin' is not in allowed_roles [rule allowed_roles at /x]"
        view = FakeView(jobs={A: replace(JOB_A, session=None, refusal=line)})
        answer = v2("/latest/meta-data/iam/security-credentials/", A, view)
        assert answer.status == 404 and answer.body.decode() == line

    @pytest.mark.parametrize("reason", ["AccessDenied: not authorized", "still fetching"])
    def test_sts_failure_is_an_error_without_credentials(self, reason):
        """STS down or refusing: 500 with the reason, no key in the body (fail closed)."""
        answer = v2("/latest/meta-data/iam/security-credentials/ci-deploy", view=FakeView(creds=Unavailable(reason)))
        assert answer.status == 500 and reason.encode() in answer.body and b"ASIA" not in answer.body

    @pytest.mark.parametrize(("left", "served"), [(25 * 60 + 1, True), (25 * 60, False), (60, False)],
                             ids=["just-over-25min", "exactly-25min", "one-minute"])
    def test_served_only_with_more_than_25_minutes_left(self, left, served):
        """botocore extends credentials with <= 25 min left; we never serve those."""
        view = FakeView(creds=replace(CREDS, expiration=NOW + left))
        answer = v2("/latest/meta-data/iam/security-credentials/ci-deploy", view=view)
        assert (answer.status == 200) is served

    def test_imdsv1_refused_by_default(self):
        """Without a token the request is IMDSv1: 401 unless the config allows it."""
        answer = handle(req("/latest/meta-data/iam/security-credentials/"), FakeView(), clock, CONFIG)
        assert answer.status == 401

    def test_imdsv1_allowed_by_config(self):
        """allow_imdsv1 answers tokenless GETs from a registered job."""
        loose = replace(CONFIG, allow_imdsv1=True)
        answer = handle(req("/latest/meta-data/iam/security-credentials/ci-deploy"), FakeView(), clock, loose)
        assert answer.status == 200

    @pytest.mark.parametrize("method", ["POST", "DELETE", "PATCH"])
    def test_other_methods_are_405(self, method):
        """IMDS answers GET (and PUT for tokens) only."""
        assert handle(req("/latest/meta-data/iam/info", method), FakeView(), clock, CONFIG).status == 405

    def test_x_forwarded_for_is_refused(self):
        """Like AWS's IMDS, any request carrying X-Forwarded-For is refused."""
        assert v2("/latest/meta-data/iam/security-credentials/ci-deploy", x_forwarded_for="10.0.0.1").status == 403
        put = req("/latest/api/token", "PUT", x_aws_ec2_metadata_token_ttl_seconds="60", x_forwarded_for="1.2.3.4")
        assert handle(put, FakeView(), clock, CONFIG).status == 403


def ecs(source=A, host="169.254.170.2", auth="token-a", target="/v1/credentials", method="GET", view=None):
    headers = {"host": host}
    if auth is not None:
        headers["authorization"] = auth
    return handle(req(target, method, source, ECS, **headers), view or FakeView(), clock, CONFIG)


class TestContainerEndpoint:
    def test_credentials_for_the_right_token(self):
        """Right address, right token → the container-credentials JSON with RoleArn."""
        answer = ecs()
        assert answer.status == 200
        assert json.loads(answer.body) == {
            "AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "s3cr3t", "Token": "sessiontoken",
            "Expiration": "2027-01-15T09:00:00Z", "RoleArn": ROLE, "AccountId": "111111111111",
        }

    @pytest.mark.parametrize(
        ("kwargs", "status"),
        [
            ({"auth": None}, 401),
            ({"auth": "token-c"}, 403),
            ({"auth": "token-a "}, 403),
            ({"source": C}, 403),
            ({"source": B}, 403),
            ({"host": "evil.example.com"}, 403),
            ({"host": "169.254.169.254"}, 403),
            ({"host": ""}, 403),
            ({"target": "/v2/credentials/x"}, 404),
            ({"target": "/v1/credentials/../x"}, 404),
            ({"method": "POST"}, 405),
        ],
        ids=["no-auth", "another-jobs-token", "token-plus-space", "token-from-other-address",
             "unregistered-address", "rebound-host", "imds-host", "no-host", "other-path", "dotdot", "post"],
    )
    def test_refusals(self, kwargs, status):
        """Token, address and Host must all match; every other request is refused without keys."""
        answer = ecs(**kwargs)
        assert answer.status == status and b"ASIA" not in answer.body

    def test_host_with_port_80_accepted(self):
        """Host may carry the default port."""
        assert ecs(host="169.254.170.2:80").status == 200

    def test_no_role_is_404(self):
        """A job with no role gets a clear 404, never the instance role."""
        answer = ecs(source=C, auth="token-c")
        assert answer.status == 404 and json.loads(answer.body)["code"] == "NoRole"

    def test_refused_role_carries_the_line(self):
        """A refused role request answers 403 with the one line naming the rule."""
        line = "kitebox refused this job: ... [rule allowed_roles at /vendors/buildkite/p/allowed_roles]"
        view = FakeView(jobs={A: replace(JOB_A, session=None, refusal=line)})
        answer = ecs(view=view)
        assert answer.status == 403 and json.loads(answer.body)["message"] == line

    def test_sts_failure(self):
        """STS failing → 500 and a reason, no credentials."""
        answer = ecs(view=FakeView(creds=Unavailable("ExpiredToken")))
        assert answer.status == 500 and json.loads(answer.body)["code"] == "CredentialsUnavailable"

    def test_x_forwarded_for_refused(self):
        """A relayed request is refused on the container endpoint as well."""
        answer = handle(req("/v1/credentials", "GET", A, ECS, host="169.254.170.2", authorization="token-a",
                            x_forwarded_for="1.1.1.1"), FakeView(), clock, CONFIG)
        assert answer.status == 403


_METHODS = st.sampled_from(["GET", "PUT", "POST", "HEAD", "DELETE", "get", ""])
_TARGETS = st.one_of(
    st.text(max_size=120),
    st.builds(lambda p: "/latest/" + p, st.text(max_size=80)),
    st.sampled_from(["/latest/meta-data/iam/security-credentials/ci-deploy", "/v1/credentials", "/latest/api/token"]),
)
_HEADER_NAMES = st.sampled_from(["host", "authorization", "x-aws-ec2-metadata-token",
                                 "x-aws-ec2-metadata-token-ttl-seconds", "x-forwarded-for", "x"])


class TestParsingProperties:
    @settings(max_examples=400, deadline=None)
    @given(st.sampled_from([IMDS, ECS]), _METHODS, _TARGETS,
           st.lists(st.tuples(_HEADER_NAMES, st.text(max_size=40)), max_size=5), st.sampled_from([A, B, C]))
    def test_never_leaks_without_token_and_address(self, endpoint, method, target, headers, source):
        """Whatever arrives, a secret key is served only to A's address with A's token or a valid v2 token."""
        view = FakeView()
        answer = handle(Request(endpoint, method, target, tuple(headers), source), view, clock, CONFIG)
        assert isinstance(answer.status, int) and 100 <= answer.status < 600
        if b"s3cr3t" in answer.body:
            assert source == A and answer.status == 200
            assert ("authorization", "token-a") in headers or any(k == "x-aws-ec2-metadata-token" for k, _ in headers)
            assert not any(k == "x-forwarded-for" for k, _ in headers)
