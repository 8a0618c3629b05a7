"""A few corpus entries through the real `kitebox explain` (a subprocess reading its environment,
as an operator runs it with a failed job's variables exported): what reaches the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.hostile import corpus
from tests.hostile.test_corpus import SECRET, base_job, unsafe_for_terminal

KITEBOX = [sys.executable, "-m", "kitebox"]
OFFLINE = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
           "KITEBOX_SSM_MAX_ATTEMPTS": "1", "KITEBOX_SSM_TIMEOUT": "1", "KITEBOX_AUDIT": "off"}


def explain(job: dict[str, str], aws: dict[str, str], *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BUILDKITE_", "KITEBOX_"))}
    return subprocess.run([*KITEBOX, "explain", *flags], env={**env, **aws, **job}, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


class TestRefusedBeforeSsm:
    """A hostile repository or slug is refused before any AWS call (the endpoint here is dead)."""

    @pytest.mark.parametrize("variable, value", [
        ("BUILDKITE_REPO", f"https://u:{corpus.PASSWORD}@github.com/acme/{corpus.CSI_RED}.git"),
        ("BUILDKITE_REPO", "git@github.com:acme/../../global"),
        ("BUILDKITE_PIPELINE_SLUG", f"app{corpus.OSC_TITLE}"),
        ("BUILDKITE_PIPELINE_SLUG", "global"),
    ], ids=["repo-credentials-ansi", "repo-dotdot", "slug-osc", "slug-global"])
    @pytest.mark.parametrize("flags", [(), ("--json",)], ids=["text", "json"])
    def test_exit_1_no_password_no_raw_escape(self, variable, value, flags):
        """Exit 1 (refused), the refusal names the variable, no password, no raw ESC."""
        done = explain(base_job(**{variable: value}), OFFLINE, *flags)
        assert done.returncode == 1, done.stderr
        assert variable in done.stdout and corpus.PASSWORD not in done.stdout + done.stderr
        if flags:
            assert json.loads(done.stdout)["allowed"] is False
        assert unsafe_for_terminal(done.stdout) == [] and unsafe_for_terminal(done.stderr) == []


@pytest.mark.moto
class TestAllowedJobWithHostileCreator:
    """An allowed job whose build creator's name carries an OSC 52 (clipboard) escape."""

    def _run(self, aws, *flags):
        aws.client("ssm").put_parameter(Name="/vendors/buildkite/widgets/env/CORPUS_SECRET", Value=SECRET,
                                        Type="SecureString")
        job = base_job(BUILDKITE_BUILD_CREATOR=f"Ada{corpus.OSC_CLIPBOARD}")
        done = explain(job, {**aws.env(), "KITEBOX_AUDIT": "off"}, *flags)
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout + done.stderr
        return done

    def test_json_prints_nothing_raw(self, aws):
        """`explain --json` (which leaves the creator out; JSON would escape it) prints no ESC."""
        done = self._run(aws, "--json")
        assert json.loads(done.stdout)["allowed"] is True and unsafe_for_terminal(done.stdout) == []

    def test_text_does_not_print_it_raw(self, aws):
        """`explain` (text) must not hand the author's escape sequence to the operator's terminal."""
        done = self._run(aws)
        assert corpus.ESC not in done.stdout
