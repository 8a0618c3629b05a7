"""`kitebox acl`: rules written as the core reads them (one entry per line), validated first,
never replaced without --force (or added to with --append)."""

from __future__ import annotations

import pytest

from kitebox.core.acl import check_allowed_pipelines
from kitebox.core.admission import check_allowed_branches, check_repository
from kitebox.core.identity import JobIdentity
from tests.ops.conftest import BASE

ROLE = "arn:aws:iam::123456789012:role/ci/deploy-app"


def parameter(aws, name: str) -> dict:
    return aws.client("ssm").get_parameter(Name=name)["Parameter"]


class TestSet:
    """set validates each value, stores a String with one entry per line, and the core agrees."""

    def test_allowed_pipelines_read_back_by_the_core(self, aws, cli):
        run = cli("acl", "set", "allowed_pipelines", "app", "infra-deploy", "--global")
        assert run.code == 0, run.err
        stored = parameter(aws, f"{BASE}/global/allowed_pipelines")
        assert stored["Value"] == "app\ninfra-deploy" and stored["Type"] == "String"
        job = JobIdentity(pipeline_slug="infra-deploy")
        assert check_allowed_pipelines(stored["Name"], stored["Value"], stored["Type"], job).passed

    def test_admission_rules(self, aws, cli):
        assert cli("acl", "set", "repository", "git@github.com:acme/app.git", "--pipeline", "app").code == 0
        assert cli("acl", "set", "allowed_branches", "main", "release/*", "--pipeline", "app").code == 0
        repo = parameter(aws, f"{BASE}/app/repository")
        branches = parameter(aws, f"{BASE}/app/allowed_branches")
        job = JobIdentity(pipeline_slug="app", repo="https://github.com/acme/app", branch="release/1.2")
        assert check_repository(repo["Name"], repo["Value"], job).passed
        assert check_allowed_branches(branches["Name"], branches["Value"], "String", job).passed

    def test_repository_credentials_are_not_stored(self, aws, cli):
        run = cli("acl", "set", "repository", "https://ci:t0ken-in-url@github.com/acme/app.git", "--pipeline", "app")
        assert run.code == 0, run.err
        assert parameter(aws, f"{BASE}/app/repository")["Value"] == "https://github.com/acme/app.git"
        assert "t0ken-in-url" not in run.text

    def test_roles_on_repo_node(self, aws, cli):
        assert cli("acl", "set", "allowed_roles", ROLE, "--repo", "https://github.com/acme/app.git").code == 0
        assert parameter(aws, f"{BASE}/github.com_acme_app.git/allowed_roles")["Value"] == ROLE

    def test_existing_rule_needs_force_or_append(self, aws, cli):
        assert cli("acl", "set", "allowed_teams", "sre", "--global").code == 0
        run = cli("acl", "set", "allowed_teams", "dev", "--global")
        assert run.code == 95 and "--force" in run.err and "--append" in run.err
        assert parameter(aws, f"{BASE}/global/allowed_teams")["Value"] == "sre"
        assert cli("acl", "set", "allowed_teams", "dev", "sre", "--global", "--append").code == 0
        assert parameter(aws, f"{BASE}/global/allowed_teams")["Value"] == "sre\ndev"
        assert cli("acl", "set", "allowed_teams", "ops", "--global", "--force").code == 0
        assert parameter(aws, f"{BASE}/global/allowed_teams")["Value"] == "ops"

    def test_append_reads_a_stringlist(self, aws, cli):
        aws.client("ssm").put_parameter(Name=f"{BASE}/global/allowed_pipelines", Value="a,b", Type="StringList")
        assert cli("acl", "set", "allowed_pipelines", "c", "--global", "--append").code == 0
        stored = parameter(aws, f"{BASE}/global/allowed_pipelines")
        assert stored["Value"] == "a\nb\nc" and stored["Type"] == "String"

    def test_force_and_append_are_exclusive(self, aws, cli):
        assert cli("acl", "set", "allowed_teams", "sre", "--global", "--force", "--append").code == 2

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["allowed_pipelines", "Bad Slug", "--global"], "not a pipeline slug"),
            (["allowed_pipelines", "global", "--global"], "not a pipeline slug"),
            (["allowed_teams", "SRE", "--global"], "not a team slug"),
            (["allowed_roles", "arn:aws:iam::123:role/x", "--global"], "not an IAM role ARN"),
            (["allowed_roles", "deploy", "--global"], "not an IAM role ARN"),
            (["repository", "https://github.com/a/b.git", "--global"], "use --pipeline"),
            (["repository", "https://github.com/a/b.git", "--repo", "https://github.com/a/b.git"], "use --pipeline"),
            (["repository", "a", "b", "--pipeline", "app"], "exactly one"),
            (["repository", "ftp://x/y", "--pipeline", "app"], "repository"),
            (["allowed_branches", "has space", "--pipeline", "app"], "not a branch pattern"),
            (["allowed_teams", " ", "--global"], "empty"),
        ],
        ids=["pipeline-slug", "reserved", "team-case", "role-account", "role-name", "repo-global", "repo-repo",
             "two-repos", "bad-url", "branch-space", "empty"],
    )
    def test_bad_values(self, aws, cli, args, message):
        run = cli("acl", "set", *args)
        assert run.code == 95 and message in run.err
        assert aws.client("ssm").describe_parameters()["Parameters"] == []


class TestShowAndRm:
    """show prints each rule with its entries; rm needs --force."""

    def test_show(self, aws, cli):
        cli("acl", "set", "allowed_pipelines", "app", "--pipeline", "app")
        cli("acl", "set", "allowed_roles", ROLE, "--pipeline", "app")
        cli("acl", "set", "allowed_branches", "main", "--pipeline", "app")
        run = cli("acl", "show", "--pipeline", "app")
        assert run.code == 0
        lines = run.out.splitlines()
        assert lines[0] == f"pipeline node {BASE}/app:"
        assert f"  allowed_roles  ({BASE}/app/allowed_roles)" in lines and f"    {ROLE}" in lines
        assert "    main" in lines and "repository" not in run.out

    def test_show_empty(self, aws, cli):
        run = cli("acl", "show", "--global")
        assert run.code == 0 and "no rules" in run.out

    def test_rm(self, aws, cli):
        cli("acl", "set", "allowed_pipelines", "app", "--global")
        run = cli("acl", "rm", "allowed_pipelines", "--global")
        assert run.code == 95 and "--force" in run.err
        assert cli("acl", "rm", "allowed_pipelines", "--global", "--force").code == 0
        assert aws.client("ssm").describe_parameters()["Parameters"] == []
        run = cli("acl", "rm", "allowed_pipelines", "--global", "--force")
        assert run.code == 95 and "does not exist" in run.err
