"""Where the ACL is decided: `allowed_pipelines` and `allowed_teams`, at any node.

The seed plugin's rules, exactly: a node that holds either list denies the job unless the job is
listed; when both lists are present both must pass; teams are the creator's ∪ the unblocker's; a
scheduled build with no teams at all passes the team check (creating a schedule needs Full
Access to the pipeline). A denial anywhere fails the job.
"""

from __future__ import annotations

from kitebox.core.checks import Check, list_entries, shown
from kitebox.core.identity import JobIdentity


def check_allowed_pipelines(node: str, value: str, parameter_type: str, job: JobIdentity) -> Check:
    # Rests on BUILDKITE_PIPELINE_SLUG, which the author could set; in box mode the pipeline
    # namespace read is the same slug, so lying only swaps one set of rules for another's.
    allowed = list_entries(value, parameter_type)
    if job.pipeline_slug in allowed:
        return Check(node, "allowed_pipelines", True, f"pipeline {job.pipeline_slug!r} is listed")
    return Check(
        node,
        "allowed_pipelines",
        False,
        f"pipeline {job.pipeline_slug!r} is not in allowed_pipelines ({len(allowed)} listed)",
    )


def check_allowed_teams(node: str, value: str, parameter_type: str, job: JobIdentity) -> Check:
    # Rests on BUILDKITE_BUILD_CREATOR_TEAMS / BUILDKITE_UNBLOCKER_TEAMS / BUILDKITE_SOURCE: the
    # agent sets them, but whether a step's env can override them is not known (contract doc).
    allowed = set(list_entries(value, parameter_type))
    matched = sorted(allowed & set(job.teams))
    if matched:
        return Check(node, "allowed_teams", True, f"team {matched[0]!r} is listed")
    if not job.creator_teams and not job.unblocker_teams and job.source == "schedule":
        return Check(node, "allowed_teams", True, "scheduled build with no teams: passes (seed rule)")
    teams = ", ".join(map(shown, job.teams)) if job.teams else "no teams"
    return Check(
        node,
        "allowed_teams",
        False,
        f"none of the build's teams ({teams}) is in allowed_teams",
    )
