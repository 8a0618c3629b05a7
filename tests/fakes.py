"""An in-memory ParameterStore for unit tests of the orchestration (43 lines, like httpx's fake)."""

from __future__ import annotations

from kitebox.core.decision import Parameter
from kitebox.core.references import SecretsManagerRef
from kitebox.core.secret import Secret


class MemoryStore:
    """ParameterStore over a dict name → (value, type); records which paths were fetched."""

    def __init__(self, parameters: dict[str, str | tuple[str, str]]):
        self._parameters = {
            name: (v if isinstance(v, tuple) else (v, "SecureString")) for name, v in parameters.items()
        }
        self.fetched: list[tuple[str, ...]] = []

    def fetch(self, paths):
        self.fetched.append(tuple(paths))
        return {
            path: [
                Parameter(name, Secret(value), kind)
                for name, (value, kind) in self._parameters.items()
                if name.startswith(path + "/")
            ]
            for path in paths
        }


class MemoryResolver:
    """SecretResolver over a dict secret id → string."""

    def __init__(self, secrets: dict[str, str]):
        self._secrets = secrets
        self.calls = 0

    def resolve(self, ref: SecretsManagerRef, parameter: str) -> Secret:
        import json

        self.calls += 1
        text = self._secrets[ref.secret_id]
        return Secret(text if ref.json_key is None else json.loads(text)[ref.json_key])
