"""Who is this job: read once from the job's environment into a frozen object.

EVERY field here comes from a `BUILDKITE_*` variable, and every one of them may have been set
by the pipeline author (a step's `env:`, a trigger, the API). Whether the agent protects
`BUILDKITE_BUILD_CREATOR_TEAMS` from being overridden is not known (buildkite-contract.md,
"Variables used for access decisions"), so each decision that rests on a field says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


def _teams(value: str) -> tuple[str, ...]:
    # The agent joins non-private team slugs with ':' (buildkite-contract.md).
    return tuple(sorted({t.strip() for t in value.split(":") if t.strip()}))


@dataclass(frozen=True)
class JobIdentity:
    """The job as its environment describes it. Author-controlled, every field."""

    job_id: str = ""
    build_id: str = ""
    build_number: str = ""
    organization_slug: str = ""
    pipeline_slug: str = ""
    repo: str = ""
    branch: str = ""
    commit: str = ""
    source: str = ""
    creator: str = ""
    creator_email: str = ""
    creator_teams: tuple[str, ...] = ()
    unblocker_teams: tuple[str, ...] = ()
    queue: str = ""
    step_key: str = ""
    agent_name: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "JobIdentity":
        get = lambda name: environ.get(name, "")  # noqa: E731 - a local alias keeps the table readable
        return cls(
            job_id=get("BUILDKITE_JOB_ID"),
            build_id=get("BUILDKITE_BUILD_ID"),
            build_number=get("BUILDKITE_BUILD_NUMBER"),
            organization_slug=get("BUILDKITE_ORGANIZATION_SLUG"),
            pipeline_slug=get("BUILDKITE_PIPELINE_SLUG"),
            repo=get("BUILDKITE_REPO"),
            branch=get("BUILDKITE_BRANCH"),
            commit=get("BUILDKITE_COMMIT"),
            source=get("BUILDKITE_SOURCE"),
            creator=get("BUILDKITE_BUILD_CREATOR"),
            creator_email=get("BUILDKITE_BUILD_CREATOR_EMAIL"),
            creator_teams=_teams(get("BUILDKITE_BUILD_CREATOR_TEAMS")),
            unblocker_teams=_teams(get("BUILDKITE_UNBLOCKER_TEAMS")),
            queue=get("BUILDKITE_AGENT_META_DATA_QUEUE"),
            step_key=get("BUILDKITE_STEP_KEY"),
            agent_name=get("BUILDKITE_AGENT_NAME"),
        )

    @property
    def teams(self) -> tuple[str, ...]:
        """Creator ∪ unblocker teams, as the seed plugin's ACL uses them."""
        return tuple(sorted(set(self.creator_teams) | set(self.unblocker_teams)))
