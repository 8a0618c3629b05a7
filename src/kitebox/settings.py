"""Operator settings, read once from the agent's environment into a frozen object.

In hook mode and box mode kitebox's environment holds the JOB's variables too, and those are the
pipeline author's (listed in BUILDKITE_ENV_FILE / BUILDKITE_ENV_JSON_FILE). So:
- a KITEBOX_* setting that is also a job variable is refused, not obeyed: the base path above all
  picks whose secrets are read;
- an AWS_* variable the job sets is the job's business (its own region, its own profile) but must
  not steer kitebox's own AWS calls (a `credential_process` in a job-chosen AWS_CONFIG_FILE would run
  on the host), so kitebox's own clients are built from the environment without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from kitebox.core.envfile import parse_env_json, parse_env_text
from kitebox.core.names import DEFAULT_BASE_PATH, check_base_path
from kitebox.errors import BadInputError, ConfigError

SETTING_PREFIX = "KITEBOX_"
# The KITEBOX_ variables that belong to the author: the role a step asks for, and the job image
# it asks for (box mode; obeyed only when the operator's KITEBOX_ALLOWED_IMAGES lists it).
AUTHOR_VARIABLES = frozenset({"KITEBOX_ROLE", "KITEBOX_JOB_IMAGE"})


@dataclass(frozen=True)
class Settings:
    base_path: str = DEFAULT_BASE_PATH
    audit: str = "stderr"  # "stderr", "off", or a file path for JSON lines
    keep_repo_key_after_checkout: bool = False
    secrets_manager_prefix: str = "buildkite/"
    ssm_max_attempts: int = 3
    ssm_timeout_seconds: float = 5.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], job_variables: frozenset[str] = frozenset()) -> "Settings":
        forged = sorted(
            name for name in job_variables if name.startswith(SETTING_PREFIX) and name not in AUTHOR_VARIABLES
        )
        if forged:
            raise ConfigError(
                f"{forged[0]} is set by the pipeline (a job variable); kitebox settings and AWS "
                "configuration come from the agent's environment only"
            )
        get = environ.get
        try:
            return cls(
                base_path=check_base_path(get("KITEBOX_BASE_PATH", DEFAULT_BASE_PATH)),
                audit=get("KITEBOX_AUDIT", "stderr"),
                keep_repo_key_after_checkout=parse_flag(get("KITEBOX_KEEP_REPO_KEY", "false")),
                secrets_manager_prefix=get("KITEBOX_SECRETS_MANAGER_PREFIX", "buildkite/"),
                ssm_max_attempts=_bounded(int(get("KITEBOX_SSM_MAX_ATTEMPTS", "3")), 1, 10, "KITEBOX_SSM_MAX_ATTEMPTS"),
                ssm_timeout_seconds=_bounded(float(get("KITEBOX_SSM_TIMEOUT", "5")), 0.1, 60, "KITEBOX_SSM_TIMEOUT"),
            )
        except (ValueError, BadInputError) as error:
            raise ConfigError(f"bad kitebox setting: {error}") from None


def _bounded(value, low, high, name):
    # NaN fails both comparisons, so it is refused too.
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return value


def parse_flag(value: str) -> bool:
    """An operator's true/false setting; anything else is refused, not guessed."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not true or false")


def job_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The job's own variables, from the agent's env file (JSON preferred); {} when there is none."""
    json_path = environ.get("BUILDKITE_ENV_JSON_FILE")
    text_path = environ.get("BUILDKITE_ENV_FILE")
    try:
        if json_path:
            return parse_env_json(Path(json_path).read_text(encoding="utf-8", errors="surrogateescape"))
        if text_path:
            return parse_env_text(Path(text_path).read_text(encoding="utf-8", errors="surrogateescape"))
    except OSError as error:
        raise BadInputError(f"cannot read the job env file: {error.strerror}") from None
    return {}


# Variables that steer how kitebox's own AWS calls are made, beyond AWS_*: HOME (botocore reads
# ~/.aws/config, credential_process included), proxies (route the calls through the job's
# server) and CA bundles (let that server read them).
_STEERING = frozenset({
    "HOME", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
})


def _steers_aws_calls(name: str) -> bool:
    return name.startswith("AWS_") or name.upper() in _STEERING


def aws_environment(environ: Mapping[str, str], job_vars: Mapping[str, str]) -> dict[str, str]:
    """The environment kitebox's own AWS clients see: no AWS_* variable the job set.

    `KITEBOX_AWS_REGION` (operator) wins, so a job that sets AWS_REGION for itself does not leave
    kitebox without a region.
    """
    clean = {k: v for k, v in environ.items() if not (k in job_vars and _steers_aws_calls(k))}
    if environ.get("KITEBOX_AWS_REGION"):
        clean["AWS_REGION"] = clean["AWS_DEFAULT_REGION"] = environ["KITEBOX_AWS_REGION"]
    return clean
