"""Role choice and STS session parameters (src/kitebox/core/roles.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kitebox.core.identity import JobIdentity
from kitebox.core.roles import (
    RULE,
    RoleSession,
    choose_role,
    role_name,
    role_session,
    session_name,
    session_tags,
    source_identity,
)

PIPE = "/vendors/buildkite/pipe-a/allowed_roles"
GLOBAL = "/vendors/buildkite/global/allowed_roles"
DEPLOY = "arn:aws:iam::111111111111:role/ci-deploy"
READ = "arn:aws:iam::111111111111:role/team/ci-read"
OTHER_ACCOUNT_DEPLOY = "arn:aws:iam::222222222222:role/ci-deploy"
STS_NAME = re.compile(r"^[\w+=,.@-]{2,64}$", re.ASCII)


class TestChooseRole:
    @pytest.mark.parametrize(
        ("requested", "allowed", "arn", "node"),
        [
            (DEPLOY, [(DEPLOY, PIPE)], DEPLOY, PIPE),
            ("ci-deploy", [(DEPLOY, PIPE)], DEPLOY, PIPE),
            ("ci-read", [(DEPLOY, PIPE), (READ, GLOBAL)], READ, GLOBAL),
            ("  ci-deploy \n", [(DEPLOY, PIPE)], DEPLOY, PIPE),
            (READ, [(READ, GLOBAL)], READ, GLOBAL),
        ],
        ids=["arn", "short-name", "name-under-path-from-global", "whitespace", "arn-with-path"],
    )
    def test_allowed_role_is_granted(self, requested, allowed, arn, node):
        """A requested role listed in an allowed_roles node is granted, naming the node."""
        chosen, check = choose_role(requested, allowed)
        assert chosen == arn
        assert check.passed and check.rule == RULE and check.node == node

    @pytest.mark.parametrize(
        ("requested", "allowed"),
        [
            ("arn:aws:iam::111111111111:role/admin", [(DEPLOY, PIPE)]),
            ("admin", [(DEPLOY, PIPE)]),
            (DEPLOY, []),
            ("ci-deploy", []),
            ("arn:aws:iam::111111111111:role/ci-deploy-x", [(DEPLOY, PIPE)]),
            ("CI-DEPLOY", [(DEPLOY, PIPE)]),
        ],
        ids=["other-arn", "other-name", "nothing-allowed-arn", "nothing-allowed-name", "prefix", "case"],
    )
    def test_unlisted_role_is_refused_naming_the_rule(self, requested, allowed):
        """A role not in allowed_roles is refused; the one line names the rule and the node."""
        chosen, check = choose_role(requested, allowed)
        assert chosen is None and not check.passed
        line = check.line()
        assert "allowed_roles" in line
        assert (PIPE in line) if allowed else ("no allowed_roles node" in line)
        assert "\n" not in line

    def test_no_request_means_no_role_even_with_one_allowed(self):
        """Explicit is safer: one allowed role is NOT taken by default (documented choice)."""
        chosen, check = choose_role("", [(DEPLOY, PIPE)])
        assert chosen is None
        assert check.passed and "no role requested" in check.message

    def test_ambiguous_short_name_is_refused(self):
        """A short name matching roles in two accounts is refused: the ARN must be given."""
        chosen, check = choose_role("ci-deploy", [(DEPLOY, PIPE), (OTHER_ACCOUNT_DEPLOY, GLOBAL)])
        assert chosen is None and not check.passed
        assert "full ARN" in check.message

    @pytest.mark.parametrize(
        "requested",
        ["arn:aws:iam::1:role/x", "arn:aws:s3:::bucket", "a b", "x\ny", "role/ci-deploy"],
        ids=["short-account", "not-iam", "space", "newline", "slash"],
    )
    def test_malformed_request_is_refused(self, requested):
        """A KITEBOX_ROLE that is neither a role ARN nor a role name is refused, not guessed."""
        chosen, check = choose_role(requested, [(DEPLOY, PIPE)])
        assert chosen is None and not check.passed and check.rule == RULE

    @given(st.text(max_size=80), st.lists(st.sampled_from([DEPLOY, READ, OTHER_ACCOUNT_DEPLOY]), max_size=3))
    def test_only_ever_grants_an_allowed_arn(self, requested, arns):
        """Whatever is asked, the granted role is one of the allowed ARNs, or none."""
        chosen, check = choose_role(requested, [(a, PIPE) for a in arns])
        assert chosen is None or chosen in arns
        assert check.passed == (chosen is not None or not requested.strip())

    def test_role_name_of_arns(self):
        """The short name is the last path part of a role ARN, in any partition."""
        assert role_name(READ) == "ci-read"
        assert role_name("arn:aws-us-gov:iam::111111111111:role/x1") == "x1"
        assert role_name("arn:aws:iam::111111111111:user/x") is None


class TestSessionParameters:
    def test_session_name_for_a_uuid_fits_whole(self):
        """`buildkite-job-<job id>` (issue 4); a UUID job id fits STS's 64 characters whole."""
        job = "0190f9d2-6c55-4d7e-9c8e-6a7b2b3c4d5e"
        assert session_name(job) == f"buildkite-job-{job}"

    @given(st.text(max_size=200))
    def test_session_name_within_sts_limits(self, job_id):
        """Any job id yields a RoleSessionName STS accepts: [\\w+=,.@-], 2 to 64 characters."""
        assert STS_NAME.match(session_name(job_id))

    @given(st.text(max_size=200), st.text(max_size=200))
    def test_source_identity_within_sts_limits(self, creator, email):
        """SourceIdentity is None or 2-64 characters of STS's set, whatever the creator is called."""
        value = source_identity(creator, email)
        assert value is None or STS_NAME.match(value)

    @pytest.mark.parametrize(
        ("creator", "email", "expected"),
        [
            ("Ada Lovelace", "ada@example.com", "ada@example.com"),
            ("Ada Lovelace", "", "Ada-Lovelace"),
            ("Zoë Ünal", "", "Zoe-Unal"),
            ("", "", None),
            ("x", "", None),
            ("李", "", None),
        ],
        ids=["email-wins", "name", "accents", "nobody", "too-short", "nothing-ascii"],
    )
    def test_source_identity_names_the_creator(self, creator, email, expected):
        """The build creator (email preferred) becomes the SourceIdentity CloudTrail shows."""
        assert source_identity(creator, email) == expected

    def test_session_tags(self):
        """Tags name organization, pipeline, build, branch and queue; empty ones are left out."""
        tags = dict(session_tags(JobIdentity(
            organization_slug="acme", pipeline_slug="pipe-a", build_number="42",
            branch="feature/ß x", queue="",
        )))
        assert tags == {
            "buildkite:organization": "acme", "buildkite:pipeline": "pipe-a",
            "buildkite:build": "42", "buildkite:branch": "feature/_ x",
        }

    @given(st.text(max_size=600), st.text(max_size=600))
    def test_tags_within_sts_limits(self, branch, pipeline):
        """Tag values are at most 256 characters of IAM's tag set; keys at most 128."""
        for key, value in session_tags(JobIdentity(branch=branch, pipeline_slug=pipeline, queue="q")):
            assert len(key) <= 128 and len(value) <= 256
            assert re.fullmatch(r"[\w .:/=+\-@]*", value, re.ASCII)

    def test_role_session_round_trips_through_json(self):
        """A RoleSession survives the admin socket and the state file unchanged."""
        session = role_session(DEPLOY, JobIdentity(job_id="j-1", creator="Ada", pipeline_slug="p"))
        assert RoleSession.from_json(session.as_json()) == session
        assert session.session_name == "buildkite-job-j-1" and session.source_identity == "Ada"


class TestExplainShowsTheRoleDecision:
    def _decision(self):
        from kitebox.core.decision import Decision

        return Decision(JobIdentity(job_id="j", pipeline_slug="pipe-a"), (), (), roles=((DEPLOY, PIPE),))

    def test_granted_role_in_text_and_json(self):
        """explain names the granted role and the node that allows it."""
        from kitebox.core import explain

        text = explain.as_text(self._decision(), "ci-deploy")
        assert f"✓ {DEPLOY}: role 'ci-deploy' is allowed" in text
        role = explain.as_json(self._decision(), "ci-deploy")["role"]
        assert role["granted"] == DEPLOY and role["node"] == PIPE and role["passed"]

    def test_refused_role_shows_the_one_line(self):
        """A refused request shows the refusal line naming the rule and the node."""
        from kitebox.core import explain

        text = explain.as_text(self._decision(), "admin")
        assert "✗ no credentials" in text and f"[rule allowed_roles at {PIPE}]" in text

    def test_no_role_requested(self):
        """Without KITEBOX_ROLE explain says the job gets no credentials, and lists what it could take."""
        from kitebox.core import explain

        text = explain.as_text(self._decision())
        assert "no role requested" in text and f"allowed: {DEPLOY}  from {PIPE}" in text
