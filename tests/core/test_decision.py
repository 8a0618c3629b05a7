"""Everything combined into a Decision (src/kitebox/core/decision.py)."""

from __future__ import annotations

import uuid

import pytest

from kitebox.core.decision import (
    MAX_VALUE_BYTES,
    Decision,
    EnvGrant,
    KeyGrant,
    Parameter,
    check_value,
    decide,
    preflight,
)
from kitebox.core.identity import JobIdentity
from kitebox.core.names import Kind
from kitebox.core.references import SecretsManagerRef
from kitebox.core.secret import Secret

BASE = "/vendors/buildkite"
REPO = "git@github.com:acme/app.git"
REPO_SLUG = "github.com_acme_app.git"
G = f"{BASE}/global"
R = f"{BASE}/{REPO_SLUG}"
P = f"{BASE}/my-pipe"
NODES = {"global": G, "repo": R, "pipeline": P}


def job(**fields) -> JobIdentity:
    base = dict(pipeline_slug="my-pipe", repo=REPO, branch="main", source="webhook", creator_teams=("ops",))
    base.update(fields)
    return JobIdentity(**base)


def param(name: str, value: str, type_: str = "String") -> Parameter:
    return Parameter(name, Secret(value), type_)


def run(*parameters: Parameter, identity: JobIdentity | None = None, prefix: str = "buildkite/") -> Decision:
    """Decide with each parameter filed under the namespace path it starts with (the fetch's shape)."""
    pre = preflight(identity or job(), BASE)
    fetched: dict[str, list[Parameter]] = {}
    for p in parameters:
        home = next((path for path in (G, R, P) if p.name.startswith(path + "/")), P)
        fetched.setdefault(home, []).append(p)
    return decide(pre, fetched, prefix)


class TestPreflight:
    def test_namespaces_of_a_good_job(self):
        """A good job reads global, its repo slug and its pipeline slug, in that order (seed conventions)."""
        pre = preflight(job(), BASE)
        assert pre.allowed and pre.checks == ()
        assert [(s.kind, s.path) for s in pre.namespaces] == [(Kind.GLOBAL, G), (Kind.REPO, R), (Kind.PIPELINE, P)]

    @pytest.mark.parametrize("repo", ["", "/srv/app.git", "https://github.com/a/../b.git", "file:///srv/x"], ids=["empty", "local", "dotdot", "file"])
    def test_bad_repo_is_refused_without_namespaces(self, repo):
        """A BUILDKITE_REPO that cannot be slugged refuses the job before anything is read."""
        pre = preflight(job(repo=repo), BASE)
        assert not pre.allowed
        assert pre.namespaces == ()
        assert [(c.node, c.rule, c.passed) for c in pre.checks] == [("BUILDKITE_REPO", "slug", False)]

    def test_global_pipeline_slug_is_refused(self):
        """A pipeline slug `global` is refused up front, naming the reserved namespace (seed conventions)."""
        pre = preflight(job(pipeline_slug="global"), BASE)
        assert not pre.allowed and pre.namespaces == ()
        (check,) = pre.checks
        assert check.node == "BUILDKITE_PIPELINE_SLUG"
        assert "reserved namespace" in check.message

    def test_both_refusals_are_reported(self):
        """A bad repo and a bad slug are both reported."""
        pre = preflight(job(repo="", pipeline_slug="Bad Slug"), BASE)
        assert [c.node for c in pre.checks] == ["BUILDKITE_REPO", "BUILDKITE_PIPELINE_SLUG"]

    def test_decide_after_refused_preflight_grants_nothing(self):
        """decide() on a refused preflight returns its refusals and grants nothing."""
        pre = preflight(job(repo=""), BASE)
        decision = decide(pre, {G: [param(f"{G}/env/FOO", "x")]})
        assert not decision.allowed
        assert decision.checks == pre.checks and decision.refusals == pre.checks
        assert decision.env == () and decision.keys == () and decision.roles == ()


class TestPrecedence:
    def test_pipeline_beats_repo_beats_global(self):
        """A variable set in all three namespaces takes the pipeline's value and records what it overrode (seed read order)."""
        decision = run(param(f"{G}/env/FOO", "g"), param(f"{R}/env/FOO", "r"), param(f"{P}/env/FOO", "p"))
        (grant,) = decision.env
        assert grant.name == "FOO"
        assert grant.parameter == f"{P}/env/FOO"
        assert grant.value.reveal() == "p"
        assert grant.overrides == (f"{G}/env/FOO", f"{R}/env/FOO")

    def test_repo_beats_global(self):
        """Without a pipeline value, the repo's value wins over the global one."""
        (grant,) = run(param(f"{G}/env/FOO", "g"), param(f"{R}/env/FOO", "r")).env
        assert (grant.parameter, grant.value.reveal(), grant.overrides) == (f"{R}/env/FOO", "r", (f"{G}/env/FOO",))

    def test_global_alone(self):
        """A global variable reaches every job and overrides nothing (seed global secrets)."""
        (grant,) = run(param(f"{G}/env/fav-lesson", "g")).env
        assert (grant.name, grant.overrides) == ("FAV_LESSON", ())

    def test_variables_merge_sorted(self):
        """Different variables from different namespaces are all granted, sorted by name."""
        decision = run(param(f"{P}/env/ZED", "1"), param(f"{G}/env/ALPHA", "2"), param(f"{R}/env/MID", "3"))
        assert [g.name for g in decision.env] == ["ALPHA", "MID", "ZED"]
        assert decision.allowed

    def test_same_name_in_one_namespace_is_deterministic(self):
        """Two parameters mapping to one variable in one namespace resolve by parameter name order."""
        decision = run(param(f"{P}/env/a-b", "lower"), param(f"{P}/env/A_B", "upper"))
        (grant,) = decision.env
        assert grant.parameter == f"{P}/env/a-b"
        assert grant.overrides == (f"{P}/env/A_B",)


class TestAcl:
    @pytest.mark.parametrize("where", list(NODES), ids=list(NODES))
    @pytest.mark.parametrize(
        ("rule", "value"),
        [("allowed_pipelines", "other-pipe"), ("allowed_teams", "other-team")],
        ids=["pipelines", "teams"],
    )
    def test_refusal_at_any_node(self, where, rule, value):
        """An ACL that does not list the job refuses it at any node, naming node and rule (seed ACL: a denial fails the job)."""
        node = f"{NODES[where]}/{rule}"
        decision = run(param(node, value), param(f"{P}/env/FOO", "x"))
        assert not decision.allowed
        (refusal,) = decision.refusals
        assert (refusal.node, refusal.rule) == (node, rule)
        assert node in refusal.line() and f"rule {rule}" in refusal.line()

    @pytest.mark.parametrize("where", list(NODES), ids=list(NODES))
    def test_passing_acls_are_recorded(self, where):
        """Passing ACL checks are kept in the decision and do not refuse it."""
        decision = run(param(f"{NODES[where]}/allowed_pipelines", "my-pipe"), param(f"{NODES[where]}/allowed_teams", "ops"))
        assert decision.allowed
        assert [(c.rule, c.passed) for c in decision.checks] == [("allowed_pipelines", True), ("allowed_teams", True)]

    def test_one_refusal_among_passes_refuses(self):
        """One failing ACL refuses the job even when others pass."""
        decision = run(param(f"{G}/allowed_teams", "ops"), param(f"{P}/allowed_pipelines", "someone-else"))
        assert not decision.allowed
        assert [c.node for c in decision.refusals] == [f"{P}/allowed_pipelines"]

    def test_scheduled_build_passes_team_acl(self):
        """A scheduled build with no teams passes allowed_teams at a node (seed rule)."""
        decision = run(param(f"{R}/allowed_teams", "ops"), identity=job(creator_teams=(), source="schedule"))
        assert decision.allowed


class TestAdmission:
    def test_repository_at_pipeline_node_passes(self):
        """The pipeline's `repository` node admits the same repository in another URL form (seed 002)."""
        decision = run(param(f"{P}/repository", "https://github.com/acme/app"))
        assert decision.allowed
        assert [(c.rule, c.passed) for c in decision.checks] == [("repository", True)]

    def test_repository_mismatch_refuses(self):
        """The pipeline's `repository` node refuses another repository, naming both normal forms."""
        decision = run(param(f"{P}/repository", "git@github.com:acme/other.git"))
        (refusal,) = decision.refusals
        assert refusal.rule == "repository"
        assert "github.com/acme/other" in refusal.message and "github.com/acme/app" in refusal.message

    def test_branches_at_pipeline_node(self):
        """The pipeline's `allowed_branches` node admits matching branches and refuses others (seed 002)."""
        assert run(param(f"{P}/allowed_branches", "main\nrelease/*")).allowed
        refused = run(param(f"{P}/allowed_branches", "release/*"))
        assert [c.rule for c in refused.refusals] == ["allowed_branches"]

    @pytest.mark.parametrize("where", ["global", "repo"], ids=["global", "repo"])
    @pytest.mark.parametrize(
        ("relative", "value"),
        [("repository", "git@github.com:evil/other.git"), ("allowed_branches", "nothing-matches")],
        ids=["repository", "allowed_branches"],
    )
    def test_admission_nodes_elsewhere_are_ignored(self, where, relative, value):
        """`repository` and `allowed_branches` outside the pipeline namespace are ignored with a reason, not applied."""
        name = f"{NODES[where]}/{relative}"
        decision = run(param(name, value))
        assert decision.allowed
        assert decision.checks == ()
        assert decision.ignored == ((name, f"{relative} is only read at the pipeline node"),)


class TestKeys:
    def test_global_key(self):
        """A key in the global namespace is the `global` key, for plugin checkouts (seed deploy keys)."""
        decision = run(param(f"{G}/ssh/key", "gk"))
        assert [k.purpose for k in decision.keys] == ["global"]
        assert decision.key("global").parameter == f"{G}/ssh/key"
        assert decision.key("repo") is None

    def test_repo_key(self):
        """A key in the repo namespace is the `repo` key, for the checkout (seed deploy keys)."""
        decision = run(param(f"{R}/ssh/key", "rk"))
        assert decision.key("repo").parameter == f"{R}/ssh/key"
        assert decision.key("repo").key.reveal() == "rk"
        assert decision.key("global") is None

    def test_pipeline_key_wins_over_repo_key(self):
        """A pipeline's own key replaces the repo's key as the `repo` key."""
        decision = run(param(f"{R}/ssh/key", "rk"), param(f"{P}/ssh/key", "pk"), param(f"{G}/ssh/key", "gk"))
        assert [k.purpose for k in decision.keys] == ["repo", "global"]
        assert decision.key("repo").parameter == f"{P}/ssh/key"
        assert decision.key("repo").key.reveal() == "pk"
        assert decision.key("global").key.reveal() == "gk"


class TestRolesAndIgnored:
    def test_allowed_roles_are_collected(self):
        """allowed_roles from every namespace are collected with their node, once each, in precedence order."""
        decision = run(
            param(f"{G}/allowed_roles", "arn:aws:iam::1:role/a\narn:aws:iam::1:role/b"),
            param(f"{P}/allowed_roles", "arn:aws:iam::1:role/b,arn:aws:iam::1:role/c", "StringList"),
        )
        assert decision.roles == (
            ("arn:aws:iam::1:role/a", f"{G}/allowed_roles"),
            ("arn:aws:iam::1:role/b", f"{G}/allowed_roles"),
            ("arn:aws:iam::1:role/b", f"{P}/allowed_roles"),
            ("arn:aws:iam::1:role/c", f"{P}/allowed_roles"),
        )

    @pytest.mark.parametrize(
        "name",
        [f"{P}/notes", f"{P}/ssh/key2", f"{G}/allowed_teams/extra", "/elsewhere/env/FOO"],
        ids=["unknown", "ssh-other", "nested-acl", "outside-namespace"],
    )
    def test_unknown_parameters_are_ignored(self, name):
        """A parameter that is not a kitebox parameter is ignored with a reason and grants nothing."""
        decision = run(param(name, "x"))
        assert decision.allowed and decision.env == () and decision.keys == ()
        assert decision.ignored == ((name, "not a kitebox parameter (env/<name>, ssh/key, allowed_*, repository)"),)


class TestEnvRefusals:
    @pytest.mark.parametrize(
        ("relative", "named"),
        [("env/PATH", "PATH"), ("env/BUILDKITE_AGENT_TOKEN", "BUILDKITE_AGENT_TOKEN"), ("env/a/b", "A/B"), ("env/1x", "1X")],
        ids=["reserved", "buildkite-prefix", "nested", "digit"],
    )
    def test_bad_name_refuses(self, relative, named):
        """An env parameter that cannot be a variable refuses the job, naming it."""
        decision = run(param(f"{R}/{relative}", "x"))
        (refusal,) = decision.refusals
        assert (refusal.node, refusal.rule) == (f"{R}/{relative}", "env-name")
        assert named in refusal.message
        assert decision.env == ()

    def test_reference_inside_prefix_is_granted_unresolved(self):
        """A Secrets Manager reference inside the prefix is granted as a reference for the caller to resolve."""
        decision = run(param(f"{P}/env/DB", "{{resolve:secretsmanager:buildkite/db:SecretString:pw}}"))
        (grant,) = decision.env
        assert grant.value == SecretsManagerRef("buildkite/db", "pw")

    @pytest.mark.parametrize(
        ("value", "prefix"),
        [
            ("{{resolve:secretsmanager:prod/db}}", "buildkite/"),
            ("{{resolve:secretsmanager:arn:aws:secretsmanager:us-east-1:1:secret:prod/db-Ab}}", "buildkite/"),
            ("{{resolve:secretsmanager:buildkite/db}}", ""),
        ],
        ids=["outside", "arn-outside", "empty-prefix"],
    )
    def test_reference_outside_prefix_refuses(self, value, prefix):
        """A reference outside KITEBOX_SECRETS_MANAGER_PREFIX refuses the job and grants nothing (references.py)."""
        decision = run(param(f"{P}/env/DB", value), prefix=prefix)
        (refusal,) = decision.refusals
        assert refusal.rule == "secretsmanager-reference"
        assert "outside the allowed prefix" in refusal.message
        assert decision.env == ()

    def test_malformed_reference_refuses(self):
        """A malformed reference refuses the job."""
        decision = run(param(f"{P}/env/DB", "{{resolve:secretsmanager:buildkite/db:Nope:pw}}"))
        assert [c.rule for c in decision.refusals] == ["secretsmanager-reference"]

    def test_nul_value_refuses(self):
        """A value holding NUL cannot be an environment variable and refuses the job."""
        decision = run(param(f"{P}/env/BIN", "a\x00b"))
        (refusal,) = decision.refusals
        assert (refusal.rule, refusal.node) == ("env-value", f"{P}/env/BIN")
        assert "NUL" in refusal.message
        assert decision.env == ()

    @pytest.mark.parametrize(
        ("value", "allowed"),
        [
            ("a" * MAX_VALUE_BYTES, True),
            ("a" * (MAX_VALUE_BYTES + 1), False),
            ("é" * (MAX_VALUE_BYTES // 2), True),
            ("é" * (MAX_VALUE_BYTES // 2) + "a", False),
        ],
        ids=["ascii-at-limit", "ascii-over", "two-byte-at-limit", "two-byte-over"],
    )
    def test_size_limit_in_bytes(self, value, allowed):
        """Values over 64 KiB of UTF-8 refuse the job; the limit counts bytes, not characters."""
        decision = run(param(f"{P}/env/BIG", value))
        assert decision.allowed is allowed
        if not allowed:
            (refusal,) = decision.refusals
            assert refusal.rule == "env-value" and f"{MAX_VALUE_BYTES}-byte limit" in refusal.message

    def test_check_value_accepts_ordinary_values(self):
        """check_value has nothing to say about an ordinary value."""
        assert check_value("X", f"{P}/env/X", "fine\nvalue") is None
    def test_lone_surrogate_value_is_refused(self):
        """A value that is not encodable text is refused as an env-value, not a crash."""
        decision = run(param(f"{P}/env/ODD", "a\ud800b"))
        assert [c.rule for c in decision.refusals] == ["env-value"]


class TestNoSecretLeaks:
    def test_no_value_in_checks_reprs_or_grants(self):
        """No check message, no repr of the decision, grants, keys or parameters ever shows a secret value."""
        tag = uuid.uuid4().hex
        secret = lambda what: f"s3cr3t-VALUE-{what}-{tag}"  # noqa: E731
        parameters = [
            param(f"{G}/env/GLOBAL_TOKEN", secret("global")),
            param(f"{R}/env/FOO", secret("repo-foo")),
            param(f"{P}/env/FOO", secret("pipe-foo")),
            param(f"{P}/env/NUL", secret("nul") + "\x00"),
            param(f"{P}/env/HUGE", secret("huge") + "x" * MAX_VALUE_BYTES),
            param(f"{P}/env/PATH", secret("path")),
            param(f"{P}/env/a/b", secret("nested")),
            param(f"{P}/env/REF_BAD", "{{resolve:secretsmanager:prod/x}}"),
            param(f"{G}/ssh/key", secret("global-key")),
            param(f"{R}/ssh/key", secret("repo-key")),
            param(f"{P}/ssh/key", secret("pipe-key")),
            param(f"{P}/notes", secret("notes")),
            param(f"{G}/repository", secret("ignored-repo")),
            param(f"{P}/allowed_pipelines", "nobody"),
        ]
        decision = run(*parameters)
        assert not decision.allowed
        assert len(decision.refusals) == 6
        rendered = [repr(decision), str(decision), repr(parameters), str(parameters)]
        rendered += [c.message for c in decision.checks] + [c.line() for c in decision.checks]
        rendered += [repr(g) for g in decision.env] + [repr(k) for k in decision.keys]
        rendered += [repr(p) for p in parameters] + [repr(decision.ignored)]
        text = "\n".join(rendered)
        assert "s3cr3t-VALUE" not in text
        assert tag not in text
        # The grants do carry the values, for the caller that reveals them on purpose.
        assert {g.name: g.value.reveal() for g in decision.env if isinstance(g.value, Secret)}["FOO"] == secret("pipe-foo")
        assert isinstance(decision.env[0], EnvGrant) and isinstance(decision.keys[0], KeyGrant)
