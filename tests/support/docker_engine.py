"""The Docker engine and the registry-free images that tests run job containers from.

Outside CI a missing engine skips the test with a reason; in CI (``CI=true``) it fails, because
.ci/run starts dockerd and a skip there would hide a broken set-up.
"""

from __future__ import annotations

import functools
import gc
import os
import subprocess
import warnings
from pathlib import Path

import pytest

__all__ = [
    "BASE_IMAGE",
    "JOB_IMAGE",
    "REPO_ROOT",
    "docker_available",
    "ensure_base_image",
    "ensure_job_image",
    "image_exists",
    "in_ci",
    "require_docker",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "kitebox/base:bookworm"
JOB_IMAGE = "kitebox/job:test"
BUILD_SCRIPT = REPO_ROOT / "images" / "build-base-image.sh"
DOCKERFILE = REPO_ROOT / "images" / "Dockerfile"

# Read at import, before conftest's autouse fixture wipes KITEBOX_* for each test, so that a
# developer's mirror or cache override still reaches the build script.
_BUILD_SETTINGS = {
    name: os.environ[name]
    for name in ("KITEBOX_DEBIAN_MIRROR", "KITEBOX_CACHE_DIR")
    if name in os.environ
}


def in_ci() -> bool:
    """True when running under CI (``CI=true``, as .ci/run is run)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _ping(timeout: float) -> bool:
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
    except Exception:  # DockerException: no socket, bad DOCKER_HOST, no answer...
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def docker_available(timeout: float = 3.0) -> bool:
    """True when the Docker engine answers a ping within ``timeout`` seconds."""
    # When the engine is down the SDK drops its socket unclosed; collect it here, with the
    # ResourceWarning ignored, rather than let it surface later as an error in some other test
    # (pytest runs with filterwarnings=error).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        answered = _ping(timeout)
        gc.collect()
    return answered


def require_docker() -> None:
    """Skip the calling test when there is no Docker engine; in CI, fail it instead."""
    if docker_available():
        return
    message = "no Docker engine answers (start dockerd, e.g. with `KITEBOX_CI_SKIP_TESTS=1 bash .ci/run`)"
    if in_ci():
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


def image_exists(image: str) -> bool:
    """True when the local engine has ``image``."""
    import docker

    client = docker.from_env(timeout=10)
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def _run(argv: list[str], what: str, timeout: float, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}",
            pytrace=False,
        )


@functools.cache
def _build_base_image(image: str) -> None:
    env = {**_BUILD_SETTINGS, "KITEBOX_BASE_IMAGE": image}
    _run(["bash", str(BUILD_SCRIPT)], f"building {image}", timeout=1200, env=env)


def ensure_base_image(image: str = BASE_IMAGE) -> str:
    """Return ``image`` after running images/build-base-image.sh once per test session.

    The script returns at once when the image is current; a cold build takes about a minute
    (debootstrap), a rebuild after `docker system prune -a` a few seconds (cached rootfs).
    Skips (outside CI) or fails (in CI) when there is no Docker engine.
    """
    require_docker()
    _build_base_image(image)
    return image


def ensure_job_image(tag: str = JOB_IMAGE, *, base: str = BASE_IMAGE, rebuild: bool = False) -> str:
    """Return ``tag`` after building images/Dockerfile on top of ``base`` if it is missing
    (or always with ``rebuild=True``; Docker's layer cache makes that about a second)."""
    ensure_base_image(base)
    if rebuild or not image_exists(tag):
        argv = [
            "docker", "build", "--quiet", "--network", "none", "--build-arg", f"BASE={base}",
            "-t", tag, "-f", str(DOCKERFILE), str(DOCKERFILE.parent),
        ]
        _run(argv, f"building {tag}", timeout=600)
    return tag
