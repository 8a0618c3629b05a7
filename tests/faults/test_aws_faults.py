"""AWS failing under kitebox's feet, through the real command (a subprocess, as a hook runs it):
moto SIGKILLed while pages of a fetch are in flight, and SSM throttling every call. Each must fail
closed in one line: exit 95, nothing on stdout for the hook to `eval`, no ssh-agent, no socket
directory, no temp file, no value anywhere, within a bounded time.

The STS side (STS refusing a role) is tests/proxy/test_integration.py::TestRefusalsAndFailures::
test_sts_refusal_fails_closed_with_an_audit_line; SSM failing mid-fetch at the adapter level is
tests/adapters/test_aws.py. These add the whole command, the kill, and the leftover check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kitebox.core.slug import repo_slug
from kitebox.keys import generate_ed25519
from tests.faults.leftovers import Scope, assert_nothing_left
from tests.support.aws_faults import FaultyEndpoint
from tests.support.moto_server import FAKE_CREDENTIALS, LatencyProxy

BASE = "/vendors/buildkite"
REPO = "git@github.com:acme/widgets.git"
PIPELINE = "widgets"
PER_NAMESPACE = 25  # three pages of 10: the kill lands between pages
VALUE_MARK = "fault-value-"
COMMANDS = {
    "hook environment": ["hook", "environment"],
    "explain": ["explain"],
    "explain --json": ["explain", "--json"],
}
DEADLINE = 60  # seconds any one command may take here


def job_environ(endpoint: str, tmpdir: Path, **settings: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BUILDKITE_", "KITEBOX_"))}
    return {
        **base,
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "TMPDIR": str(tmpdir),
        "BUILDKITE_JOB_ID": "0190d1c2-fault-0000-0000-000000000001",
        "BUILDKITE_PIPELINE_SLUG": PIPELINE,
        "BUILDKITE_REPO": REPO,
        "BUILDKITE_BRANCH": "main",
        "BUILDKITE_BUILD_CREATOR": "Ada",
        "BUILDKITE_BUILD_CREATOR_TEAMS": "dev",
        "KITEBOX_AUDIT": str(tmpdir.parent / "audit.jsonl"),
        **settings,
    }


def seed(ssm) -> list[str]:
    """Three namespaces of 25 values each, and a deploy key in two of them (two agents if allowed)."""
    values = []
    namespaces = [f"{BASE}/global", f"{BASE}/{repo_slug(REPO)}", f"{BASE}/{PIPELINE}"]
    for path in namespaces:
        for i in range(PER_NAMESPACE):
            value = f"{VALUE_MARK}{i}-{path.rsplit('/', 1)[1]}"
            ssm.put_parameter(Name=f"{path}/env/VAR_{i:02d}", Value=value, Type="SecureString")
            values.append(value)
    for path in namespaces[:2]:
        ssm.put_parameter(Name=f"{path}/ssh/key", Value=generate_ed25519("fault").private.reveal(),
                          Type="SecureString")
    return values


def one_line_failure(done: subprocess.CompletedProcess, *expected: str) -> str:
    assert done.returncode == 95, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert done.stdout == "", "a failed hook must print nothing for the agent to eval"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kitebox: "), done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert "PRIVATE KEY" not in done.stderr and VALUE_MARK not in done.stderr
    return lines[0]


@pytest.fixture
def workdir(tmp_path) -> Path:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    return tmpdir


@pytest.mark.moto
class TestMotoKilledMidFetch:
    """moto dies after the first page of every namespace came back and while the second pages
    are in flight (a LatencyProxy holds each request 0.4 s, so the kill lands there)."""

    @pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
    def test_fails_closed_in_one_line(self, aws, workdir, command):
        """Exit 95, one line, nothing to eval, no agent, no socket dir, no temp file, no value."""
        seed(aws.client("ssm"))
        proxy = LatencyProxy(aws.endpoint_url, delay=0.4).start()
        env = job_environ(proxy.endpoint_url, workdir, KITEBOX_SSM_MAX_ATTEMPTS="2", KITEBOX_SSM_TIMEOUT="2")
        started = time.monotonic()
        try:
            process = subprocess.Popen([sys.executable, "-m", "kitebox", *COMMANDS[command]], env=env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            # 3 first pages, then second pages: the 4th request is a page after a good page.
            deadline = time.monotonic() + 30
            while proxy.request_count < 4 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proxy.request_count >= 4, f"the fetch never reached a second page ({proxy.requests})"
            aws.kill()
            out, err = process.communicate(timeout=DEADLINE)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
            proxy.stop()
            aws.start()  # the `aws` fixture would too; tests that use `moto` directly need it now
        took = time.monotonic() - started
        done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        one_line_failure(done, "SSM GetParametersByPath", "failed")
        assert took < DEADLINE
        assert not Path(env["KITEBOX_AUDIT"]).exists() or VALUE_MARK not in Path(env["KITEBOX_AUDIT"]).read_text()
        assert_nothing_left(Scope(tmpdirs=[workdir]))


class TestSsmThrottlingEveryCall:
    """SSM throttles every call: attempts are bounded by KITEBOX_SSM_MAX_ATTEMPTS per namespace
    (3 namespaces), the job fails in one line naming the throttling, and leaves nothing."""

    @pytest.mark.parametrize("attempts", [1, 3])
    @pytest.mark.parametrize("command", ["hook environment", "explain"])
    def test_bounded_attempts_and_one_line(self, workdir, command, attempts):
        """Exactly 3 × KITEBOX_SSM_MAX_ATTEMPTS calls, exit 95, one line, in bounded time."""
        ssm = FaultyEndpoint("ThrottlingException", "Rate exceeded")
        env = job_environ(ssm.url, workdir, KITEBOX_SSM_MAX_ATTEMPTS=str(attempts), KITEBOX_SSM_TIMEOUT="2")
        started = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-m", "kitebox", *COMMANDS[command]], env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=DEADLINE)
        finally:
            ssm.close()
        one_line_failure(done, "ThrottlingException", "retries exhausted")
        assert ssm.requests == 3 * attempts
        # botocore's standard mode backs off at most 2**attempt s (jittered) between attempts
        assert time.monotonic() - started < 10 + 2 ** attempts
        assert_nothing_left(Scope(tmpdirs=[workdir]))


class TestRegionSetting:
    def test_aws_region_alone_reaches_ssm(self, workdir):
        """The operator sets AWS_REGION (as the README's settings table says): SSM is called."""
        ssm = FaultyEndpoint("ThrottlingException")  # being asked at all proves the region was found
        env = job_environ(ssm.url, workdir, KITEBOX_SSM_MAX_ATTEMPTS="1")
        del env["AWS_DEFAULT_REGION"]
        try:
            done = subprocess.run([sys.executable, "-m", "kitebox", "explain"], env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=DEADLINE)
        finally:
            ssm.close()
        assert ssm.requests > 0, done.stderr
