"""`kitebox agent-token`: the token from SSM (path, ARN, Secrets Manager reference) into the agent
config, atomically, 0600, never shown; a failure at any step leaves the previous config as it was.

Contract (buildkite-contract.md, Elastic CI Stack): the stack reads
BuildkiteAgentTokenParameterStorePath with `ssm get-parameter --with-decryption`; a Secrets
Manager secret is reached through `/aws/reference/secretsmanager/<secret-id>` (seed 003).
"""

from __future__ import annotations

import os
import stat

import pytest

from kitebox.core.secret import Secret
from kitebox.ops.agent_token import with_token

TOKEN = "bkua_0123456789abcdefTOKENVALUE"
CONFIG = 'name="%hostname-%spawn"\ntags="queue=default"\n# token="commented-out"\ntoken="old-token-1234"\nbuild-path="/var/lib/buildkite-agent/builds"\n'


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "buildkite-agent.cfg"
    path.write_text(CONFIG)
    path.chmod(0o644)
    return path


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestWithToken:
    """The token line is replaced in place (duplicates dropped), or appended; nothing else moves."""

    @pytest.mark.parametrize(
        ("before", "after"),
        [
            ("", 'token="T0KEN-123"\n'),
            ("a=1", 'a=1\ntoken="T0KEN-123"\n'),
            ('a=1\ntoken="x"\nb=2\n', 'a=1\ntoken="T0KEN-123"\nb=2\n'),
            ('  token = x\ntoken="y"\n', 'token="T0KEN-123"\n'),
            ('# token="x"\n', '# token="x"\ntoken="T0KEN-123"\n'),
            ('tokens-path=/x\n', 'tokens-path=/x\ntoken="T0KEN-123"\n'),
        ],
        ids=["empty", "no-newline", "replace", "duplicates", "comment-kept", "other-key"],
    )
    def test_lines(self, before, after):
        assert with_token(before, Secret("T0KEN-123")) == after


class TestAgentToken:
    """Happy paths against moto: plain path, SecureString, own-account ARN, Secrets Manager path."""

    def test_securestring_path(self, aws, cli, config):
        """The old token line is replaced, the rest kept, mode 0600, the token in no output."""
        aws.client("ssm").put_parameter(Name="/buildkite/agent-token", Value=TOKEN + "\n", Type="SecureString")
        run = cli("agent-token", "--parameter", "/buildkite/agent-token", "--config", str(config))
        assert run.code == 0, run.err
        assert TOKEN not in run.text
        text = config.read_text()
        assert f'token="{TOKEN}"' in text and "old-token-1234" not in text
        assert text.replace(f'token="{TOKEN}"', 'token="old-token-1234"') == CONFIG
        assert mode(config) == 0o600
        assert [p.name for p in config.parent.iterdir()] == [config.name]  # no temp file left

    def test_parameter_arn(self, aws, cli, config):
        """A parameter ARN is read in the ARN's region (moto: own account; cross-account is RAM's)."""
        ssm = aws.client("ssm", region_name="eu-west-1")
        ssm.put_parameter(Name="/shared/agent-token", Value=TOKEN, Type="SecureString")
        arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/shared/agent-token"
        run = cli("agent-token", "--parameter", arn, "--config", str(config))  # AWS_REGION is us-east-1
        assert run.code == 0, run.err
        assert f'token="{TOKEN}"' in config.read_text()

    def test_secrets_manager_reference(self, aws, cli, config):
        """moto resolves /aws/reference/secretsmanager/<id> through GetParameter, as SSM does."""
        aws.client("secretsmanager").create_secret(Name="buildkite/agent-token", SecretString=TOKEN)
        run = cli("agent-token", "--parameter", "/aws/reference/secretsmanager/buildkite/agent-token",
                  "--config", str(config))
        assert run.code == 0, run.err
        assert f'token="{TOKEN}"' in config.read_text()

    def test_second_run_changes_nothing(self, aws, cli, config):
        """Same token again: the file (inode, mtime) is not rewritten."""
        aws.client("ssm").put_parameter(Name="/t", Value=TOKEN, Type="SecureString")
        assert cli("agent-token", "--parameter", "/t", "--config", str(config)).code == 0
        before = config.stat()
        run = cli("agent-token", "--parameter", "/t", "--config", str(config))
        assert run.code == 0 and "already in" in run.out
        after = config.stat()
        assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)

    def test_missing_config_is_created(self, aws, cli, tmp_path):
        aws.client("ssm").put_parameter(Name="/t", Value=TOKEN, Type="SecureString")
        path = tmp_path / "new.cfg"
        assert cli("agent-token", "--parameter", "/t", "--config", str(path)).code == 0
        assert path.read_text() == f'token="{TOKEN}"\n' and mode(path) == 0o600

    @pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file another owner")
    def test_keeps_the_owner(self, aws, cli, config):
        """The agent reads its config as buildkite-agent: the rewritten file keeps that owner."""
        os.chown(config, 2000, 2000)
        aws.client("ssm").put_parameter(Name="/t", Value=TOKEN, Type="SecureString")
        assert cli("agent-token", "--parameter", "/t", "--config", str(config)).code == 0
        assert (config.stat().st_uid, config.stat().st_gid) == (2000, 2000)


class TestAgentTokenFailures:
    """One line each; the previous config byte for byte intact; the token in no output."""

    def assert_intact(self, config):
        assert config.read_text() == CONFIG and mode(config) == 0o644
        assert [p.name for p in config.parent.iterdir()] == [config.name]

    def test_missing_parameter(self, aws, cli, config):
        run = cli("agent-token", "--parameter", "/nope", "--config", str(config))
        assert run.code == 95
        assert "/nope" in run.err and "not found" in run.err and "region us-east-1" in run.err
        assert len(run.err.strip().splitlines()) == 1
        self.assert_intact(config)

    def test_wrong_region(self, aws, cli, config):
        """The parameter exists in us-east-1; asked in eu-west-1 the message names the region."""
        aws.client("ssm").put_parameter(Name="/t", Value=TOKEN, Type="SecureString")
        run = cli("agent-token", "--parameter", "/t", "--config", str(config), "--region", "eu-west-1")
        assert run.code == 95 and "region eu-west-1" in run.err and "region" in run.err.split("—")[1]
        self.assert_intact(config)

    def test_arn_region_contradicts_region_option(self, aws, cli, config):
        arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/t"
        run = cli("agent-token", "--parameter", arn, "--config", str(config), "--region", "us-east-1")
        assert run.code == 95 and "eu-west-1" in run.err and "--region" in run.err
        self.assert_intact(config)

    def test_not_a_region(self, aws, cli, config):
        run = cli("agent-token", "--parameter", "/t", "--config", str(config), "--region", "us-east-l")
        assert run.code == 95 and "not an AWS region" in run.err
        self.assert_intact(config)

    @pytest.mark.parametrize(
        ("code", "message", "expected"),
        [
            ("AccessDeniedException", "User: arn:aws:sts::123456789012:assumed-role/x/i is not authorized "
             "to perform: kms:Decrypt on resource: arn:aws:kms:us-east-1:123456789012:key/k", "KMS refused"),
            ("KMSAccessDeniedException", "denied", "KMS refused"),
            ("InvalidKeyId", "key is disabled", "KMS refused"),
            ("AccessDeniedException", "not authorized to perform: ssm:GetParameter", "access denied"),
        ],
        ids=["kms-via-access-denied", "kms-code", "invalid-key", "ssm-denied"],
    )
    def test_denials(self, deny, cli, config, code, message, expected):
        deny(code, message)
        run = cli("agent-token", "--parameter", "/t", "--config", str(config))
        assert run.code == 95 and expected in run.err and code in run.err
        assert len(run.err.strip().splitlines()) == 1
        self.assert_intact(config)

    @pytest.mark.parametrize("value", ["has space inside", 'quote"d-token', "back\\slash-token", "short"],
                             ids=["space", "quote", "backslash", "too-short"])
    def test_value_that_is_not_a_token(self, aws, cli, config, value):
        """A value the agent's config could not hold is refused, and not echoed."""
        aws.client("ssm").put_parameter(Name="/t", Value=value, Type="SecureString")
        run = cli("agent-token", "--parameter", "/t", "--config", str(config))
        assert run.code == 95 and "does not hold an agent token" in run.err and value not in run.text
        self.assert_intact(config)

    def test_config_directory_missing(self, aws, cli, tmp_path):
        run = cli("agent-token", "--parameter", "/t", "--config", str(tmp_path / "no" / "agent.cfg"))
        assert run.code == 95 and "does not exist" in run.err

    def test_unwritable_directory_leaves_config(self, aws, cli, config, monkeypatch):
        """The rename never happens when the temp file cannot be made; the old file stays."""
        aws.client("ssm").put_parameter(Name="/t", Value=TOKEN, Type="SecureString")

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("kitebox.ops.common.tempfile.mkstemp", refuse)
        run = cli("agent-token", "--parameter", "/t", "--config", str(config))
        assert run.code == 95 and "cannot write" in run.err and TOKEN not in run.text
        self.assert_intact(config)

    def test_failed_write_removes_temp_file(self, aws, cli, config, monkeypatch):
        aws.client("ssm").put_parameter(Name="/t", Value=TOKEN, Type="SecureString")

        def fail(*args):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("kitebox.ops.common.os.replace", fail)
        run = cli("agent-token", "--parameter", "/t", "--config", str(config))
        assert run.code == 95 and "No space left" in run.err and "previous file is unchanged" in run.err
        self.assert_intact(config)

    @pytest.mark.parametrize("parameter", ["not a path", "/a//b", "/aws/reference/secretsmanager/"],
                             ids=["spaces", "double-slash", "no-secret-id"])
    def test_bad_parameter_names(self, aws, cli, config, parameter):
        run = cli("agent-token", "--parameter", parameter, "--config", str(config))
        assert run.code == 95
        self.assert_intact(config)
