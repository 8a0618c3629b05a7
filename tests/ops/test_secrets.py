"""`kitebox secrets`: env/<name> values from stdin or a file only, names by the core's rules,
listings without values, deletion only with --force."""

from __future__ import annotations

import io
import os
import pty

import pytest

from kitebox.errors import BadInputError
from kitebox.ops.secrets import read_value
from tests.ops.conftest import BASE

VALUE = "s3cr3t-value-\"quoted\" $HOME ✨"


def value_of(aws, name: str) -> str:
    return aws.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]


class TestSet:
    """set: SecureString at <node>/env/<name>, from stdin (one trailing newline dropped) or a file."""

    def test_from_stdin(self, aws, cli):
        run = cli("secrets", "set", "fav-lesson", "--pipeline", "hermione", stdin=(VALUE + "\n").encode())
        assert run.code == 0, run.err
        assert "FAV_LESSON" in run.out and VALUE not in run.text
        assert value_of(aws, f"{BASE}/hermione/env/fav-lesson") == VALUE
        parameter = aws.client("ssm").get_parameter(Name=f"{BASE}/hermione/env/fav-lesson")["Parameter"]
        assert parameter["Type"] == "SecureString"

    def test_from_file_keep_newline(self, aws, cli, tmp_path):
        source = tmp_path / "value"
        source.write_text("line one\nline two\n")
        run = cli("secrets", "set", "CERT", "--repo", "https://github.com/a/b.git", "--from-file", str(source),
                  "--keep-newline")
        assert run.code == 0, run.err
        assert value_of(aws, f"{BASE}/github.com_a_b.git/env/CERT") == "line one\nline two\n"

    def test_global_and_base_path(self, aws, cli, monkeypatch):
        monkeypatch.setenv("KITEBOX_BASE_PATH", "/ci/infra")
        assert cli("secrets", "set", "X", "--global", stdin=b"v").code == 0
        assert value_of(aws, "/ci/infra/global/env/X") == "v"
        assert cli("secrets", "set", "Y", "--global", "--base-path", "/ci/other", stdin=b"v").code == 0
        assert value_of(aws, "/ci/other/global/env/Y") == "v"

    def test_refuses_overwrite_without_force(self, aws, cli):
        assert cli("secrets", "set", "X", "--global", stdin=b"one").code == 0
        run = cli("secrets", "set", "X", "--global", stdin=b"two")
        assert run.code == 95 and "--force" in run.err
        assert value_of(aws, f"{BASE}/global/env/X") == "one"
        assert cli("secrets", "set", "X", "--global", "--force", stdin=b"two").code == 0
        assert value_of(aws, f"{BASE}/global/env/X") == "two"

    def test_two_names_for_one_variable_are_ambiguous(self, aws, cli):
        assert cli("secrets", "set", "fav-lesson", "--global", stdin=b"a").code == 0
        run = cli("secrets", "set", "FAV_LESSON", "--global", "--force", stdin=b"b")
        assert run.code == 95 and "ambiguous" in run.err and "fav-lesson" in run.err

    @pytest.mark.parametrize(
        ("name", "message"),
        [("a.b", "not a shell variable"), ("a/b", "nested"), ("1x", "not a shell variable"),
         ("PATH", "reserved"), ("BUILDKITE_AGENT_TOKEN", "reserved"), ("ld-preload", "reserved")],
        ids=["dot", "slash", "digit", "path", "buildkite", "ld-preload"],
    )
    def test_names_jobs_would_refuse(self, aws, cli, name, message):
        run = cli("secrets", "set", name, "--global", stdin=b"value")
        assert run.code == 95 and message in run.err
        assert aws.client("ssm").describe_parameters()["Parameters"] == []

    def test_value_on_argv_is_impossible(self, aws, cli):
        """There is no positional for a value: a second word is an argparse error, nothing stored."""
        run = cli("secrets", "set", "X", "the-value-on-argv", "--global", stdin=b"")
        assert run.code == 2 and "unrecognized arguments" in run.err
        assert aws.client("ssm").describe_parameters()["Parameters"] == []

    @pytest.mark.parametrize(
        ("data", "message"),
        [(b"", "empty"), (b"\n", "empty"), (b"a\0b", "NUL"), (b"x" * 8193, "8192"), (b"\xff\xfe", "UTF-8")],
        ids=["empty", "only-newline", "nul", "too-long", "not-utf8"],
    )
    def test_bad_values(self, aws, cli, data, message):
        run = cli("secrets", "set", "X", "--global", stdin=data)
        assert run.code == 95 and message in run.err
        assert aws.client("ssm").describe_parameters()["Parameters"] == []

    def test_missing_file(self, aws, cli, tmp_path):
        run = cli("secrets", "set", "X", "--global", "--from-file", str(tmp_path / "nope"))
        assert run.code == 95 and "cannot read --from-file" in run.err

    def test_reference_outside_prefix(self, aws, cli):
        """A reference jobs would refuse to resolve is refused here already."""
        run = cli("secrets", "set", "DB", "--global", stdin=b"{{resolve:secretsmanager:prod/db}}")
        assert run.code == 95 and "outside KITEBOX_SECRETS_MANAGER_PREFIX" in run.err
        assert cli("secrets", "set", "DB", "--global", stdin=b"{{resolve:secretsmanager:buildkite/db}}").code == 0


class TestReadValue:
    """A terminal on stdin is refused: what is typed there is echoed and kept in the scrollback."""

    def test_tty_refused(self):
        leader, follower = pty.openpty()
        try:
            with open(follower, "rb", buffering=0, closefd=False) as raw:
                tty = io.TextIOWrapper(io.BufferedReader(raw))
                with pytest.raises(BadInputError, match="terminal"):
                    read_value(None, False, stdin=tty)
        finally:
            os.close(leader)
            os.close(follower)

    def test_crlf_dropped_once(self):
        class Pipe(io.TextIOWrapper):
            def isatty(self):
                return False

        assert read_value(None, False, stdin=Pipe(io.BytesIO(b"v\r\n"))).reveal() == "v"
        assert read_value(None, False, stdin=Pipe(io.BytesIO(b"v\n\n"))).reveal() == "v\n"


class TestLsAndRm:
    """ls lists names, variables, types and dates, never values; rm needs --force."""

    def test_ls(self, aws, cli):
        ssm = aws.client("ssm")
        cli("secrets", "set", "fav-lesson", "--pipeline", "app", stdin=b"value-one")
        ssm.put_parameter(Name=f"{BASE}/app/env/a.b", Value="value-two", Type="String")
        ssm.put_parameter(Name=f"{BASE}/app/allowed_teams", Value="sre", Type="String")
        run = cli("secrets", "ls", "--pipeline", "app")
        assert run.code == 0, run.err
        assert "FAV_LESSON" in run.out and f"{BASE}/app/env/fav-lesson" in run.out and "SecureString" in run.out
        assert "refused by jobs" in run.out and "allowed_teams" not in run.out
        assert "value-one" not in run.text and "value-two" not in run.text

    def test_ls_empty(self, aws, cli):
        run = cli("secrets", "ls", "--global")
        assert run.code == 0 and "no secrets" in run.out

    def test_rm_needs_force(self, aws, cli):
        cli("secrets", "set", "A", "--global", stdin=b"a")
        cli("secrets", "set", "B", "--global", stdin=b"b")
        run = cli("secrets", "rm", "A", "B", "--global")
        assert run.code == 95 and "--force" in run.err
        assert len(aws.client("ssm").describe_parameters()["Parameters"]) == 2
        run = cli("secrets", "rm", "A", "B", "--global", "--force")
        assert run.code == 0 and run.out.count("deleted") == 2
        assert aws.client("ssm").describe_parameters()["Parameters"] == []

    def test_rm_missing_deletes_nothing(self, aws, cli):
        cli("secrets", "set", "A", "--global", stdin=b"a")
        run = cli("secrets", "rm", "A", "NOPE", "--global", "--force")
        assert run.code == 95 and "NOPE" in run.err and "nothing deleted" in run.err
        assert len(aws.client("ssm").describe_parameters()["Parameters"]) == 1

    def test_denied(self, deny, cli):
        deny("AccessDeniedException", "not authorized to perform: ssm:DescribeParameters")
        run = cli("secrets", "ls", "--global")
        assert run.code == 95 and "access denied" in run.err
