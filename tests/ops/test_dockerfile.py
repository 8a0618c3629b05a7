"""The root Dockerfile: kitebox's own image builds offline (no network at all) from the
registry-free base image, runs kitebox, and refuses the proxy in one line when the base lacked
its packages."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.docker_engine import REPO_ROOT

pytestmark = pytest.mark.docker
IMAGE = "kitebox/kitebox:test"


def docker(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def image(base_image) -> str:
    done = docker("build", "--network", "none", "--build-arg", f"BASE={base_image}", "-t", IMAGE, str(REPO_ROOT),
                  timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return IMAGE


def run(image: str, *argv: str, entrypoint: str | None = None) -> subprocess.CompletedProcess:
    extra = ["--entrypoint", entrypoint] if entrypoint else []
    return docker("run", "--rm", "--network", "none", *extra, image, *argv)


def test_runs_kitebox(image):
    version = re.search(r'^version = "(.+)"$', (REPO_ROOT / "pyproject.toml").read_text(), re.M)[1]
    done = run(image, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"kitebox {version}"
    done = run(image, "iam-policy", "--trust-policy", "--stack-role-arn", "arn:aws:iam::111122223333:role/stack")
    assert done.returncode == 0 and '"sts:SourceIdentity": "false"' in done.stdout


def test_context_holds_only_the_package(image):
    """.dockerignore: no tests, no venv, no sources left beside the installed package."""
    done = run(image, "-c", "test ! -e /opt/kitebox/src && ! find / -xdev -name conftest.py | grep -q .",
               entrypoint="/bin/sh")
    assert done.returncode == 0, done.stdout + done.stderr


def test_proxy_needs_its_packages(image):
    missing = run(image, "/opt/kitebox/missing-packages", entrypoint="cat").stdout.split()
    done = run(image, "proxy", "serve", "--help")
    if {"iptables", "python3-docker"} & set(missing):
        assert done.returncode == 1 and "which the proxy needs" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    else:
        assert done.returncode == 0, done.stderr
