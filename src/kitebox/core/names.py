"""Namespaces under the base path, and what each SSM parameter inside one means.

Layout (the seed plugin's, buildkite-contract.md):
    <BASE>/<slug>/env/<name>          → variable NAME (upper-cased, '-' → '_')
    <BASE>/<slug>/ssh/key             → deploy key
    <BASE>/<slug>/allowed_pipelines   → ACL, one pipeline slug per line
    <BASE>/<slug>/allowed_teams       → ACL, one team slug per line
    <BASE>/<pipeline>/repository      → admission: the only repository this pipeline may build
    <BASE>/<pipeline>/allowed_branches→ admission: glob patterns, one per line
    <BASE>/<slug>/allowed_roles       → AWS roles the job may take (proxy)
where <slug> is `global`, the repo slug, or the pipeline slug, read in that order (later wins).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from kitebox.errors import BadInputError

GLOBAL = "global"
RESERVED_SLUGS = frozenset({GLOBAL})
DEFAULT_BASE_PATH = "/vendors/buildkite"

# Buildkite pipeline slugs are lower-case letters, digits and '-'. No '_': every repo slug holds
# one (`<host>_<path>`), so a pipeline namespace can never be read as some repository's.
_PIPELINE_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BASE_PATH = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")

# Variables a secret must not set: they belong to the agent, to kitebox, or they change how
# every later program runs (a repo-level secret writer must not be able to take over the shell).
RESERVED_VARIABLES = frozenset(
    {
        "PATH", "IFS", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND",
        "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "SSH_AUTH_SOCK", "SSH_AGENT_PID",
        "GIT_SSH", "GIT_SSH_COMMAND", "GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM", "GIT_PROXY_COMMAND", "GIT_ASKPASS", "SSH_ASKPASS", "GIT_EXEC_PATH",
        "GIT_TEMPLATE_DIR", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    }
)
# GIT_CONFIG_KEY_<n>/VALUE_<n> can set core.sshCommand: a command run at checkout.
RESERVED_PREFIXES = ("BUILDKITE_", "KITEBOX_", "GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")


class Kind(Enum):
    GLOBAL = "global"
    REPO = "repo"
    PIPELINE = "pipeline"


@dataclass(frozen=True)
class Namespace:
    kind: Kind
    slug: str
    path: str  # <BASE>/<slug>, no trailing slash

    def node(self, relative: str) -> str:
        return f"{self.path}/{relative}"


class Role(Enum):
    """What a parameter inside a namespace is for."""

    ENV = "env"
    SSH_KEY = "ssh-key"
    ALLOWED_PIPELINES = "allowed_pipelines"
    ALLOWED_TEAMS = "allowed_teams"
    REPOSITORY = "repository"
    ALLOWED_BRANCHES = "allowed_branches"
    ALLOWED_ROLES = "allowed_roles"
    UNKNOWN = "unknown"


_FIXED = {
    "ssh/key": Role.SSH_KEY,
    "allowed_pipelines": Role.ALLOWED_PIPELINES,
    "allowed_teams": Role.ALLOWED_TEAMS,
    "repository": Role.REPOSITORY,
    "allowed_branches": Role.ALLOWED_BRANCHES,
    "allowed_roles": Role.ALLOWED_ROLES,
}


def check_base_path(base: str) -> str:
    """The operator's base path, without a trailing slash; refuse anything SSM would not take."""
    trimmed = base.rstrip("/")
    if not _BASE_PATH.fullmatch(trimmed) or "/../" in trimmed + "/" or "/./" in trimmed + "/":
        raise BadInputError(f"KITEBOX_BASE_PATH {base!r} is not an SSM path like /vendors/buildkite")
    return trimmed


def check_pipeline_slug(slug: str) -> str:
    """Refuse a pipeline slug that is malformed or collides with a reserved namespace."""
    if slug in RESERVED_SLUGS:
        raise BadInputError(
            f"pipeline slug {slug!r} collides with the reserved namespace {slug!r}; rename the pipeline"
        )
    if not _PIPELINE_SLUG.fullmatch(slug):
        raise BadInputError(
            "BUILDKITE_PIPELINE_SLUG is not a pipeline slug (lower-case letters, digits and '-')"
        )
    return slug


def namespaces(base: str, repo_slug: str, pipeline_slug: str) -> tuple[Namespace, ...]:
    """The three namespaces in precedence order: global < repo < pipeline."""
    return (
        Namespace(Kind.GLOBAL, GLOBAL, f"{base}/{GLOBAL}"),
        Namespace(Kind.REPO, repo_slug, f"{base}/{repo_slug}"),
        Namespace(Kind.PIPELINE, pipeline_slug, f"{base}/{pipeline_slug}"),
    )


def classify(namespace: Namespace, parameter_name: str) -> tuple[Role, str]:
    """What `parameter_name` is for inside `namespace`, and its path relative to it."""
    prefix = namespace.path + "/"
    if not parameter_name.startswith(prefix):
        return Role.UNKNOWN, parameter_name
    relative = parameter_name[len(prefix):]
    if relative in _FIXED:
        return _FIXED[relative], relative
    if relative.startswith("env/"):
        return Role.ENV, relative
    return Role.UNKNOWN, relative


def env_var_name(relative: str) -> str:
    """`env/fav-lesson` → `FAV_LESSON`; raise BadInputError naming why it cannot be a variable."""
    raw = relative[len("env/"):]
    name = raw.upper().replace("-", "_")
    if "/" in raw:
        raise BadInputError(f"{name!r} has a '/': nested env parameters are not variables")
    if not _SHELL_NAME.fullmatch(name):
        raise BadInputError(f"{name!r} is not a shell variable name (letters, digits, '_', '-')")
    if name in RESERVED_VARIABLES or name.startswith(RESERVED_PREFIXES):
        raise BadInputError(f"{name!r} is reserved for the agent, kitebox or the shell")
    return name
