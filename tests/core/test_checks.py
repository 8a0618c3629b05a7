"""Check outcomes and list nodes (src/kitebox/core/checks.py)."""

from __future__ import annotations

import pytest

from kitebox.core.checks import Check, list_entries


class TestCheck:
    def test_line_names_rule_and_node(self):
        """A refusal line carries the message, the rule and the node it lives in."""
        check = Check("/vendors/buildkite/global/allowed_teams", "allowed_teams", False, "no team matched")
        line = check.line()
        assert line == "kitebox refused this job: no team matched [rule allowed_teams at /vendors/buildkite/global/allowed_teams]"


class TestListEntries:
    @pytest.mark.parametrize(
        ("value", "parameter_type", "entries"),
        [
            ("a\nb\nc", "String", ("a", "b", "c")),
            ("a\n\n  \nb\n", "String", ("a", "b")),
            ("  a  \r\n\tb\t", "String", ("a", "b")),
            ("a,b", "String", ("a,b",)),
            ("a,b, c", "StringList", ("a", "b", "c")),
            ("a,,b,", "StringList", ("a", "b")),
            ("a\nb,c", "StringList", ("a", "b", "c")),
            ("", "String", ()),
            ("\n \n", "StringList", ()),
            ("x", "SecureString", ("x",)),
        ],
        ids=["lines", "blank-lines", "whitespace-crlf", "comma-in-string", "stringlist", "stringlist-empty-items", "stringlist-lines-too", "empty", "blank-stringlist", "securestring"],
    )
    def test_entries(self, value, parameter_type, entries):
        """List nodes hold one entry per line (the seed) or comma-separated for StringList; blanks are ignored."""
        assert list_entries(value, parameter_type) == entries
