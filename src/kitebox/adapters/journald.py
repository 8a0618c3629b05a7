"""The `journald` audit sink: one journal entry per line, SYSLOG_IDENTIFIER=kitebox-audit.

Sent with the journal's native protocol (a datagram of KEY=value fields to its socket), not via
stderr: in hook mode kitebox's stderr is the job log, which is the pipeline author's to read. The
JSON line is also split into fields (KITEBOX_OUTCOME, KITEBOX_PIPELINE, ...) so `journalctl
KITEBOX_PIPELINE=app` works. Without a journal (no socket, or a line too big for one datagram)
the line goes to stderr as `kitebox-audit <line>`, never dropped.
"""

from __future__ import annotations

import json
import socket
import sys

SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "kitebox-audit"
_FIELDS = ("event", "outcome", "mode", "organization", "pipeline", "build", "job", "creator", "creator_email", "queue")


def entry(line: str) -> bytes:
    """The native-protocol datagram for one audit line (fields with newlines use the binary form)."""
    fields = [("SYSLOG_IDENTIFIER", IDENTIFIER), ("PRIORITY", "6"), ("MESSAGE", line.rstrip("\n"))]
    try:
        record = json.loads(line)
    except ValueError:
        record = {}
    if isinstance(record, dict):
        for key in _FIELDS:
            value = record.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
                fields.append((f"KITEBOX_{key.upper()}", str(value)))
    out = bytearray()
    for name, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


def send(line: str, path: str | None = None) -> None:
    target = path or SOCKET
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(entry(line), target)
        return
    except OSError:
        pass  # no journal here, or a datagram too large: stderr below keeps the line
    sys.stderr.write(f"{IDENTIFIER} {line.rstrip()}\n")
    sys.stderr.flush()
