"""Namespaces, parameter roles and variable names (src/kitebox/core/names.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kitebox.core.names import (
    DEFAULT_BASE_PATH,
    GLOBAL,
    RESERVED_PREFIXES,
    RESERVED_VARIABLES,
    Kind,
    Namespace,
    Role,
    check_base_path,
    check_pipeline_slug,
    classify,
    env_var_name,
    namespaces,
)
from kitebox.errors import BadInputError

VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]*")
BASE = "/vendors/buildkite"


class TestEnvVarName:
    @pytest.mark.parametrize(
        ("relative", "name"),
        [
            ("env/fav-lesson", "FAV_LESSON"),
            ("env/ACCESS_TOKEN", "ACCESS_TOKEN"),
            ("env/access_token", "ACCESS_TOKEN"),
            ("env/_private", "_PRIVATE"),
            ("env/a1", "A1"),
            ("env/x-y-z", "X_Y_Z"),
            ("env/NPM-TOKEN-2", "NPM_TOKEN_2"),
            ("env/-x", "_X"),
        ],
        ids=["seed-example", "upper", "lower", "leading-underscore", "digit", "hyphens", "mixed", "leading-hyphen"],
    )
    def test_mapping(self, relative, name):
        """An env parameter name is upper-cased with '-' turned into '_' (seed conventions, buildkite-contract.md)."""
        assert env_var_name(relative) == name

    @pytest.mark.parametrize(
        ("relative", "named"),
        [
            ("env/a/b", "A/B"),
            ("env/1abc", "1ABC"),
            ("env/a.b", "A.B"),
            ("env/", "''"),
            ("env/a b", "A B"),
            ("env/a$b", "A$B"),
        ],
        ids=["nested", "leading-digit", "dot", "empty", "space", "dollar"],
    )
    def test_malformed_names_are_refused(self, relative, named):
        """A name that cannot be a shell variable is refused with an error that names it."""
        with pytest.raises(BadInputError) as caught:
            env_var_name(relative)
        assert named in str(caught.value)

    def test_nested_message_explains(self):
        """A nested env parameter is refused as nested, not as a bad name."""
        with pytest.raises(BadInputError, match="nested env parameters are not variables"):
            env_var_name("env/a/b")

    @pytest.mark.parametrize(
        "relative",
        [
            "env/PATH",
            "env/path",
            "env/LD_PRELOAD",
            "env/ld-preload",
            "env/SSH_AUTH_SOCK",
            "env/GIT_SSH_COMMAND",
            "env/BASH_ENV",
            "env/IFS",
            "env/AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "env/BUILDKITE_FOO",
            "env/buildkite-agent-token",
            "env/KITEBOX_X",
            "env/KITEBOX_BASE_PATH",
        ],
        ids=["PATH", "path-lower", "LD_PRELOAD", "ld-preload-hyphen", "SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "BASH_ENV", "IFS", "aws-container-creds", "BUILDKITE_FOO", "buildkite-hyphen", "KITEBOX_X", "KITEBOX_BASE_PATH"],
    )
    def test_reserved_names_are_refused(self, relative):
        """A variable owned by the agent, kitebox or the shell cannot be set by a secret, and the error names it."""
        name = relative[len("env/"):].upper().replace("-", "_")
        with pytest.raises(BadInputError, match="reserved") as caught:
            env_var_name(relative)
        assert name in str(caught.value)

    @pytest.mark.parametrize(
        "relative",
        ["env/GIT_CONFIG_COUNT", "env/GIT_CONFIG_PARAMETERS", "env/GIT_PROXY_COMMAND", "env/GIT_ASKPASS", "env/SSH_ASKPASS", "env/GIT_EXEC_PATH"],
        ids=["GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS", "GIT_PROXY_COMMAND", "GIT_ASKPASS", "SSH_ASKPASS", "GIT_EXEC_PATH"],
    )
    def test_git_command_hooks_are_reserved(self, relative):
        """Variables that make git run a command, like the reserved GIT_SSH_COMMAND, are refused too."""
        with pytest.raises(BadInputError):
            env_var_name(relative)
    def test_trailing_newline_is_refused(self):
        """A name ending in a newline is not a shell variable name."""
        with pytest.raises(BadInputError):
            env_var_name("env/a\n")

    @given(st.text(max_size=40))
    def test_any_name_is_a_safe_variable_or_refused(self, text):
        """For any relative name, env_var_name returns an unreserved shell variable name or raises BadInputError."""
        assume("\n" not in text)  # the trailing-newline case is pinned by test_trailing_newline_is_refused
        try:
            name = env_var_name("env/" + text)
        except BadInputError:
            return
        assert VARIABLE.fullmatch(name)
        assert name not in RESERVED_VARIABLES
        assert not name.startswith(RESERVED_PREFIXES)


class TestClassify:
    @pytest.mark.parametrize(
        ("relative", "role"),
        [
            ("env/FOO", Role.ENV),
            ("env/a/b", Role.ENV),
            ("ssh/key", Role.SSH_KEY),
            ("allowed_pipelines", Role.ALLOWED_PIPELINES),
            ("allowed_teams", Role.ALLOWED_TEAMS),
            ("repository", Role.REPOSITORY),
            ("allowed_branches", Role.ALLOWED_BRANCHES),
            ("allowed_roles", Role.ALLOWED_ROLES),
            ("ssh/key2", Role.UNKNOWN),
            ("ssh/other", Role.UNKNOWN),
            ("allowed_teams/x", Role.UNKNOWN),
            ("envFOO", Role.UNKNOWN),
            ("README", Role.UNKNOWN),
        ],
        ids=["env", "env-nested", "ssh-key", "allowed_pipelines", "allowed_teams", "repository", "allowed_branches", "allowed_roles", "ssh-key2", "ssh-other", "nested-acl", "env-no-slash", "readme"],
    )
    @pytest.mark.parametrize("kind", list(Kind), ids=[k.value for k in Kind])
    def test_roles(self, kind, relative, role):
        """Each parameter inside a namespace is classified by its path relative to the namespace."""
        space = Namespace(kind, "s", f"{BASE}/s")
        assert classify(space, f"{BASE}/s/{relative}") == (role, relative)

    @pytest.mark.parametrize(
        "name",
        [f"{BASE}/other/env/FOO", f"{BASE}/s", f"{BASE}/sx/env/FOO", "/elsewhere/env/FOO"],
        ids=["sibling", "namespace-itself", "prefix-sibling", "elsewhere"],
    )
    def test_outside_namespace_is_unknown(self, name):
        """A parameter not under the namespace path is UNKNOWN and keeps its full name."""
        space = Namespace(Kind.PIPELINE, "s", f"{BASE}/s")
        assert classify(space, name) == (Role.UNKNOWN, name)


class TestNamespaces:
    def test_precedence_order(self):
        """Namespaces come global, repo, pipeline: the seed's read order, later wins (buildkite-contract.md)."""
        spaces = namespaces(BASE, "github.com_a_b.git", "my-pipe")
        assert [s.kind for s in spaces] == [Kind.GLOBAL, Kind.REPO, Kind.PIPELINE]
        assert [s.slug for s in spaces] == [GLOBAL, "github.com_a_b.git", "my-pipe"]
        assert [s.path for s in spaces] == [f"{BASE}/global", f"{BASE}/github.com_a_b.git", f"{BASE}/my-pipe"]

    def test_node(self):
        """Namespace.node joins a relative path under the namespace."""
        assert Namespace(Kind.GLOBAL, GLOBAL, f"{BASE}/global").node("ssh/key") == f"{BASE}/global/ssh/key"


class TestPipelineSlug:
    @pytest.mark.parametrize("slug", ["my-pipe", "a", "0day", "a" * 100], ids=["hyphen", "one-char", "digit-first", "max-length"])
    def test_valid(self, slug):
        """Buildkite pipeline slugs (lower-case letters, digits, '-', '_') are accepted unchanged."""
        assert check_pipeline_slug(slug) == slug

    def test_global_is_reserved(self):
        """A pipeline slug `global` collides with the global namespace and is refused (seed conventions)."""
        with pytest.raises(BadInputError, match="reserved namespace 'global'"):
            check_pipeline_slug("global")

    @pytest.mark.parametrize(
        "slug",
        ["", "My-Pipe", "-pipe", "_pipe", "a/b", "..", "a.b", "a b", "a" * 101, "p\x00", "pipé", "old_pipe"],
        ids=["empty", "upper", "leading-hyphen", "leading-underscore", "slash", "dotdot", "dot", "space", "too-long", "nul", "unicode", "underscore"],
    )
    def test_malformed(self, slug):
        """A malformed pipeline slug is refused without echoing it."""
        with pytest.raises(BadInputError, match="is not a pipeline slug"):
            check_pipeline_slug(slug)
    def test_trailing_newline_is_refused(self):
        """A pipeline slug ending in a newline is refused."""
        with pytest.raises(BadInputError):
            check_pipeline_slug("my-pipe\n")


class TestBasePath:
    @pytest.mark.parametrize(
        ("base", "trimmed"),
        [
            ("/vendors/buildkite", "/vendors/buildkite"),
            ("/vendors/buildkite/", "/vendors/buildkite"),
            ("/vendors/buildkite//", "/vendors/buildkite"),
            ("/a", "/a"),
            ("/vendors/buildkite/cde", "/vendors/buildkite/cde"),
            ("/a_b/c-d/e.f", "/a_b/c-d/e.f"),
        ],
        ids=["default", "trailing-slash", "two-trailing-slashes", "one-level", "three-levels", "punctuation"],
    )
    def test_valid(self, base, trimmed):
        """An SSM path is accepted without its trailing slash."""
        assert check_base_path(base) == trimmed

    def test_default_is_valid(self):
        """The default base path passes its own check."""
        assert check_base_path(DEFAULT_BASE_PATH) == DEFAULT_BASE_PATH

    @pytest.mark.parametrize(
        "base",
        ["", "/", "vendors/buildkite", "/vendors//buildkite", "/vendors/../x", "/vendors/./x", "/..", "/vendors/..", "/a b", "/a*", "/ä"],
        ids=["empty", "root", "relative", "empty-part", "dotdot", "dot", "root-dotdot", "trailing-dotdot", "space", "star", "unicode"],
    )
    def test_invalid(self, base):
        """A base path SSM would not take, or one with '.' or '..' parts, is refused."""
        with pytest.raises(BadInputError, match="KITEBOX_BASE_PATH"):
            check_base_path(base)
    def test_trailing_newline_is_refused(self):
        """A base path ending in a newline is refused."""
        with pytest.raises(BadInputError):
            check_base_path("/vendors/buildkite\n")
