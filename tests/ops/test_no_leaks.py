"""No secret value — agent token, deploy key, secret — reaches stdout, stderr, a process's argv or
environment, or any file other than the intended SSM parameter and the 0600 agent config.

Runs the real `kitebox` executable as a child, the way an operator does, with HOME, TMPDIR and
the working directory inside the test's directory so that every file it could write is scanned.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.ops.conftest import BASE, KITEBOX

pytestmark = pytest.mark.moto


def scan(root: Path, needles: dict[str, str]) -> dict[str, list[str]]:
    """needle name → files under root whose bytes contain it."""
    found: dict[str, list[str]] = {name: [] for name in needles}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for name, needle in needles.items():
                if needle.encode() in data:
                    found[name].append(str(path.relative_to(root)))
    return found


def test_no_value_outside_its_place(aws, tmp_path):
    token = "bkua_" + secrets.token_hex(20)
    value = "secret-" + secrets.token_hex(16)
    for name in ("home", "tmp", "work", "etc"):
        (tmp_path / name).mkdir()
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp")}
    config = tmp_path / "etc" / "buildkite-agent.cfg"
    config.write_text('name="agent"\n')
    aws.client("ssm").put_parameter(Name="/buildkite/agent-token", Value=token, Type="SecureString")
    outputs: list[str] = []

    def kitebox(*argv: str, stdin: bytes = b"") -> str:
        done = subprocess.run([KITEBOX, *argv], input=stdin, capture_output=True, env=env, cwd=tmp_path / "work",
                              timeout=60)
        outputs.append(done.stdout.decode() + done.stderr.decode())
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    kitebox("agent-token", "--parameter", "/buildkite/agent-token", "--config", str(config))
    kitebox("agent-token", "--parameter", "/buildkite/agent-token", "--config", str(config))

    # secrets set: while it waits on stdin, its argv and environment are visible in /proc.
    child = subprocess.Popen([KITEBOX, "secrets", "set", "deploy-password", "--pipeline", "app"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             cwd=tmp_path / "work")
    time.sleep(0.5)  # let it reach the read
    proc = Path("/proc") / str(child.pid)
    seen_by_others = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
    out, err = child.communicate(value.encode() + b"\n", timeout=60)
    assert child.returncode == 0, err.decode()
    outputs.append(out.decode() + err.decode())
    assert value.encode() not in seen_by_others and token.encode() not in seen_by_others

    kitebox("secrets", "ls", "--pipeline", "app")
    kitebox("keys", "create", "--repo", "git@github.com:acme/app.git")
    kitebox("keys", "rotate", "--repo", "git@github.com:acme/app.git")
    kitebox("keys", "show", "--repo", "git@github.com:acme/app.git")
    private = aws.client("ssm").get_parameter(Name=f"{BASE}/github.com_acme_app.git/ssh/key",
                                              WithDecryption=True)["Parameter"]["Value"]
    key_body = max(private.splitlines(), key=len)  # a line of the key's base64 body
    assert value == aws.client("ssm").get_parameter(Name=f"{BASE}/app/env/deploy-password",
                                                    WithDecryption=True)["Parameter"]["Value"]

    printed = "\n".join(outputs)
    for needle in (token, value, key_body):
        assert needle not in printed
    found = scan(tmp_path, {"token": token, "value": value, "key": key_body})
    assert found == {"token": ["etc/buildkite-agent.cfg"], "value": [], "key": []}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_errors_never_echo_values(aws, cli, tmp_path):
    """A value that fails validation is described by its length, never shown."""
    bad = "bad token with spaces " + secrets.token_hex(8)
    aws.client("ssm").put_parameter(Name="/t", Value=bad, Type="SecureString")
    run = cli("agent-token", "--parameter", "/t", "--config", str(tmp_path / "agent.cfg"))
    assert run.code == 95 and bad not in run.text and bad.split()[-1] not in run.text
    tail = secrets.token_hex(8)
    for value in (b"nul\0" + tail.encode(), tail.encode() * 1100):
        run = cli("secrets", "set", "X", "--global", stdin=value)
        assert run.code == 95 and tail not in run.text
