"""allowed_pipelines and allowed_teams (src/kitebox/core/acl.py)."""

from __future__ import annotations

import pytest

from kitebox.core.acl import check_allowed_pipelines, check_allowed_teams
from kitebox.core.identity import JobIdentity

NODE = "/vendors/buildkite/global/allowed_teams"
PNODE = "/vendors/buildkite/global/allowed_pipelines"


def job(pipeline="my-pipe", creator=(), unblocker=(), source="webhook"):
    return JobIdentity(pipeline_slug=pipeline, creator_teams=tuple(creator), unblocker_teams=tuple(unblocker), source=source)


class TestAllowedPipelines:
    @pytest.mark.parametrize(
        ("value", "parameter_type"),
        [
            ("my-pipe", "String"),
            ("other\nmy-pipe\n", "String"),
            ("\n\n  my-pipe  \n\n", "String"),
            ("other,my-pipe", "StringList"),
            ("other, my-pipe", "StringList"),
        ],
        ids=["only", "among-others", "blank-lines-and-spaces", "stringlist", "stringlist-spaces"],
    )
    def test_listed_pipeline_passes(self, value, parameter_type):
        """A pipeline listed in allowed_pipelines passes (seed ACL, buildkite-contract.md)."""
        check = check_allowed_pipelines(PNODE, value, parameter_type, job())
        assert check.passed
        assert check.rule == "allowed_pipelines" and check.node == PNODE

    @pytest.mark.parametrize(
        ("value", "parameter_type"),
        [
            ("other-pipe\nsecret-pipe", "String"),
            ("", "String"),
            ("my-pipe-2", "String"),
            ("my-pipe,other", "String"),
            ("MY-PIPE", "String"),
        ],
        ids=["not-listed", "empty-list", "prefix-only", "comma-in-string-type", "case"],
    )
    def test_unlisted_pipeline_is_refused(self, value, parameter_type):
        """A node holding allowed_pipelines refuses a pipeline it does not list (seed ACL)."""
        check = check_allowed_pipelines(PNODE, value, parameter_type, job())
        assert not check.passed
        assert PNODE in check.line() and "allowed_pipelines" in check.line()
        assert "'my-pipe'" in check.message

    def test_refusal_does_not_list_other_pipelines(self):
        """A refusal says how many pipelines are listed, never which."""
        check = check_allowed_pipelines(PNODE, "secret-pipe-a\nsecret-pipe-b", "String", job())
        assert "secret-pipe" not in check.line()
        assert "2 listed" in check.message


class TestAllowedTeams:
    @pytest.mark.parametrize(
        ("creator", "unblocker"),
        [(("ops",), ()), ((), ("ops",)), (("dev", "ops"), ("sec",)), (("dev",), ("ops",))],
        ids=["creator", "unblocker", "creator-among-several", "union"],
    )
    def test_listed_team_passes(self, creator, unblocker):
        """A build whose creator or unblocker teams include a listed team passes (seed ACL: union of both)."""
        check = check_allowed_teams(NODE, "ops\nqa", "String", job(creator=creator, unblocker=unblocker))
        assert check.passed
        assert "'ops'" in check.message

    def test_stringlist(self):
        """allowed_teams as a StringList is read comma-separated."""
        assert check_allowed_teams(NODE, "qa,ops", "StringList", job(creator=("ops",))).passed

    @pytest.mark.parametrize(
        ("creator", "unblocker", "source"),
        [
            (("dev",), ("sec",), "webhook"),
            ((), (), "ui"),
            ((), (), "webhook"),
            ((), (), ""),
            (("dev",), (), "schedule"),
            ((), ("dev",), "schedule"),
        ],
        ids=["no-match", "ui-no-teams", "webhook-no-teams", "no-source-no-teams", "schedule-creator-mismatch", "schedule-unblocker-mismatch"],
    )
    def test_unlisted_teams_are_refused(self, creator, unblocker, source):
        """A build with no listed team is refused unless it is a scheduled build with no teams at all (seed ACL)."""
        check = check_allowed_teams(NODE, "ops\nqa", "String", job(creator=creator, unblocker=unblocker, source=source))
        assert not check.passed
        assert check.rule == "allowed_teams"
        assert NODE in check.line() and "allowed_teams" in check.line()

    def test_scheduled_build_without_teams_passes(self):
        """A scheduled build whose team variables are both empty passes the team check (seed rule, buildkite-contract.md)."""
        check = check_allowed_teams(NODE, "ops", "String", job(source="schedule"))
        assert check.passed
        assert "scheduled" in check.message

    def test_refusal_names_build_teams_not_list_entries(self):
        """A team refusal shows the build's teams, never the other entries of the list."""
        check = check_allowed_teams(NODE, "secret-team-a\nsecret-team-b", "String", job(creator=("dev",), unblocker=("sec",)))
        assert "secret-team" not in check.line()
        assert "dev, sec" in check.message

    def test_refusal_without_teams_says_so(self):
        """A refused build with no teams is described as having no teams."""
        check = check_allowed_teams(NODE, "ops", "String", job())
        assert "no teams" in check.message

    def test_empty_list_refuses_everyone_with_teams(self):
        """An allowed_teams node with no entries admits no team."""
        assert not check_allowed_teams(NODE, "\n\n", "String", job(creator=("ops",))).passed

    def test_team_match_is_exact(self):
        """Team slugs must match exactly, not by prefix or case."""
        assert not check_allowed_teams(NODE, "ops", "String", job(creator=("ops-admins", "OPS"))).passed
