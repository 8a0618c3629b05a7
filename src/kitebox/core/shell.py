"""Shell text for the agent's hooks to `eval`: every value survives exactly (quotes, `$`,
backticks, newlines, unicode), because each is single-quoted and single quotes are closed,
escaped and reopened."""

from __future__ import annotations

import shlex
from typing import Iterable, Mapping


def exports(variables: Mapping[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items())


def unsets(names: Iterable[str]) -> str:
    return "".join(f"unset {name}\n" for name in names)


def append_redacted(current: str, names: Iterable[str]) -> str:
    """BUILDKITE_REDACTED_VARS with `names` added once each (comma-separated, as the agent reads it)."""
    existing = [n.strip() for n in current.split(",") if n.strip()]
    return ",".join(dict.fromkeys(existing + [n.strip() for n in names]))
