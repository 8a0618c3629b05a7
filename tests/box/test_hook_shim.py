"""The in-container hook shim (files/hook.sh) switches ssh-agents exactly as hook mode does.

Hook mode's pre-checkout and post-checkout run for real (`kitebox hook <phase>`, eval'd, as
hooks/pre-checkout does); its environment hook's socket rule (SSH_AUTH_SOCK → the global agent
when there is one, hook.py) is the one line reproduced here, since the real hook needs SSM and
starts agents. Hook order: environment → plugin checkout → pre-checkout → checkout →
post-checkout (buildkite-contract.md).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kitebox.box.job import FILES

SHIM = FILES / "hook.sh"
SHOW = 'printf "%s|%s|%s\\n" "$1" "${SSH_AUTH_SOCK-unset}" "${KITEBOX_SAVED_SSH_AUTH_SOCK-unset}"'
KITEBOX = f"{sys.executable} -m kitebox"

BOX_MODE = f"""
show() {{ {SHOW}; }}
. {SHIM} environment; show environment
. {SHIM} pre-checkout; show pre-checkout
. {SHIM} post-checkout; show post-checkout
"""
HOOK_MODE = f"""
show() {{ {SHOW}; }}
if [[ -n ${{KITEBOX_GLOBAL_SSH_AUTH_SOCK:-}} ]]; then export SSH_AUTH_SOCK=$KITEBOX_GLOBAL_SSH_AUTH_SOCK; fi
show environment
eval "$({KITEBOX} hook pre-checkout 2>/dev/null)"; show pre-checkout
eval "$({KITEBOX} hook post-checkout 2>/dev/null)"; show post-checkout
"""


def run(script: str, env: dict[str, str]) -> str:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    done = subprocess.run(["bash", "-euc", script], env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


CASES = list(
    itertools.product(
        [None, "/host/agent.sock"],  # SSH_AUTH_SOCK before the job
        [None, "/run/kitebox/ssh/repo.sock"],
        [None, "/run/kitebox/ssh/global.sock"],
        ["false", "true"],  # KITEBOX_KEEP_REPO_KEY
    )
)


class TestSameAsHookMode:
    """Every combination of sockets and settings ends in the same state after each hook."""

    @pytest.mark.parametrize("initial, repo, global_, keep", CASES, ids=lambda v: str(v))
    def test_table(self, initial, repo, global_, keep):
        """environment, pre-checkout and post-checkout leave the same SSH_AUTH_SOCK in both modes."""
        env = {"KITEBOX_KEEP_REPO_KEY": keep}
        for name, value in (("SSH_AUTH_SOCK", initial), ("KITEBOX_REPO_SSH_AUTH_SOCK", repo),
                            ("KITEBOX_GLOBAL_SSH_AUTH_SOCK", global_)):
            if value is not None:
                env[name] = value
        assert run(BOX_MODE, env) == run(HOOK_MODE, env)


class TestOperatorHooks:
    """The operator's hook of the same name runs inside kitebox's, in the right place."""

    def test_order(self, tmp_path: Path):
        """Operator's environment is overridden; its pre/post-checkout see the repo key's agent."""
        operator = tmp_path / "hooks"
        operator.mkdir()
        (operator / "environment").write_text("export SSH_AUTH_SOCK=/operator.sock; echo op-env\n")
        (operator / "pre-checkout").write_text('echo "op-pre $SSH_AUTH_SOCK"\n')
        (operator / "post-checkout").write_text('echo "op-post $SSH_AUTH_SOCK"\n')
        env = {
            "KITEBOX_OPERATOR_HOOKS_PATH": str(operator),
            "KITEBOX_REPO_SSH_AUTH_SOCK": "/r.sock",
            "KITEBOX_GLOBAL_SSH_AUTH_SOCK": "/g.sock",
        }
        assert run(BOX_MODE, env).splitlines() == [
            "op-env",
            "environment|/g.sock|unset",
            "op-pre /r.sock",
            "pre-checkout|/r.sock|/g.sock",
            "op-post /r.sock",
            "post-checkout|/g.sock|unset",
        ]

    def test_sourced_shim_succeeds_without_anything(self):
        """With no sockets and no operator hooks, each shim is a successful no-op (set -e safe)."""
        assert run(BOX_MODE, {}).splitlines() == [
            "environment|unset|unset", "pre-checkout|unset|unset", "post-checkout|unset|unset"
        ]
