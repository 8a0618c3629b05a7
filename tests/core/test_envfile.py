"""The agent's job env files (src/kitebox/core/envfile.py)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kitebox.core.envfile import parse_env_json, parse_env_text, unquote_go
from kitebox.errors import BadInputError

SECRET = "s3cr3t-VALUE-envfile"

_GO_SIMPLE = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quote_body(text: str) -> str:
    """Go's strconv.Quote without the outer quotes; surrogate-escaped chars stand for raw (invalid UTF-8) bytes."""
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not valid UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in _GO_SIMPLE:
            out.append(_GO_SIMPLE[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


# Canonical strings only: arbitrary text, or arbitrary bytes decoded as the agent's file is read.
go_values = st.one_of(st.text(), st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")))


class TestUnquote:
    @pytest.mark.parametrize(
        ("body", "value"),
        [
            ("plain", "plain"),
            ("", ""),
            ("a\\nb", "a\nb"),
            ("\\a\\b\\f\\n\\r\\t\\v", "\a\b\f\n\r\t\v"),
            ('say \\"hi\\"', 'say "hi"'),
            ("back\\\\slash", "back\\slash"),
            ("\\'", "'"),
            ("é☃😀", "é☃😀"),
            ("\\u00e9\\u2603", "é☃"),
            ("\\U0001f600", "😀"),
            ("\\x1b[31m", "\x1b[31m"),
            ("\\x00", "\x00"),
            ("\\xc3\\xa9", "é"),
            ("\\xff", "\udcff"),
            ("\\xE2\\x98\\x83", "☃"),
            ("$(id) `id` ${HOME}", "$(id) `id` ${HOME}"),
        ],
        ids=["plain", "empty", "newline", "all-simple", "quotes", "backslash", "single-quote", "unicode-raw", "u-escape", "U-escape", "x-escape", "x-nul", "x-utf8-pair", "x-invalid-byte", "x-upper-hex", "shell-metachars"],
    )
    def test_go_escapes(self, body, value):
        """Go %q escapes (\\a..\\v, \\\\, \\", \\xHH bytes, \\uHHHH, \\UHHHHHHHH) are undone (buildkite-contract.md, BUILDKITE_ENV_FILE)."""
        assert unquote_go(body) == value

    @pytest.mark.parametrize(
        "body",
        ["\\q", "\\", "\\xZZ", "\\x1", "\\u12", "\\u12G4", "\\U0001f60", "\\0"],
        ids=["unknown", "trailing-backslash", "bad-hex", "short-x", "short-u", "bad-u", "short-U", "octal"],
    )
    def test_bad_escapes_are_refused(self, body):
        """A malformed escape is refused with BadInputError."""
        with pytest.raises(BadInputError, match="env file"):
            unquote_go(body)
    def test_out_of_range_code_point_is_refused(self):
        """A \\U escape beyond U+10FFFF is refused with BadInputError, not a crash."""
        with pytest.raises(BadInputError):
            unquote_go("\\U00110000")
    def test_raw_invalid_byte_survives(self):
        """A raw byte that is not UTF-8 (read with surrogateescape) comes back unchanged."""
        assert unquote_go("a\udcffb") == "a\udcffb"

    @given(go_values)
    @example("\x00\x7f\x85\u2028\u2029\ufeff\U000e0001")
    @example("\udcc3\udca9")  # two raw bytes that together are UTF-8 read back as the character 'é'
    def test_round_trip(self, value):
        """unquote_go undoes a Go strconv.Quote equivalent for any text or byte string."""
        canonical = value.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
        assert unquote_go(go_quote_body(value)) == canonical


class TestParseText:
    def test_lines(self):
        """Each NAME="value" line becomes one variable; blank lines are skipped."""
        text = 'A="1"\n\nB="two words"\r\nC=""\n   \nD="x\\ny\\u00e9\\xc3\\xa9"\n'
        assert parse_env_text(text) == {"A": "1", "B": "two words", "C": "", "D": "x\nyéé"}

    def test_later_line_wins(self):
        """A name given twice takes its later value."""
        assert parse_env_text('A="1"\nA="2"') == {"A": "2"}

    def test_empty_file(self):
        """An empty file holds no variables."""
        assert parse_env_text("") == {}

    @pytest.mark.parametrize(
        "line",
        [
            f"A={SECRET}",
            f'A="{SECRET}',
            f'1A="{SECRET}"',
            f'export A="{SECRET}"',
            f'A="{SECRET}"trailing',
            f'A="{SECRET}"x"',
            f"A='{SECRET}'",
            f' A="{SECRET}"',
            f'A = "{SECRET}"',
            f'A="{SECRET}\\"',
            f'A-B="{SECRET}"',
        ],
        ids=["unquoted", "unterminated", "digit-name", "export", "trailing", "inner-quote", "single-quoted", "leading-space", "spaces-around-equals", "escaped-close", "hyphen-name"],
    )
    def test_malformed_line_is_refused_without_content(self, line):
        """A malformed line is refused by number, never echoed, since it may hold a secret."""
        with pytest.raises(BadInputError) as caught:
            parse_env_text(f'OK="1"\n{line}\n')
        assert "line 2" in str(caught.value)
        assert SECRET not in str(caught.value)

    @given(go_values)
    def test_quoted_value_round_trips(self, value):
        """A value written as NAME=<Go %q> on one line reads back unchanged."""
        canonical = value.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
        assert parse_env_text(f'V="{go_quote_body(value)}"\n') == {"V": canonical}


class TestParseJson:
    def test_object_of_strings(self):
        """BUILDKITE_ENV_JSON_FILE holds an object of string → string (buildkite-contract.md)."""
        assert parse_env_json('{"A": "1", "B": "x\\ny", "C": ""}') == {"A": "1", "B": "x\ny", "C": ""}

    def test_empty_object(self):
        """An empty object holds no variables."""
        assert parse_env_json("{}") == {}

    @pytest.mark.parametrize(
        "text",
        ['{"A": 1}', '{"A": null}', '{"A": ["x"]}', '{"A": {"B": "c"}}', '{"A": true}', '["A"]', '"A"', "null", "1"],
        ids=["int", "null", "list", "nested", "bool", "array", "string", "top-null", "number"],
    )
    def test_non_string_json_is_refused(self, text):
        """Anything but an object of strings is refused."""
        with pytest.raises(BadInputError, match="not an object of strings"):
            parse_env_json(text)

    @pytest.mark.parametrize(
        "text",
        [f'{{"A": "{SECRET}"', f'{{"A": {SECRET}}}', "", f'\n\n{{"A": "{SECRET}",}}'],
        ids=["truncated", "bare-word", "empty", "trailing-comma"],
    )
    def test_invalid_json_is_refused_without_content(self, text):
        """Text that is not JSON is refused with a line number, never its content."""
        with pytest.raises(BadInputError, match="not JSON") as caught:
            parse_env_json(text)
        assert SECRET not in str(caught.value)
