"""`kitebox explain`: what would happen to this job, as text for a terminal or a Buildkite log,
or as one JSON object. Never a value: variables show the parameter they come from."""

from __future__ import annotations

from kitebox.core.checks import shown
from kitebox.core.decision import Decision
from kitebox.core.references import SecretsManagerRef
from kitebox.core.roles import ROLE_VARIABLE, choose_role
from kitebox.core.slug import normalise_repo, repo_slug
from kitebox.errors import BadInputError

OK, NO = "✓", "✗"


def as_json(decision: Decision, requested_role: str = "") -> dict:
    """`requested_role`: the step's KITEBOX_ROLE ("" when it sets none)."""
    arn, role_check = choose_role(requested_role, decision.roles)
    return {
        "allowed": decision.allowed,
        "pipeline": decision.identity.pipeline_slug,
        "namespaces": [
            {"kind": n.kind.value, "path": n.path, "parameters": dict(decision.found).get(n.path)}
            for n in decision.namespaces
        ],
        "checks": [{"node": c.node, "rule": c.rule, "passed": c.passed, "message": c.message} for c in decision.checks],
        "env": {g.name: g.parameter for g in decision.env},
        "env_detail": {
            g.name: {
                "parameter": g.parameter,
                "overrides": list(g.overrides),
                "secretsmanager": g.value.describe() if isinstance(g.value, SecretsManagerRef) else None,
            }
            for g in decision.env
        },
        "ssh": {purpose: (k.parameter if (k := decision.key(purpose)) else None) for purpose in ("repo", "global")},
        "roles": [{"role": allowed, "node": node} for allowed, node in decision.roles],
        "role": {"requested": requested_role.strip() or None, "granted": arn, "passed": role_check.passed,
                 "node": role_check.node, "message": role_check.message},
        "ignored": [{"parameter": p, "why": why} for p, why in decision.ignored],
        "refusals": [{"node": c.node, "rule": c.rule, "message": c.message} for c in decision.refusals],
    }


def _where(repo: str) -> str:
    try:
        return f"{normalise_repo(repo)}  (slug {repo_slug(repo)})"
    except BadInputError:
        return "(not a usable repository URL)"


def as_text(decision: Decision, requested_role: str = "") -> str:
    job = decision.identity
    lines = [
        f"kitebox explain: pipeline {job.pipeline_slug!r}, build {shown(job.build_number) or '?'}, "
        f"job {shown(job.job_id) or '?'}",
        f"  created by   {shown(job.creator) or '?'}; teams: {', '.join(map(shown, job.teams)) or 'none'}; "
        f"source {shown(job.source) or '?'}",
        f"  repository   {_where(job.repo)}",
        f"  branch       {job.branch!r}" + (f"; queue {job.queue!r}" if job.queue else ""),
        "",
        "Namespaces read (later wins: global < repo < pipeline)",
    ]
    if not decision.namespaces:
        lines.append("  none: the job was refused before reading SSM")
    for space in decision.namespaces:
        counts = dict(decision.found)
        found = f"{counts[space.path]} parameter(s)" if space.path in counts else ""
        lines.append(f"  {space.kind.value:<9} {space.path}  {found}".rstrip())
    lines += ["", "Rules"]
    if not decision.checks:
        lines.append("  no ACL or admission node applies: allowed by default")
    width = max((len(c.rule) for c in decision.checks), default=0)
    for check in decision.checks:
        lines.append(f"  {OK if check.passed else NO} {check.rule:<{width}}  {check.node}")
        lines.append(f"      {check.message}")
    lines += ["", "Variables (values are never shown)"]
    if not decision.env:
        lines.append("  none")
    width = max((len(g.name) for g in decision.env), default=0)
    for grant in decision.env:
        via = f"  via {grant.value.describe()}" if isinstance(grant.value, SecretsManagerRef) else ""
        lines.append(f"  {grant.name:<{width}} ← {grant.parameter}{via}")
        for overridden in grant.overrides:
            lines.append(f"  {'':<{width}}   overrides {overridden}")
    lines += ["", "Deploy keys (one ssh-agent each)"]
    for purpose, use in (("repo", "repository checkout"), ("global", "plugin checkouts")):
        key = decision.key(purpose)
        lines.append(f"  {purpose:<6} ({use}): {key.parameter if key else 'none'}")
    arn, role_check = choose_role(requested_role, decision.roles)
    lines += ["", f"AWS role (the step's {ROLE_VARIABLE}; served by the kitebox proxy)"]
    lines.append(f"  {OK if role_check.passed else NO} {shown(arn or 'no credentials')}: {shown(role_check.message)}")
    if not role_check.passed:
        lines.append(f"      {role_check.line()}")
    lines += [f"  allowed: {shown(allowed)}  from {node}" for allowed, node in decision.roles]
    if decision.ignored:
        lines += ["", "Ignored"]
        lines += [f"  {parameter}: {why}" for parameter, why in decision.ignored]
    lines.append("")
    if decision.allowed:
        lines.append(
            f"Verdict: ALLOWED: {len(decision.env)} variable(s), {len(decision.keys)} deploy key(s)"
        )
    else:
        lines.append(f"Verdict: REFUSED by {len(decision.refusals)} rule(s):")
        lines += [f"  {NO} {c.rule} at {c.node}: {c.message}" for c in decision.refusals]
    return "\n".join(lines) + "\n"
