"""The README's operator walkthrough ("From an empty account to a first boxed job") runs as
written against moto: the block between the operators-walkthrough markers, with its first line
(starting moto on port 5000) replaced by this test's moto server."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docker_engine import REPO_ROOT

BLOCK = re.compile(r"<!-- operators-walkthrough -->\n```sh\n(?P<body>.*?)```\n<!-- /operators-walkthrough -->", re.S)


def walkthrough() -> str:
    match = BLOCK.search((REPO_ROOT / "README.md").read_text())
    assert match, "README.md lost its operators-walkthrough block"
    return match["body"]


def test_walkthrough_runs(aws, tmp_path):
    if shutil.which("aws") is None:
        pytest.skip("the AWS CLI is not installed (the walkthrough uses it for the KMS key, role and stack)")
    lines = walkthrough().splitlines()
    assert lines[0].startswith(".venv/bin/python -m moto.server -p 5000")
    script = "\n".join(lines[1:]).replace("http://127.0.0.1:5000", aws.endpoint_url)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Verdict: ALLOWED" in done.stdout
    assert re.search(r"arn:aws:iam::\d{12}:role/infra-deploy\s+from /vendors/buildkite/infra/infra-deploy/allowed_roles",
                     done.stdout)
    assert re.search(r"^arn:aws:iam::\d{12}:policy/kitebox-infra-policy-", done.stdout, re.M)
    config = tmp_path / "buildkite-agent.cfg"
    assert config.read_text() == 'token="bkua_example-agent-token"\n'
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "example-db-password" not in done.stdout + done.stderr
    assert "bkua_example-agent-token" not in done.stdout + done.stderr
    assert not (tmp_path / "token.txt").exists()
