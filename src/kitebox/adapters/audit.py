"""Where audit lines go: a JSON-lines file (appended atomically per line), stderr, journald,
CloudWatch Logs (`cloudwatch:<log-group>`, adapters/cloudwatch.py), or nowhere."""

from __future__ import annotations

import json
import os
import sys

from kitebox.errors import ConfigError


def write_audit(record: dict, sink: str) -> None:
    line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
    if sink == "off":
        return
    if sink == "stderr":
        sys.stderr.write("kitebox-audit " + line)
        sys.stderr.flush()
        return
    if sink == "journald":
        from kitebox.adapters.journald import send

        send(line)
        return
    if sink.startswith("cloudwatch:") and len(sink) > len("cloudwatch:"):
        from kitebox.adapters.cloudwatch import sink_for

        sink_for(sink[len("cloudwatch:"):]).add(line)
        return
    try:
        # O_APPEND with one write() keeps concurrent jobs' lines whole; 0600: the audit log names people.
        fd = os.open(sink, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as error:
        raise ConfigError(f"cannot write the audit log {sink}: {error.strerror}") from None
