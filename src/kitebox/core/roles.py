"""Which AWS role a job takes, and the STS parameters that name it in CloudTrail. Pure.

    choose_role(requested, allowed)  → (role ARN or None, Check)
    session_name(job_id)             → RoleSessionName `buildkite-job-<job id>`, within STS limits
    source_identity(creator, email)  → SourceIdentity, the person behind the build
    session_tags(identity)           → the session tags (pipeline, build, branch, queue, organization)

The role a step asks for is the step's `KITEBOX_ROLE` variable (settings.AUTHOR_VARIABLES): an ARN,
or a short role name matched against the names of the ARNs in `allowed_roles`. It is granted only
when listed in an `allowed_roles` node (global, repo or pipeline: decision.py collects them all).

No role asked for → no role, even when exactly one is allowed: taking a role must be visible in the
pipeline definition, so that a role added to a shared (global or repo) node later does not silently
hand credentials to every pipeline under it. No role → the proxy serves no credentials at all,
never the instance role (issue 4, "no role → no credentials at all").

Everything here rests on author-controlled variables (KITEBOX_ROLE, BUILDKITE_*): they pick among
what the pipeline's nodes allow, they never widen it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

from kitebox.core.checks import Check
from kitebox.core.identity import JobIdentity

ROLE_VARIABLE = "KITEBOX_ROLE"
RULE = "allowed_roles"

# STS limits (aws-credentials.md, "STS").
STS_NAME_MIN, STS_NAME_MAX = 2, 64
TAG_KEY_MAX, TAG_VALUE_MAX, MAX_TAGS = 128, 256, 50
SESSION_PREFIX = "buildkite-job-"

_STS_NAME_CHAR = re.compile(r"[\w+=,.@-]", re.ASCII)
# Tag keys and values: letters, digits, spaces and _ . : / = + - @ (IAM's documented set).
_TAG_CHAR = re.compile(r"[\w .:/=+\-@]", re.ASCII)
# A role ARN: arn:<partition>:iam::<12 digits>:role/<optional path/><name>
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/(?:[\w+=,.@/-]*/)?([\w+=,.@-]{1,64})$", re.ASCII)
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$", re.ASCII)


@dataclass(frozen=True)
class AllowedRole:
    arn: str
    node: str  # the allowed_roles parameter that lists it


def role_name(arn: str) -> str | None:
    """`arn:aws:iam::123456789012:role/path/ci-deploy` → `ci-deploy`; None if not a role ARN."""
    match = _ROLE_ARN.match(arn)
    return match.group(1) if match else None


def choose_role(requested: str, allowed: Iterable[tuple[str, str]]) -> tuple[str | None, Check]:
    """The role ARN the job gets (or None) and the Check that says why.

    `requested` is the step's KITEBOX_ROLE (empty: none); `allowed` the decision's (ARN, node) pairs.
    A refusal is a failed Check naming the rule `allowed_roles` and the node(s) consulted; asking
    for nothing is not a refusal (the check passes with no role).
    """
    entries = tuple(AllowedRole(arn.strip(), node) for arn, node in allowed if arn.strip())
    nodes = ", ".join(dict.fromkeys(e.node for e in entries)) or "no allowed_roles node"
    wanted = requested.strip()
    if not wanted:
        return None, Check(
            ROLE_VARIABLE, RULE, True,
            f"no role requested: the job gets no AWS credentials ({len(entries)} role(s) allowed; "
            f"set {ROLE_VARIABLE} on the step to take one)",
        )
    if "\n" in wanted or "\r" in wanted or len(wanted) > 2048:
        return None, Check(ROLE_VARIABLE, RULE, False, f"{ROLE_VARIABLE} is not a role name or ARN")
    if wanted.startswith("arn:"):
        if role_name(wanted) is None:
            return None, Check(ROLE_VARIABLE, RULE, False, f"{ROLE_VARIABLE} {wanted!r} is not an IAM role ARN")
        for entry in entries:
            if entry.arn == wanted:
                return entry.arn, Check(entry.node, RULE, True, f"role {wanted} is allowed")
        return None, _refused(wanted, nodes, entries)
    if not _ROLE_NAME.match(wanted):
        return None, Check(ROLE_VARIABLE, RULE, False, f"{ROLE_VARIABLE} {wanted!r} is not a role name or ARN")
    matches = [e for e in entries if role_name(e.arn) == wanted]
    arns = sorted({m.arn for m in matches})
    if len(arns) == 1:
        return arns[0], Check(matches[0].node, RULE, True, f"role {wanted!r} is allowed as {arns[0]}")
    if len(arns) > 1:
        # Two accounts (or paths) with a role of that name: a short name would be a guess.
        return None, Check(
            ", ".join(dict.fromkeys(m.node for m in matches)), RULE, False,
            f"role name {wanted!r} matches {len(arns)} allowed roles; set {ROLE_VARIABLE} to the full ARN",
        )
    return None, _refused(wanted, nodes, entries)


def _refused(wanted: str, nodes: str, entries: tuple[AllowedRole, ...]) -> Check:
    return Check(
        nodes, RULE, False,
        f"role {wanted!r} is not in allowed_roles ({len(entries)} listed) for this pipeline",
    )


def _fold(text: str) -> str:
    """Accents dropped (`ë` → `e`); other characters kept for the caller to replace."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _sts_chars(text: str) -> str:
    """Keep what STS takes in names ([\\w+=,.@-]); map anything else to '-' (accents dropped first)."""
    return "".join(c if _STS_NAME_CHAR.match(c) else "-" for c in _fold(text))


def session_name(job_id: str) -> str:
    """`buildkite-job-<job id>`, cut to 64 characters and to STS's character set.

    Buildkite job ids are UUIDs (36 chars), so the name fits whole: 14 + 36 = 50.
    """
    name = (SESSION_PREFIX + _sts_chars(job_id))[:STS_NAME_MAX]
    return name if job_id.strip() else SESSION_PREFIX + "unknown"


def source_identity(creator: str, creator_email: str) -> str | None:
    """The build creator for CloudTrail: the email if there is one, else the name; None if neither.

    Both are author-controlled (buildkite-contract.md): SourceIdentity names who the build says
    it is for, not a proof; the audit line records the same value next to the job id.
    """
    for raw in (creator_email, creator):
        cleaned = _sts_chars(raw.strip()).strip("-")[:STS_NAME_MAX]
        if len(cleaned) >= STS_NAME_MIN:
            return cleaned
    return None


def _tag_value(text: str) -> str:
    return "".join(c if _TAG_CHAR.match(c) else "_" for c in _fold(text))[:TAG_VALUE_MAX]


def session_tags(identity: JobIdentity) -> tuple[tuple[str, str], ...]:
    """(key, value) session tags; an empty value is left out (STS accepts empty, CloudTrail shows noise)."""
    pairs = (
        ("buildkite:organization", identity.organization_slug),
        ("buildkite:pipeline", identity.pipeline_slug),
        ("buildkite:build", identity.build_number or identity.build_id),
        ("buildkite:branch", identity.branch),
        ("buildkite:queue", identity.queue),
    )
    return tuple((key[:TAG_KEY_MAX], _tag_value(value)) for key, value in pairs if value.strip())[:MAX_TAGS]


@dataclass(frozen=True)
class RoleSession:
    """Everything STS is asked for one job: the cache key of its credentials (with the job id)."""

    role_arn: str
    session_name: str
    source_identity: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def as_json(self) -> dict:
        return {
            "role_arn": self.role_arn,
            "session_name": self.session_name,
            "source_identity": self.source_identity,
            "tags": [list(pair) for pair in self.tags],
        }

    @classmethod
    def from_json(cls, data: dict) -> "RoleSession":
        return cls(
            role_arn=str(data["role_arn"]),
            session_name=str(data["session_name"]),
            source_identity=data.get("source_identity"),
            tags=tuple((str(k), str(v)) for k, v in data.get("tags", ())),
        )


def role_session(role_arn: str, identity: JobIdentity) -> RoleSession:
    return RoleSession(
        role_arn=role_arn,
        session_name=session_name(identity.job_id),
        source_identity=source_identity(identity.creator, identity.creator_email),
        tags=session_tags(identity),
    )
