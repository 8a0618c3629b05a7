"""Audit sinks added for operators: `cloudwatch:<group>` (one stream per instance, batched, drained
at exit and on SIGTERM, never dropping a line) and `journald` (native protocol, stderr fallback).
The existing sinks (file, stderr, off) are unchanged: tests/adapters/test_audit.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from kitebox.adapters import cloudwatch, journald
from kitebox.adapters.audit import write_audit
from kitebox.adapters.cloudwatch import CloudWatchSink

GROUP = "kitebox-audit"


def events(aws, group=GROUP, stream=None) -> list[str]:
    logs = aws.client("logs")
    stream = stream or socket.gethostname()
    try:
        answer = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    except logs.exceptions.ResourceNotFoundException:
        return []
    return [e["message"] for e in answer["events"]]


@pytest.fixture
def group(aws):
    aws.client("logs").create_log_group(logGroupName=GROUP)
    return GROUP


class TestCloudWatchSink:
    """Batches go out on size, on time and on close; a refused batch falls back, whole."""

    def test_close_sends_everything_in_order(self, aws, group):
        sink = CloudWatchSink(aws.client("logs"), group, "i-0abc", interval=60)
        for i in range(5):
            sink.add(json.dumps({"n": i}) + "\n")
        sink.close()
        assert [json.loads(m)["n"] for m in events(aws, stream="i-0abc")] == list(range(5))
        assert sink.calls == 1

    def test_batches_by_size(self, aws, group):
        sink = CloudWatchSink(aws.client("logs"), group, "i-0abc", interval=60, max_events=100)
        for i in range(250):
            sink.add(f"line {i}")
        sink.close()
        assert events(aws, stream="i-0abc") == [f"line {i}" for i in range(250)]
        assert sink.calls == 3

    def test_flushes_on_time_while_running(self, aws, group):
        sink = CloudWatchSink(aws.client("logs"), group, "i-0abc", interval=0.1)
        sink.add("early line")
        deadline = time.monotonic() + 10
        while not events(aws, stream="i-0abc") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events(aws, stream="i-0abc") == ["early line"]
        sink.close()

    def test_existing_stream_is_reused(self, aws, group):
        aws.client("logs").create_log_stream(logGroupName=group, logStreamName="i-0abc")
        sink = CloudWatchSink(aws.client("logs"), group, "i-0abc")
        sink.add("x")
        sink.close()
        assert events(aws, stream="i-0abc") == ["x"]

    def test_missing_group_falls_back_whole(self, aws, capsys):
        kept: list[str] = []
        sink = CloudWatchSink(aws.client("logs"), "no-such-group", "i-0abc", fallback=kept.append)
        sink.add("one")
        sink.add("two")
        sink.close()
        assert kept == ["one", "two"]
        assert "refused 2 audit line(s)" in capsys.readouterr().err

    def test_add_after_close_is_not_lost(self, aws, group):
        kept: list[str] = []
        sink = CloudWatchSink(aws.client("logs"), group, "i-0abc", fallback=kept.append)
        sink.close()
        sink.add("late")
        assert kept == ["late"]

    def test_overlong_line_is_cut_not_refused(self, aws, group):
        sink = CloudWatchSink(aws.client("logs"), group, "i-0abc")
        sink.add("x" * 300_000)
        sink.close()
        (message,) = events(aws, stream="i-0abc")
        assert message.endswith("[truncated]") and len(message.encode()) <= cloudwatch.MAX_EVENT_BYTES


CHILD = textwrap.dedent("""
    import sys, time
    from kitebox.adapters.audit import write_audit
    for i in range(int(sys.argv[2])):
        write_audit({"event": "kitebox.decision", "n": i, "creator": "Ada"}, "cloudwatch:" + sys.argv[1])
    if sys.argv[3] == "wait":
        print("ready", flush=True)
        time.sleep(60)
""")


def child(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


class TestCloudWatchThroughWriteAudit:
    """`KITEBOX_AUDIT=cloudwatch:<group>` from a real process: one stream named after the host,
    every line there after a normal exit and after SIGTERM (the agent's cancel signal)."""

    def test_normal_exit(self, aws, group):
        proc = child(group, "3", "exit")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert [json.loads(m)["n"] for m in events(aws)] == [0, 1, 2]
        assert err == ""

    def test_sigterm(self, aws, group):
        """The lines are sent, then the process still dies of SIGTERM as it would have."""
        proc = child(group, "4", "wait")
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGTERM
        assert [json.loads(m)["n"] for m in events(aws)] == [0, 1, 2, 3]

    def test_sigterm_chains_to_an_existing_handler(self, aws, group):
        code = CHILD.replace("import sys, time", "import sys, time, signal\n"
                             "signal.signal(signal.SIGTERM, lambda *a: (print('own handler', flush=True), sys.exit(7)))")
        proc = subprocess.Popen([sys.executable, "-c", code, group, "2", "wait"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 7 and "own handler" in out
        assert len(events(aws)) == 2

    def test_unreachable_service_loses_nothing(self, aws, group, monkeypatch):
        """CloudWatch down: the lines come out on stderr (the unit's journal keeps them)."""
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: refused
        proc = child(group, "2", "exit")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0
        lines = [line for line in err.splitlines() if line.startswith("kitebox-audit ")]
        assert [json.loads(line.split(" ", 1)[1])["n"] for line in lines] == [0, 1]


class TestJournald:
    """Native journal protocol: identifier, priority, message and searchable KITEBOX_* fields."""

    def test_datagram(self, tmp_path):
        path = str(tmp_path / "journal.socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(path)
            record = {"event": "kitebox.decision", "outcome": "refused", "pipeline": "app", "creator": "Ada L",
                      "creator_teams": ["sre"]}
            journald.send(json.dumps(record) + "\n", path)
            data = server.recv(65536).decode()
        fields = dict(line.split("=", 1) for line in data.splitlines())
        assert fields["SYSLOG_IDENTIFIER"] == "kitebox-audit" and fields["PRIORITY"] == "6"
        assert json.loads(fields["MESSAGE"]) == record
        assert fields["KITEBOX_PIPELINE"] == "app" and fields["KITEBOX_CREATOR"] == "Ada L"
        assert "KITEBOX_CREATOR_TEAMS" not in fields

    def test_newline_in_a_field_uses_the_binary_form(self):
        data = journald.entry(json.dumps({"creator": "a\nb"}))
        assert b"KITEBOX_CREATOR\n" + (3).to_bytes(8, "little") + b"a\nb\n" in data

    def test_write_audit_without_a_journal_uses_stderr(self, tmp_path, monkeypatch, capsys):
        monkeypatch.setattr(journald, "SOCKET", str(tmp_path / "absent.socket"))
        write_audit({"event": "x"}, "journald")
        assert capsys.readouterr().err == 'kitebox-audit {"event": "x"}\n'

    def test_write_audit_to_the_journal(self, tmp_path, monkeypatch, capsys):
        path = str(tmp_path / "journal.socket")
        monkeypatch.setattr(journald, "SOCKET", path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(path)
            write_audit({"event": "x"}, "journald")
            assert b"MESSAGE={\"event\": \"x\"}" in server.recv(65536)
        assert capsys.readouterr().err == ""


def test_unknown_cloudwatch_region_is_a_config_error(monkeypatch):
    """No region: one ConfigError naming the sink, as for an unwritable audit file."""
    from kitebox.errors import ConfigError

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    with pytest.raises(ConfigError, match="cloudwatch:g"):
        cloudwatch.sink_for("g")
