"""Secrets Manager references in env parameters (src/kitebox/core/references.py)."""

from __future__ import annotations

import pytest

from kitebox.core.references import SecretsManagerRef, parse_reference, reference_allowed

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:buildkite/db-AbCdEf"


class TestParse:
    @pytest.mark.parametrize(
        ("value", "ref"),
        [
            ("{{resolve:secretsmanager:buildkite/db}}", SecretsManagerRef("buildkite/db")),
            ("{{resolve:secretsmanager:buildkite/db:SecretString:password}}", SecretsManagerRef("buildkite/db", "password")),
            (f"{{{{resolve:secretsmanager:{ARN}}}}}", SecretsManagerRef(ARN)),
            (f"{{{{resolve:secretsmanager:{ARN}:SecretString:password}}}}", SecretsManagerRef(ARN, "password")),
            ("  {{resolve:secretsmanager:buildkite/db}}\n", SecretsManagerRef("buildkite/db")),
        ],
        ids=["plain-id", "id-json-key", "arn", "arn-json-key", "surrounding-whitespace"],
    )
    def test_references(self, value, ref):
        """CloudFormation-style references give the secret id and an optional JSON key (references.py syntax)."""
        assert parse_reference(value) == ref

    @pytest.mark.parametrize(
        ("ref", "name"),
        [
            (SecretsManagerRef("buildkite/db"), "buildkite/db"),
            (SecretsManagerRef(ARN), "buildkite/db-AbCdEf"),
            (SecretsManagerRef(ARN, "k"), "buildkite/db-AbCdEf"),
        ],
        ids=["name", "arn", "arn-with-key"],
    )
    def test_secret_name(self, ref, name):
        """The secret name is the id itself, or the last field of an ARN."""
        assert ref.secret_name == name

    @pytest.mark.parametrize(
        "value",
        [
            "{{resolve:secretsmanager:id:SecretString}}",
            "{{resolve:secretsmanager:id:SecretString:}}",
            "{{resolve:secretsmanager:id:Other:key}}",
            "{{resolve:secretsmanager:id:SecretString:key:AWSCURRENT}}",
            "{{resolve:secretsmanager::SecretString:key}}",
            "{{resolve:secretsmanager::}}",
            f"{{{{resolve:secretsmanager:{ARN}:SecretString}}}}",
            f"{{{{resolve:secretsmanager:{ARN}:Other:key}}}}",
        ],
        ids=["missing-key", "empty-key", "not-secretstring", "version-stage", "empty-id", "empty-id-colon", "arn-missing-key", "arn-not-secretstring"],
    )
    def test_malformed_references_raise(self, value):
        """A value shaped like a reference but malformed raises ValueError."""
        with pytest.raises(ValueError, match="must be"):
            parse_reference(value)

    @pytest.mark.parametrize(
        "value",
        [
            "hunter2",
            "",
            "{{resolve:ssm:/x}}",
            "{{resolve:secretsmanager:}}",
            "prefix {{resolve:secretsmanager:buildkite/db}}",
            "{{resolve:secretsmanager:buildkite/db}} suffix",
            "{{resolve:secretsmanager:a{b}}",
            "{resolve:secretsmanager:buildkite/db}",
        ],
        ids=["plain", "empty", "ssm", "no-body", "prefixed", "suffixed", "brace-in-body", "single-braces"],
    )
    def test_non_references_are_values(self, value):
        """A value that is not wholly a reference is the secret itself (None)."""
        assert parse_reference(value) is None
    def test_truncated_arn_is_malformed(self):
        """An ARN with fewer than seven fields is not a full ARN and raises ValueError."""
        with pytest.raises(ValueError):
            parse_reference("{{resolve:secretsmanager:arn:aws:secretsmanager:buildkite/x}}")

    def test_describe(self):
        """describe() names the secret id and the JSON key, if any."""
        assert SecretsManagerRef("buildkite/db").describe() == "secretsmanager:buildkite/db"
        assert SecretsManagerRef("buildkite/db", "pw").describe() == "secretsmanager:buildkite/db key 'pw'"


class TestAllowed:
    @pytest.mark.parametrize(
        ("ref", "prefix", "allowed"),
        [
            (SecretsManagerRef("buildkite/db"), "buildkite/", True),
            (SecretsManagerRef("buildkite/db", "pw"), "buildkite/", True),
            (SecretsManagerRef(ARN), "buildkite/", True),
            (SecretsManagerRef("prod/db"), "buildkite/", False),
            (SecretsManagerRef("buildkite-other/db"), "buildkite/", False),
            (SecretsManagerRef("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"), "buildkite/", False),
            (SecretsManagerRef("buildkite/db"), "", False),
            (SecretsManagerRef(""), "", False),
        ],
        ids=["name-in-prefix", "with-key", "arn-in-prefix", "outside", "lookalike-prefix", "arn-outside", "empty-prefix", "empty-everything"],
    )
    def test_prefix(self, ref, prefix, allowed):
        """Only secrets whose name starts with the operator's prefix may be referenced; an empty prefix allows none."""
        assert reference_allowed(ref, prefix) is allowed
