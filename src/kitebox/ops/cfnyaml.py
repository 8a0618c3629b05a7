"""A small CloudFormation YAML writer, so that kitebox needs no YAML library on an instance.

Only what policy documents and a one-resource template use: mappings, sequences, strings, numbers,
booleans, and the `!Sub` / `!Ref` short forms. Every string is written double-quoted with JSON's
escapes, which YAML's double-quoted style reads the same way, so no value can be misread as a
number, a boolean, a tag or a comment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_PLAIN_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_LOGICAL_ID = re.compile(r"^[A-Za-z0-9:]+$")
# Plain words YAML 1.1 reads as null or a boolean (IAM's `Null` condition operator is one).
_SPECIAL_WORDS = frozenset({"null", "true", "false", "yes", "no", "on", "off", "y", "n"})


@dataclass(frozen=True)
class Sub:
    """`!Sub "text"`: CloudFormation substitutes ${AWS::Region} and friends."""

    text: str


@dataclass(frozen=True)
class Ref:
    """`!Ref LogicalId`."""

    name: str

    def __post_init__(self):
        if not _LOGICAL_ID.fullmatch(self.name):
            raise ValueError(f"{self.name!r} is not a logical id")


def dump(value: object, comment: str | None = None) -> str:
    head = [f"# {line}".rstrip() for line in comment.splitlines()] if comment else []
    return "\n".join([*head, *_block(value, 0)]) + "\n"


def _key(key: str) -> str:
    plain = _PLAIN_KEY.fullmatch(key) and key.lower() not in _SPECIAL_WORDS
    return key if plain else json.dumps(key)


def _scalar(value: object) -> str:
    if isinstance(value, Sub):
        return "!Sub " + json.dumps(value.text)
    if isinstance(value, Ref):
        return "!Ref " + value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _nested(value: object) -> bool:
    return isinstance(value, (dict, list)) and bool(value)


def _block(value: object, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict) and value:
        lines = []
        for key, item in value.items():
            if _nested(item):
                lines.append(f"{pad}{_key(key)}:")
                lines.extend(_block(item, indent + 2))
            else:
                lines.append(f"{pad}{_key(key)}: {_scalar(item)}")
        return lines
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            if _nested(item):
                inner = _block(item, indent + 2)
                lines.append(f"{pad}- {inner[0][indent + 2:]}")
                lines.extend(inner[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
        return lines
    return [pad + _scalar(value)]
