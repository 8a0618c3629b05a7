"""Hook mode end to end: the real hook shims, sourced in the agent's order by a small stand-in
for `buildkite-agent bootstrap` (there is no agent binary here), against a moto server over
HTTP, real ssh-agents, and `git clone` over ssh from a local sshd whose two repositories each
accept only their own deploy key (buildkite-contract.md: hook order; seed plugin: one agent per key).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kitebox.core.slug import repo_slug
from tests.support.git_sshd import generate_ed25519
from tests.test_hook import agent_pids

ROOT = Path(__file__).resolve().parents[1]
BASE = "/vendors/buildkite"
SECRET = "e2e-s3cr3t \"q\" 'q' $HOME `id` \\ \nline2 ✨"

# Stands in for `buildkite-agent bootstrap`: plugin checkout, then the hooks in the agent's
# order around the repo checkout and the command. Kept tiny on purpose.
STAND_IN = r"""
set -euo pipefail
source "$HOOKS/environment"
git clone -q "$PLUGIN_REPO" plugin
if git clone -q "$BUILDKITE_REPO" with-global-key 2>/dev/null; then echo "cloned repo with the global key" >&2; exit 9; fi
source "$HOOKS/pre-checkout"
git clone -q "$BUILDKITE_REPO" checkout
source "$HOOKS/post-checkout"
bash -c "$BUILDKITE_COMMAND"
source "$HOOKS/pre-exit"
echo "SSH_AUTH_SOCK after pre-exit: ${SSH_AUTH_SOCK:-unset}"
"""


@pytest.fixture
def world(aws, git_sshd, tmp_path):
    """Two repos, two keys, secrets and an audit log: what an operator would have set up."""
    repo_key, plugin_key = generate_ed25519("repo"), generate_ed25519("plugins")
    repo_url, plugin_url = git_sshd.add_repo("app-e2e"), git_sshd.add_repo("plugin-e2e")
    git_sshd.authorize(repo_key[1], "app-e2e")
    git_sshd.authorize(plugin_key[1], "plugin-e2e")
    ssm = aws.client("ssm")
    slug = repo_slug(repo_url)
    ssm.put_parameter(Name=f"{BASE}/global/ssh/key", Value=plugin_key[0], Type="SecureString")
    ssm.put_parameter(Name=f"{BASE}/{slug}/ssh/key", Value=repo_key[0], Type="SecureString")
    ssm.put_parameter(Name=f"{BASE}/app/env/my-secret", Value=SECRET, Type="SecureString")
    workdir = tmp_path / "build"
    workdir.mkdir()
    run_tmp = tmp_path / "tmp"
    run_tmp.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BUILDKITE_")},
        **aws.env(),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TMPDIR": str(run_tmp),
        "HOOKS": str(ROOT / "hooks"),
        "GIT_SSH_COMMAND": git_sshd.ssh_command(),
        "PLUGIN_REPO": plugin_url,
        "KITEBOX_AUDIT": str(tmp_path / "audit.jsonl"),
        "BUILDKITE_JOB_ID": "e2e-job",
        "BUILDKITE_PIPELINE_SLUG": "app",
        "BUILDKITE_REPO": repo_url,
        "BUILDKITE_BRANCH": "main",
        "BUILDKITE_BUILD_CREATOR": "Ada",
        "BUILDKITE_BUILD_CREATOR_TEAMS": "dev",
        "BUILDKITE_COMMAND": 'printf %s "$MY_SECRET" | sha256sum',
    }
    return {"env": env, "ssm": ssm, "workdir": workdir, "tmp": run_tmp, "audit": tmp_path / "audit.jsonl"}


def run_stand_in(world) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", STAND_IN], env=world["env"], cwd=world["workdir"],
                          capture_output=True, text=True, timeout=120)


class TestHookModeEndToEnd:
    """The seed plugin's job, done with kitebox's hooks: right key for each checkout, nothing left."""

    def test_plugin_with_global_key_repo_with_repo_key(self, world):
        """Plugin checkout uses the global key, the repo checkout the repo key, the secret arrives."""
        done = run_stand_in(world)
        assert done.returncode == 0, done.stderr
        assert (world["workdir"] / "plugin" / "README").read_text() == "this is plugin-e2e\n"
        assert (world["workdir"] / "checkout" / "README").read_text() == "this is app-e2e\n"
        assert not (world["workdir"] / "with-global-key").exists()
        assert hashlib.sha256(SECRET.encode()).hexdigest() in done.stdout
        assert "SSH_AUTH_SOCK after pre-exit: unset" in done.stdout

    def test_nothing_left_behind_and_no_value_logged(self, world):
        """After pre-exit no agent runs, no socket dir remains; output and audit hold no value."""
        done = run_stand_in(world)
        assert done.returncode == 0, done.stderr
        assert list(world["tmp"].iterdir()) == []
        assert agent_pids(str(world["tmp"])) == []
        audit = world["audit"].read_text()
        record = json.loads(audit)
        assert record["outcome"] == "allowed" and record["creator"] == "Ada"
        assert {"name": "MY_SECRET", "node": f"{BASE}/app/env/my-secret"} in record["secrets"]
        for text in (done.stdout, done.stderr, audit):
            assert "e2e-s3cr3t" not in text and "PRIVATE KEY" not in text

    def test_refused_job_stops_before_any_checkout(self, world):
        """An allowed_teams refusal fails the environment hook: exit 94, one line, no clone, no agent."""
        world["ssm"].put_parameter(Name=f"{BASE}/app/allowed_teams", Value="sre", Type="String")
        done = run_stand_in(world)
        assert done.returncode == 94
        assert f"rule allowed_teams at {BASE}/app/allowed_teams" in done.stderr
        assert not (world["workdir"] / "plugin").exists()
        assert list(world["tmp"].iterdir()) == []
        assert json.loads(world["audit"].read_text())["outcome"] == "refused"

    def test_job_set_base_path_is_refused(self, world, tmp_path):
        """A KITEBOX_BASE_PATH that the job's env file sets (author input) refuses the job."""
        env_file = tmp_path / "job.env"
        env_file.write_text('KITEBOX_BASE_PATH="/vendors/buildkite/cde"\nBUILDKITE_PIPELINE_SLUG="app"\n')
        world["env"].update(KITEBOX_BASE_PATH="/vendors/buildkite/cde", BUILDKITE_ENV_FILE=str(env_file))
        done = run_stand_in(world)
        assert done.returncode == 95
        assert "KITEBOX_BASE_PATH is set by the pipeline" in done.stderr
