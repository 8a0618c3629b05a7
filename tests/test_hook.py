"""Hook mode's four phases, driven as the agent drives them (buildkite-contract.md, hook order),
over an in-memory store; the end-to-end run with real moto, ssh-agent and sshd is in
test_hook_e2e.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kitebox import hook
from kitebox.adapters.sshagent import is_agent_dir
from kitebox.errors import RefusedError, SshAgentError
from kitebox.keys import generate_ed25519
from kitebox.settings import Settings
from tests.fakes import MemoryResolver, MemoryStore

BASE = "/vendors/buildkite"
REPO = "git@github.com:acme/widgets.git"
SLUG = "github.com_acme_widgets.git"
NASTY = "it's \"quoted\" $HOME `id` \\ \n second line ✨ 'end'"


def job(**overrides) -> dict[str, str]:
    env = {
        "BUILDKITE_JOB_ID": "job-1",
        "BUILDKITE_PIPELINE_SLUG": "widgets",
        "BUILDKITE_REPO": REPO,
        "BUILDKITE_BRANCH": "main",
        "BUILDKITE_BUILD_CREATOR_TEAMS": "dev",
        "BUILDKITE_REDACTED_VARS": "*_TOKEN",
    }
    env.update(overrides)
    return env


def evaluate_shell(script: str, env: dict[str, str], then: str) -> str:
    """Run `eval "$script"; <then>` in bash and return stdout: what a sourced hook would leave."""
    result = subprocess.run(
        ["bash", "-c", f'eval "$KITEBOX_TEST_SCRIPT"; {then}'],
        env={"PATH": os.environ["PATH"], **env, "KITEBOX_TEST_SCRIPT": script},
        capture_output=True, text=True, check=True,
    )
    return result.stdout


def agent_pids(directory: str) -> list[int]:
    """ssh-agent processes whose argv names a socket in `directory`."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"ssh-agent") and any(a.startswith(directory.encode()) for a in argv):
                found.append(int(proc.name))
    return found


class TestEnvironmentPhase:
    """The environment hook exports secrets exactly and extends the redaction list."""

    def test_values_survive_eval_byte_exact(self, capsys):
        """A value with quotes, $, backticks, backslashes, newlines and unicode arrives unchanged."""
        store = MemoryStore({f"{BASE}/widgets/env/nasty-value": NASTY})
        script = hook.environment(job(), Settings(audit="off"), store, lambda: MemoryResolver({}))
        out = evaluate_shell(script, {}, 'printf %s "$NASTY_VALUE"')
        assert out == NASTY

    def test_precedence_pipeline_over_repo_over_global(self):
        """The same variable at three nodes takes the pipeline's value (seed precedence)."""
        store = MemoryStore({
            f"{BASE}/global/env/LEVEL": "global",
            f"{BASE}/{SLUG}/env/LEVEL": "repo",
            f"{BASE}/widgets/env/LEVEL": "pipeline",
            f"{BASE}/{SLUG}/env/ONLY_REPO": "repo",
        })
        script = hook.environment(job(), Settings(audit="off"), store, lambda: MemoryResolver({}))
        assert evaluate_shell(script, {}, 'echo "$LEVEL $ONLY_REPO"') == "pipeline repo\n"

    def test_redacted_vars_extended_with_secret_names(self):
        """BUILDKITE_REDACTED_VARS keeps the agent's patterns and gains every injected name."""
        store = MemoryStore({f"{BASE}/global/env/API_SECRET": "x" * 10, f"{BASE}/widgets/env/plain": "y" * 10})
        script = hook.environment(job(), Settings(audit="off"), store, lambda: MemoryResolver({}))
        assert evaluate_shell(script, {}, 'echo "$BUILDKITE_REDACTED_VARS"') == "*_TOKEN,API_SECRET,PLAIN\n"

    def test_secrets_manager_reference_resolved(self):
        """An env parameter holding a reference exports the referenced JSON key's value."""
        store = MemoryStore({
            f"{BASE}/widgets/env/DB_PASSWORD": "{{resolve:secretsmanager:buildkite/db:SecretString:password}}"
        })
        resolver = MemoryResolver({"buildkite/db": '{"password": "hunter2-db"}'})
        script = hook.environment(job(), Settings(audit="off"), store, lambda: resolver)
        assert evaluate_shell(script, {}, 'echo "$DB_PASSWORD"') == "hunter2-db\n"
        assert resolver.calls == 1

    def test_refusal_raises_and_prints_one_line_per_rule(self, capsys):
        """An ACL denial raises RefusedError and prints a line naming rule and node, never a value."""
        store = MemoryStore({
            f"{BASE}/global/allowed_teams": ("sre", "String"),
            f"{BASE}/global/env/TOP_SECRET": "never-printed-value",
        })
        resolver = MemoryResolver({})
        with pytest.raises(RefusedError) as refused:
            hook.environment(job(), Settings(audit="off"), store, lambda: resolver)
        err = capsys.readouterr().err
        assert f"rule allowed_teams at {BASE}/global/allowed_teams" in err
        assert "never-printed-value" not in err + str(refused.value)
        assert refused.value.exit_code == 94

    def test_refused_job_starts_no_agent(self, capsys, tmp_path, monkeypatch):
        """A refused job never starts an ssh-agent (refusal is decided before any key is loaded)."""
        monkeypatch.setenv("TMPDIR", str(tmp_path))
        key = generate_ed25519("t")
        store = MemoryStore({
            f"{BASE}/widgets/allowed_pipelines": ("other", "String"),
            f"{BASE}/{SLUG}/ssh/key": key.private.reveal(),
        })
        with pytest.raises(RefusedError):
            hook.environment(job(), Settings(audit="off"), store, lambda: MemoryResolver({}))
        assert list(tmp_path.iterdir()) == []


class TestDeployKeys:
    """One ssh-agent per key; pre-checkout switches, post-checkout restores, pre-exit kills all."""

    def test_agents_switch_and_are_all_killed(self, capsys):
        """Global agent first, repo agent for checkout, back after, none left after pre-exit."""
        repo_key, plugin_key = generate_ed25519("repo"), generate_ed25519("plugins")
        store = MemoryStore({
            f"{BASE}/global/ssh/key": plugin_key.private.reveal(),
            f"{BASE}/{SLUG}/ssh/key": repo_key.private.reveal(),
        })
        env = job()
        script = hook.environment(env, Settings(audit="off"), store, lambda: MemoryResolver({}))
        exported = dict(
            line.split("=", 1) for line in evaluate_shell(script, {}, "env").splitlines() if "=" in line
        )
        directory = exported[hook.AGENT_DIR]
        try:
            assert is_agent_dir(Path(directory))
            assert oct(Path(directory).stat().st_mode & 0o777) == "0o700"
            assert len(agent_pids(directory)) == 2
            assert exported["SSH_AUTH_SOCK"] == exported[hook.GLOBAL_SOCK]
            listed = lambda sock: subprocess.run(  # noqa: E731
                ["ssh-add", "-L"], env={"SSH_AUTH_SOCK": sock}, capture_output=True, text=True
            ).stdout
            assert plugin_key.public.split()[1] in listed(exported[hook.GLOBAL_SOCK])
            assert repo_key.public.split()[1] not in listed(exported[hook.GLOBAL_SOCK])
            assert repo_key.public.split()[1] in listed(exported[hook.REPO_SOCK])

            during = {**env, **exported}
            switched = evaluate_shell(hook.pre_checkout(during), during, 'echo "$SSH_AUTH_SOCK"')
            assert switched.strip() == exported[hook.REPO_SOCK]
            during[hook.SAVED_SOCK] = exported[hook.GLOBAL_SOCK]
            during["SSH_AUTH_SOCK"] = exported[hook.REPO_SOCK]
            back = evaluate_shell(hook.post_checkout(during, Settings()), during, 'echo "$SSH_AUTH_SOCK"')
            assert back.strip() == exported[hook.GLOBAL_SOCK]
            kept = hook.post_checkout(during, Settings(keep_repo_key_after_checkout=True))
            assert kept == ""
        finally:
            hook.pre_exit({hook.AGENT_DIR: directory})
        assert agent_pids(directory) == []
        assert not Path(directory).exists()

    def test_corrupt_key_names_parameter_and_leaves_nothing(self, capsys, tmp_path, monkeypatch):
        """An unusable key fails with the parameter's name; the other agent and the dir are gone."""
        monkeypatch.setenv("TMPDIR", str(tmp_path))
        good = generate_ed25519("ok")
        store = MemoryStore({
            f"{BASE}/{SLUG}/ssh/key": good.private.reveal(),
            f"{BASE}/global/ssh/key": "-----BEGIN OPENSSH PRIVATE KEY-----\ncorrupt-key-material\n",
        })
        with pytest.raises(SshAgentError) as failed:
            hook.environment(job(), Settings(audit="off"), store, lambda: MemoryResolver({}))
        assert f"{BASE}/global/ssh/key" in str(failed.value)
        assert "corrupt-key-material" not in str(failed.value)
        assert list(tmp_path.iterdir()) == []
        assert agent_pids(str(tmp_path)) == []

    def test_pre_exit_ignores_a_directory_it_did_not_make(self, tmp_path, capsys):
        """pre-exit refuses to touch a directory without kitebox's marker (env is author-controlled)."""
        victim = tmp_path / "precious"
        victim.mkdir(mode=0o700)
        (victim / "file").write_text("keep me")
        hook.pre_exit({hook.AGENT_DIR: str(victim)})
        assert (victim / "file").read_text() == "keep me"

    def test_pre_checkout_without_repo_key_changes_nothing(self):
        """With no repo key the checkout keeps whatever agent the host gave it (seed behaviour)."""
        assert hook.pre_checkout({"SSH_AUTH_SOCK": "/host/agent"}) == ""
