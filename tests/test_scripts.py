"""The project's shell files (hooks, setup, CI, images, bootstrap) pass shellcheck."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shell_files() -> list[Path]:
    candidates = [*ROOT.glob("hooks/*"), *ROOT.glob("scripts/*"), ROOT / ".ci" / "run",
                  *ROOT.glob("images/*.sh"), *ROOT.glob("bootstrap/*.sh"), *ROOT.glob("src/kitebox/**/*.sh")]
    return sorted(p for p in candidates if p.is_file() and p.read_text().startswith("#!/usr/bin/env bash"))


class TestShellcheck:
    """Every bash file the project ships is shellcheck-clean."""

    def test_shell_files_found(self):
        """The hooks, the README's two scripts and CI's entry point are among the files checked."""
        names = {p.relative_to(ROOT).as_posix() for p in shell_files()}
        assert {"hooks/environment", "hooks/pre-exit", "scripts/test", "scripts/demo", ".ci/run"} <= names

    def test_shellcheck_clean(self):
        """shellcheck reports nothing for any of them."""
        if shutil.which("shellcheck") is None:
            pytest.skip("shellcheck not installed (scripts/setup installs it)")
        done = subprocess.run(["shellcheck", *map(str, shell_files())], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout
