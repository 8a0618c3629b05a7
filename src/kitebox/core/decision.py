"""Everything combined: from the job's identity and what SSM holds, what the job may have.

    preflight(identity, base)        → the namespaces to read, or refusals (bad repo, bad slug)
    decide(preflight, parameters)    → Decision: every check, the variables with their source
                                       node, the deploy keys, what was ignored and why
Pure: the caller fetches the parameters and resolves Secrets Manager references.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from kitebox.core import acl, admission
from kitebox.core.checks import Check, list_entries
from kitebox.core.identity import JobIdentity
from kitebox.core.names import Kind, Namespace, Role, check_pipeline_slug, classify, env_var_name, namespaces
from kitebox.core.references import SecretsManagerRef, parse_reference, reference_allowed
from kitebox.core.secret import Secret
from kitebox.core.slug import repo_slug
from kitebox.errors import BadInputError

# An environment variable much larger than this is a mistake (a file pasted into a parameter),
# and Linux refuses a single env string over 128 KiB (MAX_ARG_STRLEN) at exec time anyway.
MAX_VALUE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Parameter:
    """One SSM parameter as fetched; the value is wrapped so it cannot be printed by accident."""

    name: str
    value: Secret = field(repr=False)
    type: str = "String"
    last_modified: str | None = None


@dataclass(frozen=True)
class EnvGrant:
    """A variable the job gets, the parameter it came from, and what it overrode."""

    name: str
    parameter: str
    value: Secret | SecretsManagerRef = field(repr=False)
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyGrant:
    """A deploy key: `repo` for the checkout, `global` for plugin checkouts."""

    purpose: str
    parameter: str
    key: Secret = field(repr=False)


@dataclass(frozen=True)
class Preflight:
    identity: JobIdentity
    namespaces: tuple[Namespace, ...]
    checks: tuple[Check, ...]

    @property
    def allowed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass(frozen=True)
class Decision:
    identity: JobIdentity
    namespaces: tuple[Namespace, ...]
    checks: tuple[Check, ...]
    env: tuple[EnvGrant, ...] = ()
    keys: tuple[KeyGrant, ...] = ()
    roles: tuple[tuple[str, str], ...] = ()  # (role ARN, node) the job may take
    ignored: tuple[tuple[str, str], ...] = ()  # (parameter, why)
    found: tuple[tuple[str, int], ...] = ()  # (namespace path, parameters read there)

    @property
    def allowed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def refusals(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def key(self, purpose: str) -> KeyGrant | None:
        return next((k for k in self.keys if k.purpose == purpose), None)


def preflight(identity: JobIdentity, base: str) -> Preflight:
    """Which namespaces this job reads; a malformed repo or pipeline slug refuses it up front."""
    checks: list[Check] = []
    slugs: dict[str, str] = {}
    for variable, parse in (
        ("BUILDKITE_REPO", lambda: repo_slug(identity.repo)),
        ("BUILDKITE_PIPELINE_SLUG", lambda: check_pipeline_slug(identity.pipeline_slug)),
    ):
        try:
            slugs[variable] = parse()
        except BadInputError as error:
            checks.append(Check(variable, "slug", False, str(error)))
    if checks:
        return Preflight(identity, (), tuple(checks))
    spaces = namespaces(base, slugs["BUILDKITE_REPO"], slugs["BUILDKITE_PIPELINE_SLUG"])
    return Preflight(identity, spaces, ())


def check_value(name: str, parameter: str, value: str) -> Check | None:
    """Refuse a value that cannot be an environment variable; the message never shows it."""
    if "\x00" in value:
        return Check(parameter, "env-value", False, f"{name} holds a NUL byte: binary values cannot be variables")
    try:
        size = len(value.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return Check(parameter, "env-value", False, f"{name} is not valid UTF-8 text")
    if size > MAX_VALUE_BYTES:
        return Check(parameter, "env-value", False, f"{name} is {size} bytes, over the {MAX_VALUE_BYTES}-byte limit")
    return None


def decide(
    pre: Preflight,
    fetched: Mapping[str, Sequence[Parameter]],
    secrets_manager_prefix: str = "",
) -> Decision:
    """Apply every rule to what each namespace holds. `fetched` maps namespace path → parameters."""
    if not pre.allowed:
        return Decision(pre.identity, pre.namespaces, pre.checks)
    job = pre.identity
    checks: list[Check] = []
    env: dict[str, EnvGrant] = {}
    keys: dict[str, KeyGrant] = {}
    roles: list[tuple[str, str]] = []
    ignored: list[tuple[str, str]] = []
    for space in pre.namespaces:  # precedence order: later namespaces win
        for parameter in sorted(fetched.get(space.path, ()), key=lambda p: p.name):
            role, relative = classify(space, parameter.name)
            value = parameter.value.reveal()
            if role is Role.ALLOWED_PIPELINES:
                checks.append(acl.check_allowed_pipelines(parameter.name, value, parameter.type, job))
            elif role is Role.ALLOWED_TEAMS:
                checks.append(acl.check_allowed_teams(parameter.name, value, parameter.type, job))
            elif role is Role.REPOSITORY and space.kind is Kind.PIPELINE:
                checks.append(admission.check_repository(parameter.name, value, job))
            elif role is Role.ALLOWED_BRANCHES and space.kind is Kind.PIPELINE:
                checks.append(admission.check_allowed_branches(parameter.name, value, parameter.type, job))
            elif role is Role.ALLOWED_ROLES:
                roles.extend((arn, parameter.name) for arn in list_entries(value, parameter.type))
            elif role is Role.SSH_KEY:
                # The global key checks out plugins; the repo key (a pipeline's own wins) the repo.
                purpose = "global" if space.kind is Kind.GLOBAL else "repo"
                keys[purpose] = KeyGrant(purpose, parameter.name, parameter.value)
            elif role is Role.ENV:
                grant, check = _env_grant(parameter, relative, env, secrets_manager_prefix)
                if check is not None:
                    checks.append(check)
                if grant is not None:
                    env[grant.name] = grant
            else:
                ignored.append((parameter.name, _why_ignored(role, space)))
    return Decision(
        identity=job,
        namespaces=pre.namespaces,
        checks=tuple(checks),
        env=tuple(env[name] for name in sorted(env)),
        keys=tuple(keys[p] for p in ("repo", "global") if p in keys),
        roles=tuple(dict.fromkeys(roles)),
        ignored=tuple(ignored),
        found=tuple((space.path, len(fetched.get(space.path, ()))) for space in pre.namespaces),
    )


def _env_grant(
    parameter: Parameter, relative: str, env: Mapping[str, EnvGrant], prefix: str
) -> tuple[EnvGrant | None, Check | None]:
    try:
        name = env_var_name(relative)
    except BadInputError as error:
        return None, Check(parameter.name, "env-name", False, str(error))
    value = parameter.value.reveal()
    try:
        ref = parse_reference(value)
    except ValueError as error:
        return None, Check(parameter.name, "secretsmanager-reference", False, str(error))
    if ref is not None and not reference_allowed(ref, prefix):
        return None, Check(
            parameter.name,
            "secretsmanager-reference",
            False,
            f"{name} references secret {ref.secret_name!r}, outside the allowed prefix {prefix!r}",
        )
    if ref is None and (refusal := check_value(name, parameter.name, value)):
        return None, refusal
    earlier = env.get(name)
    overrides = (earlier.overrides + (earlier.parameter,)) if earlier else ()
    return EnvGrant(name, parameter.name, ref if ref is not None else parameter.value, overrides), None


def _why_ignored(role: Role, space: Namespace) -> str:
    if role in (Role.REPOSITORY, Role.ALLOWED_BRANCHES):
        return f"{role.value} is only read at the pipeline node"
    return "not a kitebox parameter (env/<name>, ssh/key, allowed_*, repository)"
