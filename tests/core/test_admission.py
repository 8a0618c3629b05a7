"""repository and allowed_branches admission (src/kitebox/core/admission.py)."""

from __future__ import annotations

import pytest

from kitebox.core.admission import check_allowed_branches, check_repository
from kitebox.core.identity import JobIdentity
from kitebox.core.slug import normalise_repo

RNODE = "/vendors/buildkite/my-pipe/repository"
BNODE = "/vendors/buildkite/my-pipe/allowed_branches"


class TestRepository:
    @pytest.mark.parametrize(
        ("node_value", "job_repo"),
        [
            ("git@github.com:acme/app.git", "git@github.com:acme/app.git"),
            ("git@github.com:acme/app.git", "https://github.com/acme/app.git"),
            ("https://github.com/acme/app", "ssh://git@github.com:22/acme/app.git"),
            ("ssh://git@github.com/acme/app.git", "git@GitHub.com:acme/app"),
            ("  git@github.com:acme/app.git\n", "https://github.com/acme/app.git"),
        ],
        ids=["same", "scp-vs-https", "https-vs-ssh-port", "ssh-vs-scp-case", "node-whitespace"],
    )
    def test_same_repository_passes(self, node_value, job_repo):
        """The job's repo passes when it is the node's repository in any URL form (seed 002 admission)."""
        check = check_repository(RNODE, node_value, JobIdentity(repo=job_repo))
        assert check.passed
        assert check.message == "repository is github.com/acme/app"

    @pytest.mark.parametrize(
        "job_repo",
        ["git@github.com:evil/app.git", "https://gitlab.com/acme/app.git", "https://github.com:8443/acme/app.git"],
        ids=["other-owner", "other-host", "other-port"],
    )
    def test_other_repository_is_refused(self, job_repo):
        """A different repository is refused, naming both normal forms."""
        check = check_repository(RNODE, "git@github.com:acme/app.git", JobIdentity(repo=job_repo))
        assert not check.passed
        assert check.rule == "repository"
        assert "github.com/acme/app" in check.message
        assert normalise_repo(job_repo) in check.message

    def test_unparseable_node_value_is_refused(self):
        """A repository node that holds no usable URL refuses the job and does not echo the node's content."""
        check = check_repository(RNODE, "not a url at all", JobIdentity(repo="git@github.com:acme/app.git"))
        assert not check.passed
        assert "does not hold a usable URL" in check.message
        assert "not a url at all" not in check.line()

    @pytest.mark.parametrize("job_repo", ["", "/srv/app.git", "https://github.com/acme/../app.git"], ids=["empty", "local-path", "dotdot"])
    def test_unparseable_job_repo_is_refused(self, job_repo):
        """A BUILDKITE_REPO that cannot be parsed is refused with the parse error."""
        check = check_repository(RNODE, "git@github.com:acme/app.git", JobIdentity(repo=job_repo))
        assert not check.passed
        assert check.message.startswith("BUILDKITE_REPO is not a repository URL kitebox can use")


class TestAllowedBranches:
    @pytest.mark.parametrize(
        ("patterns", "parameter_type", "branch"),
        [
            ("main", "String", "main"),
            ("main\nrelease/*", "String", "release/1.0"),
            ("release/*", "String", "release/a/b"),
            ("v[0-9]*", "String", "v2"),
            ("*", "String", "anything"),
            ("dev,main", "StringList", "main"),
            ("\n  main  \n", "String", "main"),
        ],
        ids=["exact", "glob", "glob-crosses-slash", "char-class", "star", "stringlist", "whitespace"],
    )
    def test_matching_branch_passes(self, patterns, parameter_type, branch):
        """A branch matching one of the glob patterns passes (seed 002; '*' also matches '/')."""
        check = check_allowed_branches(BNODE, patterns, parameter_type, JobIdentity(branch=branch))
        assert check.passed
        assert check.rule == "allowed_branches"

    @pytest.mark.parametrize(
        ("patterns", "branch"),
        [
            ("main\nrelease/*", "feature/x"),
            ("main", "Main"),
            ("main", "main2"),
            ("release/*", "release"),
            ("", "main"),
            ("main,dev", "main"),
        ],
        ids=["no-match", "case-sensitive", "no-prefix-match", "glob-needs-slash", "empty-list", "comma-in-string-type"],
    )
    def test_non_matching_branch_is_refused(self, patterns, branch):
        """A branch matching none of the patterns is refused, with the count of patterns."""
        check = check_allowed_branches(BNODE, patterns, "String", JobIdentity(branch=branch))
        assert not check.passed
        assert repr(branch) in check.message
        assert BNODE in check.line()

    @pytest.mark.parametrize("patterns", ["*", "main\n*"], ids=["star", "star-among-others"])
    def test_empty_branch_is_refused(self, patterns):
        """An empty BUILDKITE_BRANCH is refused even by a '*' pattern."""
        check = check_allowed_branches(BNODE, patterns, "String", JobIdentity(branch=""))
        assert not check.passed
