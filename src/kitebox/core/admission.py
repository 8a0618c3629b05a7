"""Admission: may this pipeline build this repository and this branch on this queue?

Per-pipeline nodes (seed 002): `repository` (the job's repo must be that repository, compared
after normalisation) and `allowed_branches` (glob patterns, one per line). Both are optional.
Both rest on author-controlled variables (BUILDKITE_REPO, BUILDKITE_BRANCH): they pin what the
pipeline claims to build, which is what the namespaces and roles are then chosen by.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from kitebox.core.checks import Check, list_entries
from kitebox.core.identity import JobIdentity
from kitebox.core.slug import normalise_repo
from kitebox.errors import BadInputError


def check_repository(node: str, value: str, job: JobIdentity) -> Check:
    try:
        expected = normalise_repo(value.strip())
    except BadInputError:
        return Check(node, "repository", False, "the repository node does not hold a usable URL")
    try:
        actual = normalise_repo(job.repo)
    except BadInputError as error:
        return Check(node, "repository", False, str(error))
    if actual == expected:
        return Check(node, "repository", True, f"repository is {expected}")
    return Check(node, "repository", False, f"this pipeline may only build {expected}, not {actual}")


def check_allowed_branches(node: str, value: str, parameter_type: str, job: JobIdentity) -> Check:
    # fnmatch: '*' also matches '/', so 'release/*' admits 'release/a/b' too (documented).
    patterns = list_entries(value, parameter_type)
    for pattern in patterns:
        if job.branch and fnmatchcase(job.branch, pattern):
            return Check(node, "allowed_branches", True, f"branch {job.branch!r} matches {pattern!r}")
    return Check(
        node,
        "allowed_branches",
        False,
        f"branch {job.branch!r} matches none of the {len(patterns)} allowed_branches patterns",
    )
