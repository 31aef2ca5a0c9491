"""The Docker daemon as the launcher sees it: connecting, and docker-py's exceptions translated once into :class:`~tuner.core.errors.LaunchError` naming the daemon and what to do."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import docker
import docker.errors
import requests

from tuner.core.errors import LaunchError

# docker-py raises these when the daemon is gone (socket refused, connection reset mid-stream).
DAEMON_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


def connect(daemon: str | None = None, *, timeout: float = 60.0) -> docker.DockerClient:
    """A docker client for ``daemon`` (default: the environment's); a LaunchError saying how to start one."""
    try:
        if daemon:
            return docker.DockerClient(base_url=daemon, version="auto", timeout=int(timeout))
        return docker.from_env(version="auto", timeout=int(timeout))
    except DAEMON_ERRORS as e:
        raise LaunchError(
            f"cannot reach the Docker daemon at {daemon_name(daemon)} ({short_error(e)}); start it with "
            "scripts/setup-docker.sh (or `dockerd &` as root) or point DOCKER_HOST at a running one"
        ) from e


def daemon_unavailable_reason(daemon: str | None = None) -> str | None:
    """``None`` when a Docker daemon answers, else why not (for tests and ``doctor`` checks)."""
    try:
        connect(daemon, timeout=5).close()
    except LaunchError as e:
        return str(e)
    return None


@contextlib.contextmanager
def daemon_call(what: str, daemon: str | None) -> Iterator[None]:
    """Translate docker-py and transport errors into a LaunchError that names the operation."""
    try:
        yield
    except docker.errors.APIError as e:
        text = str(e.explanation or e)
        if "could not select device driver" in text:
            text += "; this daemon has no NVIDIA runtime: install nvidia-container-toolkit or set target.gpus: none"
        raise LaunchError(f"docker could not {what}: {text}") from e
    except DAEMON_ERRORS as e:
        raise LaunchError(
            f"lost the Docker daemon at {daemon_name(daemon)} while trying to {what} ({short_error(e)}); "
            "check it (`docker info`) and restart it with scripts/setup-docker.sh"
        ) from e


def missing_image_message(image: str) -> str:
    """What to say when ``image`` is not on the daemon (the tuner never pulls implicitly)."""
    how = (
        "build it with scripts/build-sim-image.sh"
        if image.startswith("sglang-tuner/")
        else f"pull it first (`docker pull {image}`) or load it (`docker load -i FILE`)"
    )
    return f"Docker image {image} is not present on the daemon and the tuner never pulls images: {how}"


def daemon_name(daemon: str | None) -> str:
    return daemon or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def short_error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
