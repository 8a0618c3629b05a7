"""Fixtures for the operators' kit: run `kitebox` in-process or as a child, and a denying endpoint.

  cli        run `kitebox ARGV...` in this process (stdin given as bytes); returns Run
  kitebox    run the real `kitebox` executable as a child process with the test's environment
  deny       a loopback AWS endpoint that answers every request with one AWS error
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


from kitebox.cli import main
from tests.support.aws_faults import FaultyEndpoint

KITEBOX = str(Path(sys.executable).with_name("kitebox"))
BASE = "/vendors/buildkite"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class _NoTty(io.TextIOWrapper):
    def isatty(self) -> bool:
        return False


@pytest.fixture
def cli(capsys, monkeypatch):
    def run(*argv: str, stdin: bytes | None = None) -> Run:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", _NoTty(io.BytesIO(stdin or b"")))
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse refusing the arguments
            code = exit_.code if isinstance(exit_.code, int) else 2
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def kitebox():
    def run(*argv: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> Run:
        done = subprocess.run([KITEBOX, *argv], input=stdin or b"", capture_output=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        return Run(done.returncode, done.stdout.decode(), done.stderr.decode())

    return run


def DenyingEndpoint(code: str, message: str) -> FaultyEndpoint:  # noqa: N802 - kept as the tests name it
    """Answers every AWS JSON request with `code` (HTTP 400): KMS denials, access denials."""
    return FaultyEndpoint(code, message)


@pytest.fixture
def deny(aws, monkeypatch):
    """deny(code, message): point AWS_ENDPOINT_URL at an endpoint refusing everything with `code`."""
    endpoints = []

    def start(code: str, message: str) -> DenyingEndpoint:
        endpoint = DenyingEndpoint(code, message)
        endpoints.append(endpoint)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.url)
        return endpoint

    yield start
    for endpoint in endpoints:
        endpoint.close()
