"""Secret values reach the job byte-exact and appear nowhere else: not in `docker inspect`, not
under the engine's data root, not in any process's argv, not in kitebox's output or audit line.

The inner bootstrap is images/agent-stand-in/bootstrap, STANDING IN for `buildkite-agent
bootstrap` (no agent binary here). Checked while the job container runs: the stand-in's command
pauses until the test lets it go.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.box.conftest import BASE, PIPELINE, job_containers, leftovers, paused, wait_ready

pytestmark = pytest.mark.docker

DATA_ROOT_GREP_TIMEOUT = 120


def tricky(marker: str) -> str:
    """Quotes, newlines, unicode, `$`, backticks, a backslash: each line holds the marker, so
    each can be searched for on its own (grep reads a newline in a pattern as two patterns)."""
    return f"q'{marker}\"a\" `id` $HOME $(id) \\n ✨ ünï\nline2-{marker}\n\tline3-{marker} "


def grep_fixed(root: str, needles: list[str]) -> list[str]:
    """Files under `root` holding any needle (fixed strings, binary read as text), bounded in time."""
    patterns = [n for needle in needles for n in needle.splitlines() if len(n.strip()) >= 8]
    argv = ["grep", "-rlF", "--binary-files=text"]
    for pattern in patterns:
        argv += ["-e", pattern]
    done = subprocess.run([*argv, root], capture_output=True, text=True, timeout=DATA_ROOT_GREP_TIMEOUT)
    # Files the engine removes while grep walks (a running engine's temp files) are not errors.
    errors = [line for line in done.stderr.splitlines() if not line.endswith("No such file or directory")]
    assert done.returncode in (0, 1) or not errors, done.stderr
    return done.stdout.splitlines()


def all_argv() -> str:
    """Every process's argv on this host (container processes included: one kernel)."""
    text = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                text.append((proc / "cmdline").read_bytes().decode("utf-8", "replace"))
            except OSError:
                pass
    return "\n".join(text)


class TestByteExact:
    """A value with quotes, newlines, unicode, `$` and backticks arrives unchanged."""

    def test_sha256_matches(self, world):
        """The job hashes the variable; the hash is that of the parameter's exact bytes."""
        secret = tricky(uuid.uuid4().hex)
        world.put(f"{BASE}/{PIPELINE}/env/my-secret", secret)
        world.job["BUILDKITE_COMMAND"] = 'printf %s "$MY_SECRET" | sha256sum'
        done = world.run()
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256(secret.encode()).hexdigest() in done.stdout


class TestNowhereElse:
    """With the job paused mid-command, search every place a value could have been copied to."""

    def test_values_leak_nowhere(self, world, docker_client):
        """docker inspect, the data root, argv, kitebox's output and the audit hold no value."""
        marker = uuid.uuid4().hex
        secret = tricky(marker)
        world.put(f"{BASE}/{PIPELINE}/env/my-secret", secret)
        world.job["BUILDKITE_COMMAND"] = paused('printf %s "$MY_SECRET" | sha256sum')
        token = world.agent["BUILDKITE_AGENT_ACCESS_TOKEN"]
        key_line = world.keys.repo[0].splitlines()[3]  # the private half of the key's body
        needles = [secret, token, key_line]
        # The control: a plain job variable IS in the config, so the searches below can find one.
        control = f"control-{marker}"
        world.job["CONTROL_VARIABLE"] = control

        process = world.start()
        try:
            wait_ready(world, process)
            [container] = job_containers(docker_client, world.job_id)
            assert container["State"] == "running"
            inspected = json.dumps(docker_client.api.inspect_container(container["Id"]), ensure_ascii=False)
            root = docker_client.info()["DockerRootDir"]
            found_on_disk = grep_fixed(root, needles)
            control_on_disk = grep_fixed(root, [control])
            argv = all_argv()
        finally:
            (world.build_dir / ".go").touch()
            out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()
        assert hashlib.sha256(secret.encode()).hexdigest() in out.decode()
        assert "BUILDKITE_AGENT_ACCESS_TOKEN" not in inspected
        assert control in inspected and any(p.endswith("config.v2.json") for p in control_on_disk)
        audit = (world.root / "audit.jsonl").read_text()
        for needle in needles:
            for line in (n for n in needle.splitlines() if len(n.strip()) >= 8):
                assert line not in inspected
                assert line not in argv
                assert line not in out.decode() and line not in err.decode()
                assert line not in audit
        assert found_on_disk == []
        assert leftovers(docker_client, world)["containers"] == []
