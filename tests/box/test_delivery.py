"""Secret delivery: the records kitebox writes, and the entry step (files/entry.sh) reading them.

The entry step is plain bash, so these tests run it on the host with its stdin fed exactly as
the container's would be; the Docker tests (test_job.py) run it in a container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kitebox.box.delivery import records
from kitebox.box.job import FILES
from kitebox.core.secret import Secret

ENTRY = FILES / "entry.sh"
TRICKY = {
    "QUOTES": "it's \"quoted\" \\ back\\slash",
    "NEWLINES": "line1\nline2\r\n\n",
    "UNICODE": "ünï©ødé ✨ 日本",
    "SHELL": "$HOME `id` $(id) ${PATH} ; | & > < * ?",
    "SPACES": "  leading and trailing  ",
    "EQUALS": "a=b=c",
    "EMPTY": "",
    "BYTES": "raw \udcff\udcfe byte",  # surrogate-escaped invalid UTF-8, as env files allow
}
# Prints the named variables as hex of their raw bytes, whether stdin is /dev/null, and the
# hooks dir listing: what the inner bootstrap would see.
PROBE = r"""
import json, os, sys
names = sys.argv[1:]
hooks = os.environ.get("BUILDKITE_HOOKS_PATH", "")
print(json.dumps({
    "env": {n: os.environb[n.encode()].hex() for n in names if n.encode() in os.environb},
    "stdin": os.readlink("/proc/self/fd/0"),
    "hooks": {f: (os.readlink(os.path.join(hooks, f)) if os.path.islink(os.path.join(hooks, f))
                  else open(os.path.join(hooks, f)).read()) for f in sorted(os.listdir(hooks))} if hooks else {},
}))
"""


def run_entry(stdin: bytes, tmp_path: Path, *names: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path), **(env or {})}
    return subprocess.run(
        ["bash", str(ENTRY), sys.executable, "-c", PROBE, *names],
        input=stdin, capture_output=True, env=environ, timeout=30,
    )


class TestRecords:
    """NUL-terminated NAME=value records, then an empty record."""

    def test_format(self):
        """Each record ends in NUL; the terminator is one more NUL."""
        assert records({"A": Secret("1"), "B": Secret("x\ny")}) == b"A=1\x00B=x\ny\x00\x00"
        assert records({}) == b"\x00"

    @pytest.mark.parametrize("name, value", [("A", "nul\x00inside"), ("1A", "x"), ("A-B", "x"), ("", "x")])
    def test_refuses_what_cannot_be_framed(self, name, value):
        """A NUL in a value or a non-variable name cannot be a record."""
        with pytest.raises(ValueError):
            records({name: Secret(value)})


class TestEntryStep:
    """entry.sh exports the records byte-exact, then execs the bootstrap with stdin from /dev/null."""

    def test_values_arrive_byte_exact(self, tmp_path):
        """Quotes, newlines, unicode, `$`, backticks, spaces, `=`, empty and raw bytes survive."""
        secrets = {name: Secret(value) for name, value in TRICKY.items()}
        done = run_entry(records(secrets), tmp_path, *TRICKY)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)["env"]
        for name, value in TRICKY.items():
            assert bytes.fromhex(seen[name]) == value.encode("utf-8", "surrogateescape"), name

    def test_bootstrap_stdin_is_dev_null(self, tmp_path):
        """The inner bootstrap never reads kitebox's pipe: stdin is /dev/null."""
        done = run_entry(records({"A": Secret("1")}) + b"trailing bytes never read", tmp_path, "A")
        assert json.loads(done.stdout)["stdin"] == "/dev/null"

    @pytest.mark.parametrize(
        "stdin", [b"", b"A=1\x00", b"A=1"], ids=["nothing", "no-terminator", "cut-mid-record"]
    )
    def test_eof_before_terminator_fails(self, tmp_path, stdin):
        """If kitebox died mid-delivery the job does not run with half its secrets: exit 95."""
        done = run_entry(stdin, tmp_path, "A")
        assert done.returncode == 95 and done.stdout == b""
        assert b"stdin ended" in done.stderr

    @pytest.mark.parametrize(
        "record", [b"NOEQUALSs3cr3t\x00\x00", b"1BAD=s3cr3t\x00\x00", b"A B=s3cr3t\x00\x00"], ids=repr
    )
    def test_malformed_record_fails(self, tmp_path, record):
        """A record that is not NAME=value stops the entry step without echoing it."""
        done = run_entry(record, tmp_path)
        assert done.returncode == 95
        assert done.stderr == b"kitebox entry: a record on stdin is not NAME=value\n"

    def test_hooks_dir_chains_operator_hooks(self, tmp_path):
        """kitebox's shim runs environment/pre-checkout/post-checkout; other operator hooks are linked."""
        operator = tmp_path / "operator-hooks"
        operator.mkdir()
        (operator / "environment").write_text("echo operator\n")
        (operator / "pre-command").write_text("echo operator\n")
        done = run_entry(records({}), tmp_path, env={"KITEBOX_OPERATOR_HOOKS_PATH": str(operator)})
        hooks = json.loads(done.stdout)["hooks"]
        assert hooks["pre-command"] == str(operator / "pre-command")
        for name in ("environment", "pre-checkout", "post-checkout"):
            assert f"/hook.sh {name}" in hooks[name]
        assert set(hooks) == {"environment", "pre-checkout", "post-checkout", "pre-command"}
