"""Secrets Manager references held in an `env/<name>` parameter instead of the value.

Syntax (CloudFormation's dynamic-reference form, which operators already know); the WHOLE
parameter value must be the reference:

    {{resolve:secretsmanager:<secret-id>}}                         the secret string
    {{resolve:secretsmanager:<secret-id>:SecretString:<json-key>}} one key of a JSON secret

<secret-id> is a name or a full ARN. A reference is resolved only after the ACLs of the node
that holds it passed, and only to secrets whose name starts with the operator's prefix
(`KITEBOX_SECRETS_MANAGER_PREFIX`): otherwise anyone who may write one pipeline's namespace
could point it at any secret the instance role can read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_REFERENCE = re.compile(r"^\{\{resolve:secretsmanager:(?P<body>[^{}]+)\}\}$")
_ARN_FIELDS = 7  # arn:aws:secretsmanager:<region>:<account>:secret:<name>


@dataclass(frozen=True)
class SecretsManagerRef:
    secret_id: str
    json_key: str | None = None

    @property
    def secret_name(self) -> str:
        if self.secret_id.startswith("arn:"):
            return self.secret_id.split(":", _ARN_FIELDS - 1)[-1]
        return self.secret_id

    def describe(self) -> str:
        key = f" key {self.json_key!r}" if self.json_key else ""
        return f"secretsmanager:{self.secret_id}{key}"


def parse_reference(value: str) -> SecretsManagerRef | None:
    """The reference a parameter value holds, or None when the value is the secret itself."""
    match = _REFERENCE.match(value.strip())
    if not match:
        return None
    fields = match["body"].split(":")
    if fields[0] == "arn" and (
        len(fields) < _ARN_FIELDS or fields[2] != "secretsmanager" or fields[5] != "secret" or not fields[6]
    ):
        raise ValueError("a Secrets Manager ARN must be arn:<partition>:secretsmanager:<region>:<account>:secret:<name>")
    id_fields = _ARN_FIELDS if fields[0] == "arn" else 1
    secret_id, rest = ":".join(fields[:id_fields]), fields[id_fields:]
    if not secret_id or (rest and (len(rest) != 2 or rest[0] != "SecretString" or not rest[1])):
        raise ValueError("a Secrets Manager reference must be {{resolve:secretsmanager:<id>[:SecretString:<json-key>]}}")
    return SecretsManagerRef(secret_id, rest[1] if rest else None)


def reference_allowed(ref: SecretsManagerRef, prefix: str) -> bool:
    return bool(prefix) and ref.secret_name.startswith(prefix)
