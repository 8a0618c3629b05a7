"""Secret delivery: values go to the container over its stdin, never into its config.

Environment variables given to `docker create` are stored by the engine (config.v2.json under
its data root) and shown by `docker inspect` (issue 3). So the container's command is
files/entry.sh, which reads NUL-terminated `NAME=value` records from stdin until an EMPTY record
(the terminator: no name is empty), exports them and execs the inner bootstrap with stdin from
/dev/null. Values may hold anything but NUL (core/decision.py refuses NUL), so NUL framing is
exact: quotes, newlines, `$`, backticks and invalid UTF-8 arrive byte for byte.
"""

from __future__ import annotations

import re
import socket
from typing import Mapping

from kitebox.core.secret import Secret

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TERMINATOR = b"\x00"


def records(values: Mapping[str, Secret]) -> bytes:
    """The bytes to write to the entry step's stdin: each record NUL-terminated, then an empty one."""
    out = bytearray()
    for name, secret in values.items():
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a variable name")
        value = secret.reveal().encode("utf-8", "surrogateescape")
        if b"\x00" in value:
            raise ValueError(f"{name} holds a NUL byte")
        out += name.encode() + b"=" + value + b"\x00"
    return bytes(out + TERMINATOR)


def send(raw: socket.socket, payload: bytes) -> None:
    """Write the records and half-close: with StdinOnce the engine then closes the container's
    stdin, so an entry step that never saw the terminator sees EOF instead of waiting forever."""
    raw.sendall(payload)
    raw.shutdown(socket.SHUT_WR)
