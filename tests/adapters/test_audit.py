"""The audit sink: whole JSON lines, 0600, from concurrent writers; and the record holds no value."""

from __future__ import annotations

import json
import threading

import pytest

from kitebox.adapters.audit import write_audit
from kitebox.core.audit import decision_record
from kitebox.core.decision import Parameter, decide, preflight
from kitebox.core.identity import JobIdentity
from kitebox.core.secret import Secret
from kitebox.errors import ConfigError

BASE = "/vendors/buildkite"


def a_decision(allowed: bool = True):
    job = JobIdentity(job_id="j1", pipeline_slug="app", repo="https://ci:tok3n-in-url@github.com/a/b.git",
                      creator="Ada Lovelace", creator_email="ada@example.com", creator_teams=("dev",), queue="default")
    pre = preflight(job, BASE)
    params = [Parameter(f"{BASE}/app/env/API_TOKEN", Secret("value-must-not-appear"))]
    if not allowed:
        params.append(Parameter(f"{BASE}/app/allowed_teams", Secret("sre"), "String"))
    return decide(pre, {f"{BASE}/app": params})


class TestAuditRecord:
    """One record per decision names who and what, never a value or a URL credential."""

    @pytest.mark.parametrize("allowed", [True, False], ids=["allowed", "refused"])
    def test_record_fields_and_no_values(self, allowed):
        """Creator, job and outcome are present; the secret value and URL token are not."""
        record = decision_record(a_decision(allowed), "hook", "2026-11-24T00:00:00+00:00")
        text = json.dumps(record)
        assert record["creator"] == "Ada Lovelace" and record["job"] == "j1"
        assert record["outcome"] == ("allowed" if allowed else "refused")
        assert record["repository"] == "github.com/a/b"
        assert "value-must-not-appear" not in text and "tok3n-in-url" not in text
        if allowed:
            assert record["secrets"] == [{"name": "API_TOKEN", "node": f"{BASE}/app/env/API_TOKEN"}]
        else:
            assert record["secrets"] == [] and record["refusals"][0]["rule"] == "allowed_teams"


class TestAuditSink:
    """The file sink appends whole lines, creates the file 0600, and fails in one line."""

    def test_concurrent_writers_keep_lines_whole(self, tmp_path):
        """200 records from 8 threads give 200 parseable lines."""
        path = tmp_path / "audit.jsonl"
        record = decision_record(a_decision(), "box", "t")
        threads = [threading.Thread(target=lambda: [write_audit(record, str(path)) for _ in range(25)])
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        lines = path.read_text().splitlines()
        assert len(lines) == 200 and all(json.loads(line)["job"] == "j1" for line in lines)
        assert path.stat().st_mode & 0o777 == 0o600

    def test_stderr_sink_prefixes_lines(self, capsys):
        """The stderr sink writes one prefixed line a journald/log reader can grep."""
        write_audit({"event": "x"}, "stderr")
        assert capsys.readouterr().err == 'kitebox-audit {"event": "x"}\n'

    def test_unwritable_sink_is_one_line_error(self, tmp_path):
        """A sink in a missing directory raises ConfigError naming the path."""
        with pytest.raises(ConfigError, match="cannot write the audit log"):
            write_audit({"event": "x"}, str(tmp_path / "missing" / "audit.jsonl"))
