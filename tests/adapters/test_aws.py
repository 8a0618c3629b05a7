"""The SSM and Secrets Manager adapters against a real moto server over HTTP, and against a
misbehaving endpoint (outage, throttling, denial) to prove they fail closed in one line."""

from __future__ import annotations

import json
import time

import pytest

from kitebox.adapters.aws import SecretsManagerResolver, SsmStore
from kitebox.core.references import SecretsManagerRef
from kitebox.errors import AwsError
from tests.support.aws_faults import FaultyEndpoint

pytestmark = pytest.mark.moto
BASE = "/vendors/buildkite"


def put(ssm, count: int, path: str, prefix: str = "v") -> dict[str, str]:
    values = {}
    for i in range(count):
        name = f"{path}/env/VAR_{i:02d}"
        values[name] = f"{prefix}-{i}-\"quoted\" $x ✨"
        ssm.put_parameter(Name=name, Value=values[name], Type="SecureString")
    return values


class TestSsmStore:
    """GetParametersByPath: recursive, decrypted, every page, namespaces in parallel, one client."""

    def test_reads_every_page_of_every_namespace(self, aws):
        """25 parameters in each of 3 namespaces come back whole in 9 calls (3 pages of 10 each)."""
        ssm = aws.client("ssm")
        paths = [f"{BASE}/global", f"{BASE}/github.com_a_b.git", f"{BASE}/pipe"]
        expected = {}
        for path in paths:
            expected.update(put(ssm, 25, path, prefix=path))
        store = SsmStore.create()
        fetched = store.fetch(paths)
        got = {p.name: p.value.reveal() for params in fetched.values() for p in params}
        assert got == expected
        assert {path: len(fetched[path]) for path in paths} == {path: 25 for path in paths}
        assert store.calls == 9

    def test_secure_string_decrypted_and_type_kept(self, aws):
        """A SecureString comes back decrypted and typed, with its last-modified time."""
        aws.client("ssm").put_parameter(Name=f"{BASE}/global/env/K", Value="plain-text-value", Type="SecureString")
        [param] = SsmStore.create().fetch([f"{BASE}/global"])[f"{BASE}/global"]
        assert (param.value.reveal(), param.type) == ("plain-text-value", "SecureString")
        assert param.last_modified

    def test_sibling_namespace_not_read(self, aws):
        """`<BASE>/pipe` does not return `<BASE>/pipe-other`'s parameters."""
        ssm = aws.client("ssm")
        ssm.put_parameter(Name=f"{BASE}/pipe-other/env/X", Value="other", Type="String")
        assert SsmStore.create().fetch([f"{BASE}/pipe"]) == {f"{BASE}/pipe": []}

    def test_outage_fails_closed_in_one_line(self, aws, monkeypatch):
        """An unreachable endpoint raises one AwsError naming the path, within bounded time."""
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        started = time.monotonic()
        with pytest.raises(AwsError) as failed:
            SsmStore.create(max_attempts=2, timeout=1).fetch([f"{BASE}/global"])
        assert "\n" not in str(failed.value)
        assert f"{BASE}/global" in str(failed.value) and "cannot reach AWS" in str(failed.value)
        assert time.monotonic() - started < 20

    @pytest.mark.parametrize(
        "code, hint",
        [("ThrottlingException", "retries exhausted"), ("AccessDeniedException", "kms:Decrypt")],
        ids=["throttled", "denied"],
    )
    def test_error_mid_fetch_fails_closed(self, aws, monkeypatch, code, hint):
        """A failure after the first page refuses the whole fetch: no partial namespace is used."""
        put(aws.client("ssm"), 25, f"{BASE}/global", prefix="mid")
        endpoint = FaultyEndpoint(code, upstream=aws.endpoint_url, passes=1)
        try:
            monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.url)
            with pytest.raises(AwsError) as failed:
                SsmStore.create(max_attempts=3, timeout=5).fetch([f"{BASE}/global"])
        finally:
            endpoint.close()
        message = str(failed.value)
        assert code in message and hint in message and "mid-" not in message
        # one good page, then at most 3 attempts at the second (a denial is not retried at all)
        assert 2 <= endpoint.requests <= 1 + 3
        if code == "AccessDeniedException":
            assert endpoint.requests == 2


class TestSecretsManagerResolver:
    """References resolve to the secret string or one JSON key of it; failures name the parameter."""

    def test_whole_string_and_json_key(self, aws):
        """A plain reference gives the string; a key reference gives that key of the JSON."""
        sm = aws.client("secretsmanager")
        sm.create_secret(Name="buildkite/plain", SecretString="line1\nline2 ✨")
        sm.create_secret(Name="buildkite/json", SecretString=json.dumps({"password": "p@ss", "port": 5432}))
        resolver = SecretsManagerResolver.create()
        assert resolver.resolve(SecretsManagerRef("buildkite/plain"), "/p").reveal() == "line1\nline2 ✨"
        assert resolver.resolve(SecretsManagerRef("buildkite/json", "password"), "/p").reveal() == "p@ss"
        assert resolver.resolve(SecretsManagerRef("buildkite/json", "port"), "/p").reveal() == "5432"

    @pytest.mark.parametrize(
        "setup, ref, expected",
        [
            (None, SecretsManagerRef("buildkite/missing"), "ResourceNotFoundException"),
            ({"Name": "buildkite/j", "SecretString": '{"a": "value-a"}'}, SecretsManagerRef("buildkite/j", "b"), "no key 'b'"),
            ({"Name": "buildkite/t", "SecretString": "not-json-value"}, SecretsManagerRef("buildkite/t", "a"), "not JSON"),
            ({"Name": "buildkite/bin", "SecretBinary": b"\x00\x01"}, SecretsManagerRef("buildkite/bin"), "binary secret"),
        ],
        ids=["missing", "no-such-key", "not-json", "binary"],
    )
    def test_failures_name_the_parameter_not_the_value(self, aws, setup, ref, expected):
        """Each failure is one AwsError naming the SSM parameter and the reference, no value."""
        if setup:
            aws.client("secretsmanager").create_secret(**setup)
        with pytest.raises(AwsError) as failed:
            SecretsManagerResolver.create().resolve(ref, f"{BASE}/pipe/env/X")
        message = str(failed.value)
        assert expected in message and f"{BASE}/pipe/env/X" in message
        assert "value-a" not in message and "not-json-value" not in message
