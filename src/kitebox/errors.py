"""kitebox's one error root, and the exit codes that go with it.

    KiteboxError                 a message written for the user, one line, never a secret value
    ├── ConfigError              an operator setting is missing or malformed
    ├── RefusedError             a rule refused the job (ACL, admission, names); carries the refusals
    ├── BadInputError            author input that cannot be used (repo URL, slug, env file)
    ├── AwsError                 SSM / Secrets Manager / STS failed; the job fails closed
    └── SshAgentError            an ssh-agent could not be started or a key could not be loaded
"""

from __future__ import annotations

# Exit codes of kitebox's own failures. The job's own exit code is passed through unchanged,
# so ours sit where a job rarely lands; 125 is avoided because the agent reports it as
# "process_run_error" and `docker run` uses it too (buildkite-contract.md).
EXIT_REFUSED = 94
EXIT_ERROR = 95


class KiteboxError(Exception):
    """Base of every error kitebox reports to a user; str() is the one line shown."""

    exit_code = EXIT_ERROR


class ConfigError(KiteboxError):
    """An operator setting is missing or malformed."""


class BadInputError(KiteboxError):
    """Author-controlled input (repo URL, slug, env file) that kitebox cannot use."""


class RefusedError(KiteboxError):
    """A rule refused the job; `refusals` holds every failed check."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, refusals: tuple = ()):
        super().__init__(message)
        self.refusals = refusals


class AwsError(KiteboxError):
    """An AWS call failed; kitebox fails closed."""


class SshAgentError(KiteboxError):
    """An ssh-agent could not be started, or a key could not be loaded into it."""
