"""The hostile corpus (corpus.py) through the whole decision path, in process:

    preflight → fetch (in-memory SSM) → decide → resolve → explain (text and JSON) → audit record
    → hook mode's `environment` shell, evaluated by a real bash

For every entry: a clear refusal or BadInputError-family error, never another exception; no secret
value (nor a repository password) in any output; nothing evaluated by the shell; and no raw
terminal control character printed by `explain` or in a refusal line. Where kitebox prints an
author-controlled string raw, the case fails (every such bug found so far is fixed).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import unicodedata

import pytest

from kitebox import hook
from kitebox.core import explain
from kitebox.core.audit import decision_record
from kitebox.core.slug import repo_slug
from kitebox.errors import BadInputError, KiteboxError, RefusedError
from kitebox.evaluate import evaluate, resolve_values
from kitebox.settings import Settings
from tests.fakes import MemoryResolver, MemoryStore
from tests.hostile import corpus

BASE = "/vendors/buildkite"
REPO = "git@github.com:acme/widgets.git"
PIPELINE = "widgets"
SECRET = "corpus-SECRET-value-7f3a"  # a plain secret every job here could be granted
SECRET_NAME = "CORPUS_SECRET"


def base_job(**overrides: str) -> dict[str, str]:
    env = {
        "BUILDKITE_JOB_ID": "0190d1c2-hostile-0000-0000-000000000001",
        "BUILDKITE_BUILD_ID": "0190d1c2-build-0000-0000-000000000042",
        "BUILDKITE_BUILD_NUMBER": "42",
        "BUILDKITE_ORGANIZATION_SLUG": "acme",
        "BUILDKITE_PIPELINE_SLUG": PIPELINE,
        "BUILDKITE_REPO": REPO,
        "BUILDKITE_BRANCH": "main",
        "BUILDKITE_COMMIT": "HEAD",
        "BUILDKITE_SOURCE": "ui",
        "BUILDKITE_BUILD_CREATOR": "Ada Lovelace",
        "BUILDKITE_BUILD_CREATOR_EMAIL": "ada@example.com",
        "BUILDKITE_BUILD_CREATOR_TEAMS": "dev",
        "BUILDKITE_AGENT_META_DATA_QUEUE": "default",
        "BUILDKITE_AGENT_NAME": "agent-1",
        "BUILDKITE_REDACTED_VARS": "*_TOKEN",
    }
    env.update(overrides)
    return env


def base_parameters(pipeline: str = PIPELINE, repo: str = REPO) -> dict[str, str | tuple[str, str]]:
    """A global team ACL (so a hostile team list is refused in a message that names teams), and
    one secret at the pipeline node."""
    params: dict[str, str | tuple[str, str]] = {
        f"{BASE}/global/allowed_teams": ("dev\nops", "String"),
        f"{BASE}/{pipeline}/env/{SECRET_NAME}": SECRET,
    }
    return params


# -- what "safe output" means ------------------------------------------------------------------

_BIDI = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"}


def unsafe_for_terminal(text: str) -> list[str]:
    """Raw characters a terminal acts on: C0 controls but newline, DEL, C1 controls, bidi overrides."""
    return sorted({repr(c) for c in text
                   if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F or c in _BIDI})


def c0_escapes(text: str) -> list[str]:
    """What JSON must escape (C0, ESC above all): a terminal printing `--json` acts on these."""
    return sorted({repr(c) for c in text if ord(c) < 0x20 and c not in "\n"})


@contextlib.contextmanager
def captured_stderr():
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer


class Outcome:
    """Every output of one job through the path; `error` is the KiteboxError raised, if any."""

    def __init__(self, environ: dict[str, str], parameters: dict, tmp_path):
        self.environ = environ
        self.store = MemoryStore(parameters)
        self.error: KiteboxError | None = None
        self.decision = None
        self.values: dict = {}
        self.text = self.json_text = self.audit_text = self.hook_script = self.hook_stderr = ""
        settings = Settings(audit="off")
        from kitebox.core.identity import JobIdentity

        try:
            decision = evaluate(JobIdentity.from_environ(environ), settings, self.store)
            self.decision, self.values = resolve_values(decision, lambda: MemoryResolver({}))
            self.text = explain.as_text(self.decision)
            self.json_text = json.dumps(explain.as_json(self.decision), indent=2, ensure_ascii=False)
            self.audit_text = json.dumps(decision_record(self.decision, "hook", "2026-01-01T00:00:00+00:00"),
                                         sort_keys=True, ensure_ascii=False)
        except KiteboxError as error:  # anything else is a crash: the test fails with it
            self.error = error
        with captured_stderr() as stderr:
            try:
                self.hook_script = hook.environment(environ, settings, self.store, lambda: MemoryResolver({}))
            except RefusedError as error:
                self.hook_error: KiteboxError | None = error
            except KiteboxError as error:
                self.hook_error = error
            else:
                self.hook_error = None
        self.hook_stderr = stderr.getvalue() + (f"kitebox: {self.hook_error}\n" if self.hook_error else "")
        self.tmp_path = tmp_path

    @property
    def outputs(self) -> dict[str, str]:
        return {"explain": self.text, "explain --json": self.json_text, "audit": self.audit_text,
                "hook stderr": self.hook_stderr, "error": str(self.error or "")}

    def evaluated(self, names: list[str]) -> dict[str, str]:
        """`eval` the hook's script in a real bash (cwd: the test's dir) and read the variables back."""
        printer = "; ".join(f'printf "%s\\0" "${{{name}-<unset>}}"' for name in names)
        done = subprocess.run(
            ["bash", "-c", f'eval "$KITEBOX_TEST_SCRIPT"; {printer}'],
            env={"PATH": os.environ["PATH"], "KITEBOX_TEST_SCRIPT": self.hook_script},
            cwd=self.tmp_path, capture_output=True, timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert not (self.tmp_path / corpus.CANARY).exists(), "the hook's script ran a command from a value"
        return dict(zip(names, done.stdout.decode("utf-8", "surrogateescape").split("\0")))


def assert_no_secret(outcome: Outcome, *secrets: str) -> None:
    for where, text in outcome.outputs.items():
        for secret in (SECRET, corpus.PASSWORD, *secrets):
            for needle in {secret, secret[:40]}:  # a cut-off prefix is a leak too
                if len(needle) >= 8:
                    assert needle not in text, f"a secret is in the {where} output"


def assert_terminal_safe(outcome: Outcome) -> None:
    assert unsafe_for_terminal(outcome.text) == [], "explain (text) prints a raw control character"
    assert c0_escapes(outcome.json_text) == [], "explain --json prints a raw control character"
    assert unsafe_for_terminal(outcome.hook_stderr) == [], "a hook message prints a raw control character"


# -- BUILDKITE_REPO ------------------------------------------------------------------------------


def _repo_usable(url: str) -> bool:
    try:
        repo_slug(url)
        return True
    except KiteboxError:
        return False


class TestRepositoryUrls:
    @pytest.mark.parametrize("url", [u for _, u in corpus.REPO_URLS], ids=[i for i, _ in corpus.REPO_URLS])
    def test_refused_before_ssm_or_normalised_without_credentials(self, url, tmp_path):
        """An unusable URL is refused at preflight (rule `slug`, nothing read from SSM); a usable
        one reads its own namespace; the password is in no output; explain stays terminal-safe."""
        outcome = Outcome(base_job(BUILDKITE_REPO=url), base_parameters(), tmp_path)
        assert outcome.error is None
        if _repo_usable(url):
            assert outcome.store.fetched and outcome.decision.namespaces[1].slug == repo_slug(url)
        else:
            assert not outcome.decision.allowed and outcome.store.fetched == []
            assert [(c.node, c.rule) for c in outcome.decision.refusals] == [("BUILDKITE_REPO", "slug")]
            assert isinstance(outcome.hook_error, RefusedError) and outcome.hook_script == ""
        assert_no_secret(outcome)
        assert_terminal_safe(outcome)

    @pytest.mark.parametrize("url", ["git@acme:deploy", "ssh://git@h:22/a/b", "https://x/y.git"],
                             ids=["dotless-host", "port", "plain"])
    def test_repo_slug_cannot_be_another_pipelines_namespace(self, url):
        """Every repo slug holds '_' and no pipeline slug may (Buildkite's are [a-z0-9-]): a
        repository URL can never name a pipeline's namespace (`git@acme:deploy` → `acme_deploy`)."""
        from kitebox.core.names import check_pipeline_slug
        from kitebox.core.slug import repo_slug

        slug = repo_slug(url)
        assert "_" in slug
        with pytest.raises(BadInputError):
            check_pipeline_slug(slug)

    def test_allowed_pipelines_on_the_node_stops_the_slug_collision(self, tmp_path):
        """The documented defence holds: `allowed_pipelines` at the victim's node refuses the
        colliding job, wherever that node is read from."""
        victim = "acme_deploy"
        parameters = {
            f"{BASE}/{victim}/allowed_pipelines": victim,
            f"{BASE}/{victim}/env/DEPLOY_TOKEN": "victim-deploy-token-91c2",
        }
        outcome = Outcome(base_job(BUILDKITE_REPO="git@acme:deploy", BUILDKITE_PIPELINE_SLUG="attacker"),
                          parameters, tmp_path)
        assert not outcome.decision.allowed and outcome.hook_script == ""
        assert_no_secret(outcome, "victim-deploy-token-91c2")


# -- BUILDKITE_PIPELINE_SLUG -----------------------------------------------------------------------


class TestPipelineSlugs:
    @pytest.mark.parametrize("slug", [s for _, s in corpus.PIPELINE_SLUGS], ids=[i for i, _ in corpus.PIPELINE_SLUGS])
    def test_refused_at_preflight(self, slug, tmp_path):
        """Every hostile slug is refused before SSM is read (rule `slug` at BUILDKITE_PIPELINE_SLUG)."""
        outcome = Outcome(base_job(BUILDKITE_PIPELINE_SLUG=slug), base_parameters(), tmp_path)
        assert outcome.error is None and not outcome.decision.allowed
        assert outcome.store.fetched == []
        assert ("BUILDKITE_PIPELINE_SLUG", "slug") in [(c.node, c.rule) for c in outcome.decision.refusals]
        assert outcome.hook_script == ""
        assert_no_secret(outcome)
        assert_terminal_safe(outcome)


# SSM's own rule for parameter names (ValidationException otherwise): a namespace writer cannot
# create a name with a control character, so only names SSM takes are checked for terminal safety.
SSM_NAME = re.compile(r"[A-Za-z0-9_.\-/]+")


# -- env/<name> parameters ---------------------------------------------------------------------------


class TestEnvNames:
    @pytest.mark.parametrize("relative", [n for _, n in corpus.ENV_NAMES], ids=[i for i, _ in corpus.ENV_NAMES])
    def test_refused_or_a_plain_unreserved_name(self, relative, tmp_path):
        """A parameter under env/ becomes a variable only with a plain, unreserved shell name;
        otherwise the job is refused naming the parameter (rule env-name), never half-granted."""
        from kitebox.core.names import RESERVED_PREFIXES, RESERVED_VARIABLES

        parameters = base_parameters() | {f"{BASE}/{PIPELINE}/{relative}": "hostile-name-VALUE-0a1b"}
        outcome = Outcome(base_job(), parameters, tmp_path)
        assert outcome.error is None
        for grant in outcome.decision.env:
            assert grant.name.isascii() and (grant.name[0].isalpha() or grant.name[0] == "_")
            assert all(c.isalnum() or c == "_" for c in grant.name)
            assert grant.name not in RESERVED_VARIABLES and not grant.name.startswith(RESERVED_PREFIXES)
        names = {g.name for g in outcome.decision.env}
        if not outcome.decision.allowed:
            assert [c.rule for c in outcome.decision.refusals] == ["env-name"]
            assert outcome.hook_script == ""
        else:
            assert names - {SECRET_NAME} and outcome.evaluated(sorted(names))[SECRET_NAME] == SECRET
        assert_no_secret(outcome, "hostile-name-VALUE-0a1b")
        if SSM_NAME.fullmatch(relative):  # SSM itself refuses other names (put_parameter), so
            assert_terminal_safe(outcome)  # only an operator could print those, from memory


# -- secret values ---------------------------------------------------------------------------------


class TestEnvValues:
    @pytest.mark.parametrize("value", [v for _, v in corpus.ENV_VALUES], ids=[i for i, _ in corpus.ENV_VALUES])
    def test_byte_exact_through_bash_or_refused_never_shown(self, value, tmp_path):
        """The value reaches bash's environment byte-exact (nothing evaluated), or the job is
        refused by name and size/NUL; the value is never in explain, audit or a message."""
        parameters = base_parameters() | {f"{BASE}/{PIPELINE}/env/HOSTILE": value}
        outcome = Outcome(base_job(), parameters, tmp_path)
        assert outcome.error is None
        if outcome.decision.allowed:
            got = outcome.evaluated(["HOSTILE", SECRET_NAME, "BUILDKITE_REDACTED_VARS"])
            assert got["HOSTILE"] == value and got[SECRET_NAME] == SECRET
            assert got["BUILDKITE_REDACTED_VARS"].split(",") == ["*_TOKEN", "CORPUS_SECRET", "HOSTILE"]
        else:
            assert [c.rule for c in outcome.decision.refusals] == ["env-value"]
            assert outcome.hook_script == "" and "HOSTILE" in outcome.hook_stderr
        # Values shorter than 8 characters ("'", "-e") are too common to search for.
        assert_no_secret(outcome, value) if len(value) >= 8 else assert_no_secret(outcome)
        assert_terminal_safe(outcome)


# -- identity fields -------------------------------------------------------------------------------

# Which job variable each identity field comes from.
FIELDS = {
    "creator": "BUILDKITE_BUILD_CREATOR",
    "creator_email": "BUILDKITE_BUILD_CREATOR_EMAIL",
    "creator_teams": "BUILDKITE_BUILD_CREATOR_TEAMS",
    "unblocker_teams": "BUILDKITE_UNBLOCKER_TEAMS",
    "job_id": "BUILDKITE_JOB_ID",
    "build_number": "BUILDKITE_BUILD_NUMBER",
    "build_id": "BUILDKITE_BUILD_ID",
    "source": "BUILDKITE_SOURCE",
    "branch": "BUILDKITE_BRANCH",
    "queue": "BUILDKITE_AGENT_META_DATA_QUEUE",
    "organization": "BUILDKITE_ORGANIZATION_SLUG",
    "agent_name": "BUILDKITE_AGENT_NAME",
    "commit": "BUILDKITE_COMMIT",
    "redacted_vars": "BUILDKITE_REDACTED_VARS",
}
def _identity_cases():
    for field, variable in FIELDS.items():
        for case, value in corpus.IDENTITY_VALUES:
            if field.endswith("teams") and ":" in value:
                continue
            # explain and refusal lines show author fields through checks.shown(): escaped when
            # not printable, so no terminal control gets through raw.
            yield pytest.param(variable, value, id=f"{field}-{case}")


class TestIdentityFields:
    @pytest.mark.parametrize(("variable", "value"), list(_identity_cases()))
    def test_never_crashes_leaks_or_prints_raw(self, variable, value, tmp_path):
        """Any job variable: no crash, no secret in any output, no raw terminal control in explain
        or in a hook message; the hook's script still evaluates cleanly in bash."""
        outcome = Outcome(base_job(**{variable: value}), base_parameters(), tmp_path)
        assert outcome.error is None
        assert_no_secret(outcome)
        if outcome.hook_script and "\x00" not in outcome.hook_script:  # no real environment holds a NUL
            got = outcome.evaluated([SECRET_NAME])
            assert got[SECRET_NAME] == SECRET
        record = json.loads(outcome.audit_text)
        assert record["creator"] == outcome.decision.identity.creator  # recorded whole, as JSON
        assert_terminal_safe(outcome)


def test_corpus_covers_every_category():
    """The corpus holds each kind of hostile input the issue names."""
    everything = [v for group in (corpus.REPO_URLS, corpus.PIPELINE_SLUGS, corpus.ENV_NAMES, corpus.ENV_VALUES,
                                  corpus.IDENTITY_VALUES) for _, v in group]
    assert any("\x00" in v for v in everything) and any(corpus.ESC in v for v in everything)
    assert any(".." in v for v in everything) and any(len(v) >= 100_000 for v in everything)
    assert any(unicodedata.category(c) == "Cf" for v in everything for c in v)  # bidi, zero-width
    assert any(not c.isascii() and c.isalpha() for v in everything for c in v)  # confusables
    assert any(corpus.PASSWORD in v for v in everything) and any("$(" in v for v in everything)


# -- list nodes a namespace writer fills -------------------------------------------------------------


class TestListNodes:
    @pytest.mark.parametrize("rule", ["allowed_pipelines", "allowed_teams", "allowed_branches", "repository"])
    def test_entries_never_reach_the_terminal_raw(self, rule, tmp_path):
        """An ACL or admission node holding an escape sequence: explain and the refusal line show
        at most a count or a repr() of it, never the raw escape."""
        parameters = base_parameters() | {f"{BASE}/{PIPELINE}/{rule}": f"{corpus.OSC_TITLE}\nother"}
        outcome = Outcome(base_job(), parameters, tmp_path)
        assert outcome.error is None and not outcome.decision.allowed
        assert_terminal_safe(outcome)

    def test_allowed_roles_entries_never_reach_the_terminal_raw(self, tmp_path):
        """An allowed_roles entry holding an OSC sequence is shown escaped by explain."""
        parameters = base_parameters() | {
            f"{BASE}/{PIPELINE}/allowed_roles": f"arn:aws:iam::123456789012:role/x{corpus.OSC_TITLE}"}
        outcome = Outcome(base_job(), parameters, tmp_path)
        assert outcome.error is None
        assert_terminal_safe(outcome)
