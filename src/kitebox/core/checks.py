"""The outcome of one rule, as `explain`, the audit line and a refusal show it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One rule applied at one SSM node (or to one job variable). Never holds a secret value."""

    node: str  # the SSM parameter the rule lives in, or the job variable it read
    rule: str  # e.g. "allowed_pipelines", "allowed_teams", "repository", "env-name"
    passed: bool
    message: str

    def line(self) -> str:
        """The one-line refusal a pipeline author reads in the job log."""
        return f"kitebox refused this job: {self.message} [rule {self.rule} at {self.node}]"


def shown(value: str) -> str:
    """An author-controlled string as it may reach a terminal or a Buildkite log: as it is when
    every character is printable, else quoted with escapes (no ANSI/OSC sequence, carriage
    return, bell or bidi override gets through raw)."""
    return value if value.isprintable() else repr(value)


def list_entries(value: str, parameter_type: str = "String") -> tuple[str, ...]:
    """Entries of a list node: one per line (the seed), or comma-separated for a StringList."""
    text = value.replace(",", "\n") if parameter_type == "StringList" else value
    return tuple(line.strip() for line in text.splitlines() if line.strip())
