"""The audit line for one decision: who, what, outcome, which secrets from which node. No values.

The build creator is on every line: the piece the seed's EventBridge audit log lacked.
"""

from __future__ import annotations

from kitebox.core.decision import Decision
from kitebox.core.slug import normalise_repo
from kitebox.errors import BadInputError


def _repo(url: str) -> str:
    # The raw URL may hold a password; the normal form never does.
    try:
        return normalise_repo(url)
    except BadInputError:
        return "(unusable)"


def decision_record(decision: Decision, mode: str, now_iso: str) -> dict:
    job = decision.identity
    return {
        "time": now_iso,
        "event": "kitebox.decision",
        "mode": mode,
        "outcome": "allowed" if decision.allowed else "refused",
        "organization": job.organization_slug,
        "pipeline": job.pipeline_slug,
        "build": job.build_id,
        "build_number": job.build_number,
        "job": job.job_id,
        "creator": job.creator,
        "creator_email": job.creator_email,
        "creator_teams": list(job.creator_teams),
        "source": job.source,
        "queue": job.queue,
        "branch": job.branch,
        "repository": _repo(job.repo),
        "refusals": [{"node": c.node, "rule": c.rule, "message": c.message} for c in decision.refusals],
        "secrets": [{"name": g.name, "node": g.parameter} for g in decision.env] if decision.allowed else [],
        "ssh_keys": [{"purpose": k.purpose, "node": k.parameter} for k in decision.keys] if decision.allowed else [],
    }
