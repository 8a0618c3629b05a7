"""Parsing the agent's job env files (BUILDKITE_ENV_FILE, BUILDKITE_ENV_JSON_FILE).

The text form is one `NAME="value"` line per variable, the value quoted with Go's `%q`
(strconv.Quote: \\a \\b \\f \\n \\r \\t \\v \\\\ \\" \\xHH \\uHHHH \\UHHHHHHHH), written before
the agent adds its own variables (buildkite-contract.md). The JSON form holds the same.
"""

from __future__ import annotations

import json
import re

from kitebox.errors import BadInputError

_LINE = re.compile(r'^(?P<name>[A-Za-z_][A-Za-z0-9_]*)="(?P<body>(?:[^"\\]|\\.)*)"$')
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"', "'": "'"}
_HEX_WIDTH = {"x": 2, "u": 4, "U": 8}


def unquote_go(body: str) -> str:
    """Undo Go's strconv.Quote on the text between the quotes."""
    out = bytearray()
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            try:
                out += char.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raise BadInputError("env file: text holds a lone surrogate, not a character") from None
            i += 1
            continue
        kind = body[i + 1] if i + 1 < len(body) else ""
        if kind in _SIMPLE:
            out += _SIMPLE[kind].encode()
            i += 2
        elif kind in _HEX_WIDTH:
            width = _HEX_WIDTH[kind]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise BadInputError("env file: a \\x, \\u or \\U escape has bad hex digits")
            number = int(digits, 16)
            if number > 0x10FFFF:
                raise BadInputError("env file: a \\U escape is beyond the last Unicode code point")
            # \xHH is one raw byte (it may be half of a UTF-8 sequence); \u and \U are code points.
            out += bytes([number]) if kind == "x" else chr(number).encode("utf-8", "surrogatepass")
            i += 2 + width
        else:
            raise BadInputError(f"env file: unknown escape \\{kind}")
    return out.decode("utf-8", "surrogateescape")


def parse_env_text(text: str) -> dict[str, str]:
    """Parse BUILDKITE_ENV_FILE content; a malformed line is refused, never echoed (it may be a secret)."""
    result: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if not match:
            raise BadInputError(f"env file line {number} is not NAME=\"value\"")
        result[match["name"]] = unquote_go(match["body"])
    return result


def parse_env_json(text: str) -> dict[str, str]:
    """Parse BUILDKITE_ENV_JSON_FILE content: one object of string → string."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInputError(f"env JSON file is not JSON (line {error.lineno})") from None
    except RecursionError:
        raise BadInputError("env JSON file is nested too deeply to be an env file") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise BadInputError("env JSON file is not an object of strings")
    return data
