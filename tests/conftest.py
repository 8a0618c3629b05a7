"""Shared fixtures: a clean environment for every test, fake AWS over HTTP, a git server over ssh.

Fixtures
  aws        (function) the session's MotoServer, reset, with its fake AWS_* env set
  moto       (session)  the MotoServer itself, started once
  git_sshd   (session)  a GitSshServer on loopback (skips without sshd, fails in CI)
  base_image (session)  "kitebox/base:bookworm", built if missing (skips without Docker,
                        fails in CI)
Tests that use aws/moto, git_sshd or base_image get the moto, sshd or docker marker added,
so `-m "not docker"` deselects them. Tests marked slow run only with KITEBOX_SLOW=1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.support.docker_engine import ensure_base_image, in_ci
from tests.support.git_sshd import SSHD_PATH, GitSshServer
from tests.support.moto_server import MotoServer

# Never let a test see the developer's (or CI's) credentials, agent or kitebox settings.
_SCRUBBED_PREFIXES = ("AWS_", "BUILDKITE_", "KITEBOX_")
_SCRUBBED_NAMES = frozenset({"SSH_AUTH_SOCK", "SSH_AGENT_PID"})

# Fixture name -> marker it implies.
_FIXTURE_MARKERS = {"aws": "moto", "moto": "moto", "git_sshd": "sshd", "base_image": "docker"}

# Read once at collection: the autouse fixture below removes KITEBOX_* before each test runs.
_RUN_SLOW = os.environ.get("KITEBOX_SLOW") == "1"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove AWS_*, BUILDKITE_*, KITEBOX_*, SSH_AUTH_SOCK and SSH_AGENT_PID for each test."""
    for name in list(os.environ):
        if name.startswith(_SCRUBBED_PREFIXES) or name in _SCRUBBED_NAMES:
            monkeypatch.delenv(name, raising=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: set KITEBOX_SLOW=1 to run")
    for item in items:
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()) and marker not in item.keywords:
                item.add_marker(marker)
        if not _RUN_SLOW and "slow" in item.keywords:
            item.add_marker(skip_slow)


def _missing(what: str) -> None:
    """Skip, or fail under CI=true, where .ci/run is supposed to have installed it."""
    if in_ci():
        pytest.fail(f"CI=true but {what}", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto server over HTTP on loopback for the whole session."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws(_clean_environ: None, moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The session's moto server, emptied, with AWS_ENDPOINT_URL and fake credentials set."""
    if not moto.is_running():  # a fault test killed it
        moto.start()
    moto.reset()
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    return moto


@pytest.fixture(scope="session")
def git_sshd() -> Iterator[GitSshServer]:
    """One sshd on loopback serving bare git repos, for the whole session."""
    if not os.access(SSHD_PATH, os.X_OK):
        _missing(f"{SSHD_PATH} not found: install openssh-server (.ci/run does)")
    if shutil.which("git") is None:
        _missing("git not found: install git (.ci/run does)")
    with GitSshServer() as server:
        yield server


@pytest.fixture(scope="session")
def base_image() -> str:
    """The registry-free base image name, built on first use."""
    return ensure_base_image()
