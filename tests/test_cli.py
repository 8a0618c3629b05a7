"""The `kitebox` command as an operator or a hook runs it: a subprocess, a real moto server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kitebox.demo import sample

KITEBOX = [sys.executable, "-m", "kitebox"]
# Every secret value the sample data holds; none may appear in any output.
SAMPLE_VALUES = ["tok-global-1234567890", "s3cr3t-db", "tok-hermione-0987654321", "Charms",
                 "tok-infra-never-seen", "p@ss w0rd", "PRIVATE KEY"]


def run(args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(KITEBOX + args, env=env, capture_output=True, text=True, timeout=60, **kwargs)


@pytest.fixture
def sample_aws(aws):
    sample.seed(aws.client("ssm"), aws.client("secretsmanager"))
    return aws


def job_env(aws, **job) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE_", "AWS_"))}
    return {**base, **aws.env(), **sample.job_environment(**job)}


def assert_no_values(*texts: str) -> None:
    for text in texts:
        for value in SAMPLE_VALUES:
            assert value not in text


class TestSlug:
    """`kitebox slug URL` prints the seed-compatible slug, or one line of error."""

    @pytest.mark.parametrize(
        "url, slug",
        [("git@github.com:a/b.git", "github.com_a_b.git"),
         ("https://user:pw@my-gitlab.example.com:8443/g/r.git", "my-gitlab.example.com-8443_g_r.git")],
        ids=["scp", "credentials-and-port"],
    )
    def test_prints_slug(self, url, slug):
        """The slug is printed alone on stdout."""
        done = run(["slug", url])
        assert (done.returncode, done.stdout) == (0, slug + "\n")

    def test_bad_url_one_line_without_password(self):
        """A hostile URL is refused in one stderr line that does not repeat the password."""
        done = run(["slug", "https://user:hunter2pw@host/../etc"])
        assert done.returncode == 95
        assert done.stderr.count("\n") == 1 and "hunter2pw" not in done.stderr


class TestExplain:
    """`kitebox explain` shows the decision for the job in the environment, never a value."""

    def test_json_for_an_allowed_job(self, sample_aws):
        """--json gives allowed, env name → parameter, ssh purposes, no refusals."""
        done = run(["explain", "--json"], env=job_env(sample_aws))
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["allowed"] is True and report["refusals"] == []
        assert report["env"] == {
            "ARTIFACTORY_TOKEN": "/vendors/buildkite/hermione/env/ARTIFACTORY_TOKEN",
            "DATABASE_URL": "/vendors/buildkite/github.com_hogwarts_spells.git/env/DATABASE_URL",
            "DEPLOY_PASSWORD": "/vendors/buildkite/hermione/env/DEPLOY_PASSWORD",
            "FAV_LESSON": "/vendors/buildkite/hermione/env/fav-lesson",
        }
        assert report["ssh"] == {
            "repo": "/vendors/buildkite/github.com_hogwarts_spells.git/ssh/key",
            "global": "/vendors/buildkite/global/ssh/key",
        }
        assert report["env_detail"]["ARTIFACTORY_TOKEN"]["overrides"] == [
            "/vendors/buildkite/global/env/ARTIFACTORY_TOKEN"
        ]
        assert_no_values(done.stdout, done.stderr)

    def test_json_for_a_refused_job(self, sample_aws):
        """A refused job exits 1 and lists each refusal with node, rule and message."""
        done = run(["explain", "--json"], env=job_env(sample_aws, pipeline="infra-deploy"))
        assert done.returncode == 1
        report = json.loads(done.stdout)
        assert report["allowed"] is False
        assert {(r["node"], r["rule"]) for r in report["refusals"]} == {
            ("/vendors/buildkite/github.com_hogwarts_spells.git/allowed_pipelines", "allowed_pipelines"),
            ("/vendors/buildkite/infra-deploy/allowed_teams", "allowed_teams"),
        }
        assert_no_values(done.stdout, done.stderr)

    def test_text_reads_as_a_report(self, sample_aws):
        """The human form names namespaces, rules with ✓/✗, variables with sources, and a verdict."""
        done = run(["explain"], env=job_env(sample_aws, branch="feature/x"))
        assert done.returncode == 1
        text = done.stdout
        for expected in ("Namespaces read", "✗ allowed_branches", "/vendors/buildkite/hermione/allowed_branches",
                         "FAV_LESSON", "← /vendors/buildkite/hermione/env/fav-lesson", "Verdict: REFUSED"):
            assert expected in text
        assert_no_values(text, done.stderr)

    def test_ssm_outage_is_one_line(self, sample_aws):
        """With SSM unreachable explain fails closed with one line, exit 95."""
        env = job_env(sample_aws) | {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "KITEBOX_SSM_MAX_ATTEMPTS": "1",
                                     "KITEBOX_SSM_TIMEOUT": "1"}
        done = run(["explain"], env=env)
        assert done.returncode == 95
        assert done.stderr.strip().count("\n") == 0 and "cannot reach AWS" in done.stderr


class TestDemo:
    """The README's demo command runs the sample job through kitebox and says so."""

    def test_demo_runs(self):
        """`kitebox demo` ends with the job's exit 0 and shows refusals and the audit line."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BUILDKITE_"))}
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        done = subprocess.run(KITEBOX + ["demo"], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "Verdict: REFUSED" in done.stdout and "Demo finished: the job exited 0." in done.stdout
        if "(box mode)" in done.stdout:  # root + Docker + iptables: the job ran in a container
            assert "checked out: this is spells" in done.stdout
            assert "instance metadata (kitebox's proxy) offers role: hermione-deploy" in done.stdout
            assert "AWS SDK finds credentials from: container-role" in done.stdout
        assert_no_values(done.stdout, done.stderr)
