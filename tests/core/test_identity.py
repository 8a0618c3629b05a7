"""The job's identity read from its environment (src/kitebox/core/identity.py)."""

from __future__ import annotations

import dataclasses

import pytest

from kitebox.core.identity import JobIdentity

FULL_ENV = {
    "BUILDKITE_JOB_ID": "job-1",
    "BUILDKITE_BUILD_ID": "build-1",
    "BUILDKITE_BUILD_NUMBER": "42",
    "BUILDKITE_ORGANIZATION_SLUG": "acme",
    "BUILDKITE_PIPELINE_SLUG": "my-pipe",
    "BUILDKITE_REPO": "git@github.com:acme/app.git",
    "BUILDKITE_BRANCH": "main",
    "BUILDKITE_COMMIT": "abc123",
    "BUILDKITE_SOURCE": "webhook",
    "BUILDKITE_BUILD_CREATOR": "Ada",
    "BUILDKITE_BUILD_CREATOR_EMAIL": "ada@example.com",
    "BUILDKITE_BUILD_CREATOR_TEAMS": "ops:dev",
    "BUILDKITE_UNBLOCKER_TEAMS": "sec",
    "BUILDKITE_AGENT_META_DATA_QUEUE": "deploy",
    "BUILDKITE_STEP_KEY": "deploy-step",
    "BUILDKITE_AGENT_NAME": "agent-1",
}


class TestFromEnviron:
    def test_every_field_is_read(self):
        """Each field comes from its BUILDKITE_* variable (buildkite-contract.md, variables used for access decisions)."""
        job = JobIdentity.from_environ(FULL_ENV)
        assert job == JobIdentity(
            job_id="job-1",
            build_id="build-1",
            build_number="42",
            organization_slug="acme",
            pipeline_slug="my-pipe",
            repo="git@github.com:acme/app.git",
            branch="main",
            commit="abc123",
            source="webhook",
            creator="Ada",
            creator_email="ada@example.com",
            creator_teams=("dev", "ops"),
            unblocker_teams=("sec",),
            queue="deploy",
            step_key="deploy-step",
            agent_name="agent-1",
        )

    def test_missing_variables_are_empty(self):
        """A missing variable reads as an empty string or an empty team tuple."""
        assert JobIdentity.from_environ({}) == JobIdentity()
        assert JobIdentity().creator_teams == () and JobIdentity().repo == ""

    def test_identity_is_frozen(self):
        """The identity cannot be changed after it is read."""
        job = JobIdentity.from_environ(FULL_ENV)
        with pytest.raises(dataclasses.FrozenInstanceError):
            job.pipeline_slug = "other"  # type: ignore[misc]


class TestTeams:
    @pytest.mark.parametrize(
        ("value", "teams"),
        [
            ("", ()),
            ("ops", ("ops",)),
            ("ops:dev", ("dev", "ops")),
            ("ops::dev:", ("dev", "ops")),
            (" ops : dev ", ("dev", "ops")),
            ("ops:ops:dev", ("dev", "ops")),
            (":::", ()),
        ],
        ids=["empty", "one", "two-sorted", "empty-parts", "spaces", "duplicates", "only-colons"],
    )
    def test_team_list_parsing(self, value, teams):
        """Team variables are colon-separated slugs, stripped, de-duplicated and sorted (buildkite-contract.md)."""
        job = JobIdentity.from_environ({"BUILDKITE_BUILD_CREATOR_TEAMS": value, "BUILDKITE_UNBLOCKER_TEAMS": value})
        assert job.creator_teams == teams
        assert job.unblocker_teams == teams

    def test_teams_is_the_union(self):
        """`teams` is the creator's teams ∪ the unblocker's, sorted, as the seed ACL uses them."""
        job = JobIdentity(creator_teams=("ops", "dev"), unblocker_teams=("sec", "ops"))
        assert job.teams == ("dev", "ops", "sec")
