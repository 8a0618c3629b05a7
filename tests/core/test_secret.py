"""The Secret wrapper (src/kitebox/core/secret.py)."""

from __future__ import annotations

import logging
import pickle

import pytest

from kitebox.core.secret import Secret

VALUE = "s3cr3t-VALUE-secret-test"
MASK = "Secret('***')"


class TestMasking:
    @pytest.mark.parametrize(
        "render",
        [
            repr,
            str,
            lambda s: f"{s}",
            lambda s: f"{s!r}",
            lambda s: f"{s!s}",
            lambda s: f"{s:>40}",
            lambda s: "{}".format(s),
            lambda s: "%s" % s,
            lambda s: "%r" % s,
            lambda s: format(s, ""),
            lambda s: repr([s, {"k": s}]),
        ],
        ids=["repr", "str", "fstring", "fstring-r", "fstring-s", "fstring-spec", "format", "percent-s", "percent-r", "format-builtin", "in-container"],
    )
    def test_every_rendering_is_masked(self, render):
        """Every ordinary rendering of a Secret shows the mask, never the value."""
        text = render(Secret(VALUE))
        assert VALUE not in text
        assert MASK in text

    def test_logging_is_masked(self, caplog):
        """A Secret passed to logging is masked in the record's message."""
        with caplog.at_level(logging.INFO):
            logging.getLogger("kitebox.test").info("value=%s", Secret(VALUE))
        assert VALUE not in caplog.text
        assert MASK in caplog.text

    def test_no_instance_dict(self):
        """A Secret has no __dict__, so vars() cannot dump it."""
        with pytest.raises(TypeError):
            vars(Secret(VALUE))


class TestPickle:
    @pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1), ids=lambda p: f"protocol-{p}")
    def test_pickling_is_refused(self, protocol):
        """Pickling a Secret raises TypeError, so the value cannot reach whatever stores the pickle."""
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(Secret(VALUE), protocol=protocol)


class TestValue:
    def test_reveal(self):
        """reveal() gives back the exact value."""
        assert Secret(VALUE).reveal() == VALUE

    def test_len(self):
        """len() is the value's length."""
        assert len(Secret(VALUE)) == len(VALUE)

    def test_equality_and_hash(self):
        """Secrets compare and hash by value, and never equal a plain string."""
        assert Secret(VALUE) == Secret(VALUE)
        assert hash(Secret(VALUE)) == hash(Secret(VALUE))
        assert Secret(VALUE) != Secret("other")
        assert Secret(VALUE) != VALUE
