"""Properties of the whole decision core (evaluate → resolve → explain → audit), with Hypothesis
drawing both the job (every BUILDKITE_* field, hostile alphabets) and what SSM holds (names under
the three namespaces, ACL lists, admission nodes, keys, references, hostile values).

tests/core checks each rule by table and slug/names/roles/envfile/shell by property; this checks
what must hold for ANY job against ANY store:
    never an exception but a KiteboxError         deny by default: a node's list that does not
    no value in explain, JSON or the audit line     name the job refuses it, anywhere
    a granted name is a plain, unreserved name     a grant comes only from env/ under the job's
    a refused job is granted nothing                three namespaces, the later namespace winning
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kitebox.core import explain
from kitebox.core.audit import decision_record
from kitebox.core.identity import JobIdentity
from kitebox.core.names import RESERVED_PREFIXES, RESERVED_VARIABLES
from kitebox.errors import KiteboxError
from kitebox.evaluate import evaluate, resolve_values
from kitebox.settings import Settings
from tests.fakes import MemoryResolver, MemoryStore

BASE = "/vendors/buildkite"
MARK = "SeCrEt"  # every value drawn carries it, so "no value in the output" is a substring check

hostile_text = st.text(alphabet=st.one_of(
    st.sampled_from(list("abcz019-_./:@ ~$`'\"\\;|&*?[]{}()\n\r\t\x00\x1b\x07\x7f\x9b\u202e\u200b\ufeffıſＡа")),
    st.characters()), max_size=24)
def mostly(good, bad, times=5):
    """`good` about `times` times as often as `bad`."""
    return st.integers(0, times).flatmap(lambda i: bad if i == 0 else good)


slugs = mostly(st.sampled_from(["app", "widgets", "a_b", "x-1", "global"]), hostile_text, 8)
repos = mostly(st.sampled_from(["git@github.com:acme/app.git", "https://u:pw-" + MARK + "@github.com/acme/app.git",
                                "ssh://git@github.com:22/acme/app.git", "git@acme:app"]), hostile_text, 8)
team_lists = st.lists(mostly(st.sampled_from(["dev", "ops", "sre"]), hostile_text, 3), max_size=3).map(":".join)

jobs = st.fixed_dictionaries({
    "BUILDKITE_PIPELINE_SLUG": slugs,
    "BUILDKITE_REPO": repos,
    "BUILDKITE_BRANCH": st.one_of(st.sampled_from(["main", "release/1", "feature/x"]), hostile_text),
    "BUILDKITE_BUILD_CREATOR_TEAMS": team_lists,
    "BUILDKITE_UNBLOCKER_TEAMS": team_lists,
    "BUILDKITE_SOURCE": st.one_of(st.sampled_from(["ui", "schedule", "api"]), hostile_text),
    "BUILDKITE_BUILD_CREATOR": hostile_text,
    "BUILDKITE_JOB_ID": hostile_text,
    "BUILDKITE_BUILD_NUMBER": hostile_text,
})

RELATIVE = st.one_of(
    st.sampled_from(["allowed_pipelines", "allowed_teams", "repository", "allowed_branches", "allowed_roles",
                     "ssh/key", "env/TOKEN", "env/token", "env/PATH", "env/a.b", "env/x/y", "env/ld-preload",
                     "env/BUILDKITE_X", "other"]),
    st.builds(lambda s: "env/" + s, hostile_text),
    st.sampled_from(["env/TOKEN", "env/A", "env/B", "allowed_pipelines", "allowed_teams"]),
)
SECRET_VALUES = st.one_of(  # env/<name> and ssh/key: never to be shown
    st.builds(lambda s: MARK + s, hostile_text),
    st.just("{{resolve:secretsmanager:buildkite/x}}"),
    st.just("{{resolve:secretsmanager:elsewhere/x}}"),
    st.just(MARK + "\x00nul"),
    st.just(MARK + "v" * 70_000),
)
LIST_VALUES = st.one_of(  # ACL, admission and role nodes: not secret (explain names what they hold)
    st.builds(lambda s: f"app\n{s}\nwidgets", hostile_text),
    st.builds(lambda a, b: f"{a}\n{b}", st.sampled_from(["dev", "ops", "app", "main", "release/*"]), hostile_text),
    hostile_text,
)


@st.composite
def stores(draw, job):
    pipeline, repo = job["BUILDKITE_PIPELINE_SLUG"], job["BUILDKITE_REPO"]
    from kitebox.core.slug import repo_slug

    try:
        repo_node = repo_slug(repo)
    except KiteboxError:
        repo_node = "github.com_acme_app.git"
    nodes = [f"{BASE}/global", f"{BASE}/{repo_node}", f"{BASE}/{pipeline}", f"{BASE}/other-pipeline"]
    kinds = st.sampled_from(["String", "StringList", "SecureString"])
    entries = draw(st.lists(st.tuples(st.sampled_from(nodes), RELATIVE, kinds), max_size=8))
    return {
        f"{node}/{relative}": (draw(SECRET_VALUES if relative.startswith(("env/", "ssh/")) else LIST_VALUES), kind)
        for node, relative, kind in entries
    }


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_job_against_any_store(data):
    """The invariants above, for a drawn job and a drawn SSM content."""
    job = data.draw(jobs)
    parameters = data.draw(stores(job))
    store = MemoryStore(parameters)
    settings_ = Settings(audit="off")
    try:
        decision = evaluate(JobIdentity.from_environ(job), settings_, store)
        decision, values = resolve_values(decision, lambda: MemoryResolver({"buildkite/x": MARK + "-resolved"}))
    except KiteboxError:
        event("KiteboxError")
        return  # a one-line refusal of the input: allowed outcome
    event("allowed" if decision.allowed else ("refused at preflight" if not decision.namespaces else "refused"))
    outputs = [explain.as_text(decision), json.dumps(explain.as_json(decision), ensure_ascii=False),
               json.dumps(decision_record(decision, "hook", "t"), ensure_ascii=False)]
    for text in outputs:
        assert MARK not in text, "a value (or a repository password) is in explain or the audit line"
    if not decision.allowed:
        assert values == {}
        return
    spaces = [space.path for space in decision.namespaces]
    for grant in decision.env:
        assert grant.name.isascii() and grant.name.replace("_", "a").isalnum() and not grant.name[0].isdigit()
        assert grant.name not in RESERVED_VARIABLES and not grant.name.startswith(RESERVED_PREFIXES)
        assert any(grant.parameter.startswith(path + "/env/") for path in spaces), grant.parameter
        # precedence: no later namespace holds a parameter for the same variable that lost
        winner = next(i for i, path in enumerate(spaces) if grant.parameter.startswith(path + "/"))
        for overridden in grant.overrides:
            assert next(i for i, p in enumerate(spaces) if overridden.startswith(p + "/")) <= winner
    # deny by default: every list node read that does not name the job must have refused it
    identity = decision.identity
    for name, (value, kind) in parameters.items():
        for path in spaces:
            if name == f"{path}/allowed_pipelines":
                entries = value.replace(",", "\n").splitlines() if kind == "StringList" else value.splitlines()
                assert identity.pipeline_slug in {e.strip() for e in entries}, "allowed_pipelines ignored"
            if name == f"{path}/allowed_teams":
                entries = value.replace(",", "\n").splitlines() if kind == "StringList" else value.splitlines()
                listed = {e.strip() for e in entries if e.strip()}
                scheduled_without_teams = identity.source == "schedule" and not identity.teams
                assert listed & set(identity.teams) or scheduled_without_teams, "allowed_teams ignored"
