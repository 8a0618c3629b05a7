"""SSM and Secrets Manager behind two small interfaces; boto errors become one-line AwsErrors.

Reads use GetParametersByPath (recursive, with decryption, every page), the namespaces
concurrently on ONE client (botocore clients are thread-safe), retries bounded by botocore's
standard mode. Endpoint and region come from the standard AWS variables (AWS_ENDPOINT_URL,
AWS_REGION), so a local moto server works unchanged.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, Sequence

import botocore.config
import botocore.exceptions
import botocore.session

from kitebox.core.decision import Parameter
from kitebox.core.references import SecretsManagerRef
from kitebox.core.secret import Secret
from kitebox.errors import AwsError

PAGE_SIZE = 10  # GetParametersByPath's maximum MaxResults


class ParameterStore(Protocol):
    def fetch(self, paths: Sequence[str]) -> dict[str, list[Parameter]]:
        """Every parameter under each path (recursively), keyed by path."""


class SecretResolver(Protocol):
    def resolve(self, ref: SecretsManagerRef, parameter: str) -> Secret:
        """The value a reference points at."""


def client_config(max_attempts: int, timeout: float) -> botocore.config.Config:
    return botocore.config.Config(
        retries={"total_max_attempts": max_attempts, "mode": "standard"},  # attempts, not retries
        connect_timeout=timeout,
        read_timeout=timeout,
        max_pool_connections=10,
    )


def new_client(service: str, config: botocore.config.Config, region: str | None = None):
    """A botocore client, for every AWS client kitebox makes: boto3 would only add an import of
    s3transfer (~60 ms of every job's start-up) around the same call."""
    session = botocore.session.get_session()
    # botocore reads AWS_DEFAULT_REGION (and the config file) but not AWS_REGION, the standard
    # variable the other SDKs and kitebox's README use.
    region = region or session.get_config_variable("region") or os.environ.get("AWS_REGION") or None
    return session.create_client(service, region_name=region, config=config)


def describe_error(error: Exception) -> str:
    """One line for any boto failure; AWS error messages name resources, never parameter values."""
    if isinstance(error, botocore.exceptions.ClientError):
        info = error.response.get("Error", {})
        code = info.get("Code", "Error")
        hint = {
            "AccessDeniedException": " (check the instance role's ssm:GetParameter*/kms:Decrypt grants)",
            "ThrottlingException": " (throttled, retries exhausted)",
            "ParameterNotFound": "",
        }.get(code, "")
        return f"{code}: {info.get('Message', '').strip()}{hint}"
    if isinstance(error, botocore.exceptions.NoRegionError):
        return "no AWS region: set AWS_REGION (or KITEBOX_AWS_REGION)"
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return "no AWS credentials on this host"
    if isinstance(error, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError)):
        return f"cannot reach AWS ({type(error).__name__})"
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return f"{type(error).__name__}: {error}"
    raise error


class SsmStore:
    """ParameterStore on AWS SSM; counts its API calls so benchmarks can report them."""

    def __init__(self, client):
        self._client = client
        self._lock = threading.Lock()
        self.calls = 0

    @classmethod
    def create(cls, max_attempts: int = 3, timeout: float = 5.0) -> "SsmStore":
        try:
            return cls(new_client("ssm", client_config(max_attempts, timeout)))
        except botocore.exceptions.BotoCoreError as error:
            raise AwsError(f"SSM client: {describe_error(error)}") from None

    def fetch(self, paths: Sequence[str]) -> dict[str, list[Parameter]]:
        if not paths:
            return {}
        with ThreadPoolExecutor(max_workers=len(paths), thread_name_prefix="kitebox-ssm") as pool:
            results = list(pool.map(self._fetch_one, paths))
        return dict(zip(paths, results))

    def _fetch_one(self, path: str) -> list[Parameter]:
        parameters: list[Parameter] = []
        token = None
        try:
            while True:
                kwargs = {"Path": path, "Recursive": True, "WithDecryption": True, "MaxResults": PAGE_SIZE}
                if token:
                    kwargs["NextToken"] = token
                with self._lock:
                    self.calls += 1
                page = self._client.get_parameters_by_path(**kwargs)
                parameters.extend(
                    Parameter(
                        name=p["Name"],
                        value=Secret(p.get("Value", "")),
                        type=p.get("Type", "String"),
                        last_modified=p["LastModifiedDate"].isoformat() if p.get("LastModifiedDate") else None,
                    )
                    for p in page.get("Parameters", ())
                )
                token = page.get("NextToken")
                if not token:
                    return parameters
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise AwsError(f"SSM GetParametersByPath {path} failed: {describe_error(error)}") from None


class SecretsManagerResolver:
    """SecretResolver on AWS Secrets Manager (GetSecretValue, optionally one JSON key)."""

    def __init__(self, client):
        self._client = client

    @classmethod
    def create(cls, max_attempts: int = 3, timeout: float = 5.0) -> "SecretsManagerResolver":
        try:
            return cls(new_client("secretsmanager", client_config(max_attempts, timeout)))
        except botocore.exceptions.BotoCoreError as error:
            raise AwsError(f"Secrets Manager client: {describe_error(error)}") from None

    def resolve(self, ref: SecretsManagerRef, parameter: str) -> Secret:
        where = f"{parameter} → {ref.describe()}"
        try:
            answer = self._client.get_secret_value(SecretId=ref.secret_id)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise AwsError(f"Secrets Manager GetSecretValue for {where} failed: {describe_error(error)}") from None
        if "SecretString" not in answer:
            raise AwsError(f"{where} is a binary secret; only string secrets can be variables")
        text = answer["SecretString"]
        if ref.json_key is None:
            return Secret(text)
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            raise AwsError(f"{where}: the secret is not JSON, so it has no key {ref.json_key!r}") from None
        if not isinstance(document, dict) or ref.json_key not in document:
            raise AwsError(f"{where}: the secret has no key {ref.json_key!r}")
        value = document[ref.json_key]
        return Secret(value if isinstance(value, str) else json.dumps(value))
