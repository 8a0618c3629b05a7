"""One job, start to verdict: preflight → fetch the namespaces → decide → resolve references.

The orchestration every entry point shares (`explain`, hook mode, box mode); I/O goes through
the ParameterStore and SecretResolver interfaces so tests and benchmarks can swap them.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Callable

from kitebox.adapters.audit import write_audit
from kitebox.adapters.aws import ParameterStore, SecretResolver
from kitebox.core.audit import decision_record
from kitebox.core.decision import Decision, check_value, decide, preflight
from kitebox.core.identity import JobIdentity
from kitebox.core.references import SecretsManagerRef
from kitebox.core.secret import Secret
from kitebox.settings import Settings


def evaluate(identity: JobIdentity, settings: Settings, store: ParameterStore) -> Decision:
    """What the job may have. A preflight refusal reads nothing from SSM."""
    pre = preflight(identity, settings.base_path)
    if not pre.allowed:
        return decide(pre, {})
    fetched = store.fetch([space.path for space in pre.namespaces])
    return decide(pre, fetched, settings.secrets_manager_prefix)


def resolve_values(
    decision: Decision, make_resolver: Callable[[], SecretResolver]
) -> tuple[Decision, dict[str, Secret]]:
    """The value of every granted variable, Secrets Manager references resolved (only if allowed).

    A resolved value that cannot be a variable adds a refusal, so the decision is returned too.
    """
    if not decision.allowed:
        return decision, {}
    values: dict[str, Secret] = {}
    resolver = None
    refusals = []
    for grant in decision.env:
        if isinstance(grant.value, SecretsManagerRef):
            resolver = resolver or make_resolver()
            secret = resolver.resolve(grant.value, grant.parameter)
            if refusal := check_value(grant.name, grant.parameter, secret.reveal()):
                refusals.append(refusal)
                continue
            values[grant.name] = secret
        else:
            values[grant.name] = grant.value
    if refusals:
        return dataclasses.replace(decision, checks=decision.checks + tuple(refusals)), {}
    return decision, values


def audit(decision: Decision, settings: Settings, mode: str) -> None:
    write_audit(decision_record(decision, mode, datetime.now(timezone.utc).isoformat()), settings.audit)
