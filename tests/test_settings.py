"""Operator settings and the job's own variables (src/kitebox/settings.py)."""

from __future__ import annotations

import json

import pytest

from kitebox.core.names import DEFAULT_BASE_PATH
from kitebox.errors import BadInputError, ConfigError
from kitebox.settings import AUTHOR_VARIABLES, Settings, aws_environment, job_variables


class TestDefaults:
    def test_empty_environment(self):
        """With no KITEBOX_* settings every field takes its documented default."""
        settings = Settings.from_environ({})
        assert settings == Settings()
        assert settings.base_path == DEFAULT_BASE_PATH == "/vendors/buildkite"
        assert (settings.audit, settings.keep_repo_key_after_checkout) == ("stderr", False)
        assert (settings.secrets_manager_prefix, settings.ssm_max_attempts, settings.ssm_timeout_seconds) == ("buildkite/", 3, 5.0)

    def test_every_setting_is_read(self):
        """Each KITEBOX_* variable sets its field."""
        settings = Settings.from_environ(
            {
                "KITEBOX_BASE_PATH": "/vendors/buildkite/cde/",
                "KITEBOX_AUDIT": "/var/log/kitebox.jsonl",
                "KITEBOX_KEEP_REPO_KEY": "yes",
                "KITEBOX_SECRETS_MANAGER_PREFIX": "ci/",
                "KITEBOX_SSM_MAX_ATTEMPTS": "5",
                "KITEBOX_SSM_TIMEOUT": "2.5",
            }
        )
        assert settings == Settings("/vendors/buildkite/cde", "/var/log/kitebox.jsonl", True, "ci/", 5, 2.5)


class TestValidation:
    @pytest.mark.parametrize(
        "base",
        ["vendors/buildkite", "/vendors/../x", "/a b", "", "/"],
        ids=["relative", "dotdot", "space", "empty", "root"],
    )
    def test_bad_base_path(self, base):
        """A malformed KITEBOX_BASE_PATH is a ConfigError (seed: BASE_PATH picks whose secrets are read)."""
        with pytest.raises(ConfigError, match="KITEBOX_BASE_PATH"):
            Settings.from_environ({"KITEBOX_BASE_PATH": base})

    @pytest.mark.parametrize(
        ("value", "flag"),
        [("1", True), ("true", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("false", False), ("no", False), ("off", False), ("", False)],
        ids=["1", "true", "TRUE", "yes-spaces", "on", "0", "false", "no", "off", "empty"],
    )
    def test_flag_values(self, value, flag):
        """KITEBOX_KEEP_REPO_KEY accepts the usual true and false spellings."""
        assert Settings.from_environ({"KITEBOX_KEEP_REPO_KEY": value}).keep_repo_key_after_checkout is flag

    @pytest.mark.parametrize(
        ("name", "value"),
        [("KITEBOX_KEEP_REPO_KEY", "maybe"), ("KITEBOX_SSM_MAX_ATTEMPTS", "three"), ("KITEBOX_SSM_MAX_ATTEMPTS", "2.5"), ("KITEBOX_SSM_TIMEOUT", "soon")],
        ids=["flag", "attempts-word", "attempts-float", "timeout-word"],
    )
    def test_malformed_values(self, name, value):
        """A malformed setting is a ConfigError naming it as a bad kitebox setting."""
        with pytest.raises(ConfigError, match="bad kitebox setting"):
            Settings.from_environ({name: value})


class TestForgedSettings:
    @pytest.mark.parametrize(
        "name",
        ["KITEBOX_BASE_PATH", "KITEBOX_SECRETS_MANAGER_PREFIX", "KITEBOX_AUDIT", "KITEBOX_AWS_REGION", "KITEBOX_ANYTHING"],
        ids=["base-path", "prefix", "audit", "region", "unknown"],
    )
    def test_setting_among_job_variables_is_refused(self, name):
        """A KITEBOX_* setting that the pipeline set as a job variable is refused, not obeyed (buildkite-contract.md: every job variable is author-settable)."""
        with pytest.raises(ConfigError, match="set by the pipeline") as caught:
            Settings.from_environ({name: "/x"}, frozenset({name, "FOO"}))
        assert name in str(caught.value)

    def test_first_forged_name_is_reported(self):
        """With several forged settings the error names the first in sorted order."""
        with pytest.raises(ConfigError, match="^KITEBOX_A is set"):
            Settings.from_environ({}, frozenset({"KITEBOX_Z", "KITEBOX_A"}))

    def test_kitebox_role_belongs_to_the_author(self):
        """KITEBOX_ROLE and KITEBOX_JOB_IMAGE are the KITEBOX_ variables a pipeline may set (role, image request)."""
        assert AUTHOR_VARIABLES == frozenset({"KITEBOX_ROLE", "KITEBOX_JOB_IMAGE"})
        assert Settings.from_environ({"KITEBOX_ROLE": "deploy"}, frozenset({"KITEBOX_ROLE", "AWS_REGION"})) == Settings()


class TestAwsEnvironment:
    def test_job_aws_variables_are_dropped(self):
        """AWS_* variables the job set do not reach kitebox's own AWS clients; the agent's own and others stay."""
        environ = {
            "AWS_CONFIG_FILE": "/job/evil-config",
            "AWS_PROFILE": "job-profile",
            "AWS_REGION": "eu-west-1",
            "FOO": "job-foo",
            "PATH": "/usr/bin",
        }
        job_vars = {"AWS_CONFIG_FILE": "/job/evil-config", "AWS_PROFILE": "job-profile", "FOO": "job-foo"}
        assert aws_environment(environ, job_vars) == {"AWS_REGION": "eu-west-1", "FOO": "job-foo", "PATH": "/usr/bin"}

    def test_kitebox_region_wins(self):
        """KITEBOX_AWS_REGION sets both AWS_REGION and AWS_DEFAULT_REGION over any other value."""
        environ = {"KITEBOX_AWS_REGION": "ap-southeast-2", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-west-2"}
        clean = aws_environment(environ, {})
        assert (clean["AWS_REGION"], clean["AWS_DEFAULT_REGION"]) == ("ap-southeast-2", "ap-southeast-2")

    def test_kitebox_region_restores_a_dropped_job_region(self):
        """A job that sets AWS_REGION for itself does not leave kitebox without a region when KITEBOX_AWS_REGION is set."""
        environ = {"KITEBOX_AWS_REGION": "eu-central-1", "AWS_REGION": "us-east-1"}
        assert aws_environment(environ, {"AWS_REGION": "us-east-1"})["AWS_REGION"] == "eu-central-1"
        assert "AWS_REGION" not in aws_environment({"AWS_REGION": "us-east-1"}, {"AWS_REGION": "us-east-1"})

    def test_input_is_not_changed(self):
        """aws_environment returns a new mapping and leaves the environment alone."""
        environ = {"AWS_PROFILE": "p", "KITEBOX_AWS_REGION": "eu-west-1"}
        aws_environment(environ, {"AWS_PROFILE": "p"})
        assert environ == {"AWS_PROFILE": "p", "KITEBOX_AWS_REGION": "eu-west-1"}
    def test_job_home_does_not_pick_aws_config(self):
        """A HOME the job set does not decide where kitebox's AWS clients read their config and credentials."""
        environ = {"HOME": "/var/lib/buildkite-agent/builds/x", "PATH": "/usr/bin"}
        clean = aws_environment(environ, {"HOME": "/var/lib/buildkite-agent/builds/x"})
        assert clean.get("HOME") != "/var/lib/buildkite-agent/builds/x"


class TestJobVariables:
    def test_json_preferred(self, tmp_path):
        """BUILDKITE_ENV_JSON_FILE is read in preference to BUILDKITE_ENV_FILE (buildkite-contract.md)."""
        (tmp_path / "env.json").write_text(json.dumps({"FROM": "json"}))
        (tmp_path / "env").write_text('FROM="text"\n')
        environ = {"BUILDKITE_ENV_JSON_FILE": str(tmp_path / "env.json"), "BUILDKITE_ENV_FILE": str(tmp_path / "env")}
        assert job_variables(environ) == {"FROM": "json"}

    def test_text_file(self, tmp_path):
        """Without a JSON file the Go-quoted text file is read."""
        (tmp_path / "env").write_text('A="1"\nB="x\\ny"\n')
        assert job_variables({"BUILDKITE_ENV_FILE": str(tmp_path / "env")}) == {"A": "1", "B": "x\ny"}

    @pytest.mark.parametrize("environ", [{}, {"BUILDKITE_ENV_FILE": "", "BUILDKITE_ENV_JSON_FILE": ""}], ids=["unset", "empty"])
    def test_no_file(self, environ):
        """Without an env file the job has no variables."""
        assert job_variables(environ) == {}

    @pytest.mark.parametrize("variable", ["BUILDKITE_ENV_JSON_FILE", "BUILDKITE_ENV_FILE"], ids=["json", "text"])
    def test_missing_file(self, tmp_path, variable):
        """A named env file that cannot be read is BadInputError, not a silent {}."""
        with pytest.raises(BadInputError, match="cannot read the job env file"):
            job_variables({variable: str(tmp_path / "missing")})

    def test_directory(self, tmp_path):
        """A directory in place of the env file is BadInputError."""
        with pytest.raises(BadInputError, match="cannot read the job env file"):
            job_variables({"BUILDKITE_ENV_FILE": str(tmp_path)})

    def test_missing_json_does_not_fall_back(self, tmp_path):
        """A named but missing JSON file is an error even when the text file exists."""
        (tmp_path / "env").write_text('A="1"\n')
        with pytest.raises(BadInputError):
            job_variables({"BUILDKITE_ENV_JSON_FILE": str(tmp_path / "nope.json"), "BUILDKITE_ENV_FILE": str(tmp_path / "env")})

    def test_malformed_json(self, tmp_path):
        """A JSON file that is not an object of strings is BadInputError."""
        (tmp_path / "env.json").write_text('{"A": 1}')
        with pytest.raises(BadInputError, match="not an object of strings"):
            job_variables({"BUILDKITE_ENV_JSON_FILE": str(tmp_path / "env.json")})


class TestSteeringVariables:
    def test_job_set_proxies_and_ca_bundles_are_dropped(self):
        """Proxy and CA-bundle variables the job set (any case) never reach kitebox's own AWS calls."""
        from kitebox.settings import aws_environment

        names = ["HTTPS_PROXY", "http_proxy", "NO_PROXY", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "HOME"]
        environ = {name: "job-value" for name in names} | {"LANG": "C.UTF-8"}
        clean = aws_environment(environ, {name: "job-value" for name in names})
        assert clean == {"LANG": "C.UTF-8"}

    def test_agent_set_proxy_is_kept(self):
        """A proxy the operator set for the agent (not a job variable) stays."""
        from kitebox.settings import aws_environment

        assert aws_environment({"HTTPS_PROXY": "http://proxy.corp:3128"}, {}) == {"HTTPS_PROXY": "http://proxy.corp:3128"}
