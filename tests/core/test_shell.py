"""Shell text for hooks to eval (src/kitebox/core/shell.py)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kitebox.core.shell import append_redacted, exports, unsets

BASH = shutil.which("bash") or "/bin/bash"
PRINT_V = 'eval "$(cat)"; printf %s "$V"'


def bash_value(value: str) -> bytes:
    """What bash holds in $V after eval-ing exports({"V": value})."""
    result = subprocess.run(
        [BASH, "-c", PRINT_V],
        input=exports({"V": value}).encode("utf-8", "surrogateescape"),
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        timeout=10,
        check=True,
    )
    return result.stdout


class TestExports:
    def test_format(self):
        """Each variable becomes one `export NAME=<quoted>` line, in the mapping's order."""
        assert exports({"B": "plain", "A": "it's"}) == "export B=plain\nexport A='it'\"'\"'s'\n"

    def test_empty(self):
        """No variables give no text."""
        assert exports({}) == ""

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "plain",
            "it's",
            "''",
            '"double"',
            "$(id)",
            "`id`",
            "${HOME}",
            "$HOME",
            "a\nb\n",
            "\n\n",
            "back\\slash",
            "-n",
            "!event",
            "*",
            "~",
            "a;b&c|d>e<f",
            "\t\r\x01\x1b[31m\x7f",
            "é☃😀\u2028",
            "\udcff",
        ],
        ids=["empty", "plain", "single-quote", "two-single-quotes", "double-quotes", "cmd-subst", "backticks", "brace-var", "var", "newlines", "only-newlines", "backslash", "dash-n", "bang", "glob", "tilde", "metachars", "controls", "unicode", "invalid-utf8-byte"],
    )
    def test_bash_gets_the_exact_value(self, value):
        """bash eval of the exports sets the variable to exactly the value, running nothing (shell.py docstring)."""
        assert bash_value(value) == value.encode("utf-8", "surrogateescape")

    @given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=200))
    @settings(max_examples=50, deadline=None)
    def test_bash_round_trip(self, value):
        """For any text without NUL, bash eval of the exports sets exactly that value."""
        assert bash_value(value) == value.encode("utf-8")


class TestUnsets:
    def test_format(self):
        """Each name becomes one `unset NAME` line."""
        assert unsets(["A", "B"]) == "unset A\nunset B\n"

    def test_empty(self):
        """No names give no text."""
        assert unsets([]) == ""


class TestAppendRedacted:
    @pytest.mark.parametrize(
        ("current", "names", "merged"),
        [
            ("", ["A"], "A"),
            ("*_TOKEN,*_SECRET", ["DB_PASS"], "*_TOKEN,*_SECRET,DB_PASS"),
            ("*_TOKEN", ["*_TOKEN", "X"], "*_TOKEN,X"),
            (" *_TOKEN , ,*_SECRET ", ["X"], "*_TOKEN,*_SECRET,X"),
            ("A", [], "A"),
            ("", [], ""),
        ],
        ids=["empty", "append", "no-duplicate", "whitespace-and-blanks", "nothing-to-add", "all-empty"],
    )
    def test_merge(self, current, names, merged):
        """BUILDKITE_REDACTED_VARS gains each name once, comma-separated, keeping existing patterns (buildkite-contract.md, redaction)."""
        assert append_redacted(current, names) == merged
    def test_duplicate_new_names_are_added_once(self):
        """A name repeated in `names` is added once, as the docstring promises."""
        assert append_redacted("A", ["X", "X"]) == "A,X"
