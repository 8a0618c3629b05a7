"""Box mode's shell files are shellcheck-clean and the agent stand-in stays small."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from kitebox.box.job import FILES
from tests.box.conftest import STAND_IN

SCRIPTS = [FILES / "entry.sh", FILES / "hook.sh", STAND_IN]


class TestShellFiles:
    """entry.sh, hook.sh and images/agent-stand-in/bootstrap."""

    def test_shellcheck_clean(self):
        """shellcheck reports nothing (bash dialect for the sourced hook shim)."""
        if shutil.which("shellcheck") is None:
            pytest.skip("shellcheck not installed (.ci/run installs it)")
        done = subprocess.run(["shellcheck", "--shell=bash", *map(str, SCRIPTS)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout

    def test_stand_in_is_small_and_says_what_it_is(self):
        """The stand-in for `buildkite-agent bootstrap` is under 80 lines and says so up front."""
        text = STAND_IN.read_text()
        assert len(text.splitlines()) < 80
        assert "STAND-IN for `buildkite-agent bootstrap`" in text.splitlines()[1]
