"""The launcher contract: start a server from a :class:`LaunchSpec`, watch it, stop it.

Launchers know processes and containers, not Optuna and not engines: the engine module has
already turned flags into ``argv`` and the trial runner decides what a failure means.
Implementations: ``tuner.launch.process`` (local process group), ``tuner.launch.docker``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tuner.core.failures import ExitStatus
from tuner.core.net import url_host

TOOL_LABEL = "tuner"  # every process/container we start carries this label (docker) or env var (process)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one server for one trial.

    ``argv`` is the engine command (``python3 -m sglang.launch_server …``) with ``port`` already
    in it: the launcher chose the port before the engine module rendered the command.
    ``secret_env`` is passed to the server but never logged or stored.
    """

    argv: list[str]
    host: str
    port: int
    log_path: Path
    study: str
    trial: int
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    gpu_ids: tuple[int, ...] | None = None  # None: all visible GPUs
    worker: str = "0"  # several workers on one host reap only their own orphans

    @property
    def base_url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    def labels(self) -> dict[str, str]:
        return {
            TOOL_LABEL: "1",
            "tuner.study": self.study,
            "tuner.trial": str(self.trial),
            "tuner.worker": self.worker,
        }


class ServerHandle(Protocol):
    """A started server. All methods are safe to call after it died."""

    spec: LaunchSpec

    @property
    def command(self) -> str | None:
        """An equivalent command line a person can run (``docker run …``, secrets as ***); None: the argv."""
        ...

    @property
    def base_url(self) -> str: ...

    def exit_status(self) -> ExitStatus | None:
        """``None`` while running; how it ended otherwise. Cheap: called every ~100 ms."""
        ...

    def log_text(self) -> str:
        """Everything the server printed so far (stdout and stderr interleaved)."""
        ...

    def first_output_at(self) -> float | None:
        """``time.perf_counter()`` when the server printed its first line, if it did."""
        ...

    def stop(self, timeout: float = 10.0) -> ExitStatus:
        """Stop the server and everything it started (SIGTERM, then SIGKILL after ``timeout``)."""
        ...


class Launcher(Protocol):
    """Starts servers; cleans up what a killed tuner left behind."""

    # what the Docker image check found (image id, engine version, flags); None without one
    image_info: ImageInfo | None

    @property
    def bind_host(self) -> str | None:
        """The address servers must bind (a container's 0.0.0.0 behind a published port); None: the space's."""
        ...

    def start(self, spec: LaunchSpec) -> ServerHandle:
        """Start the server; raise :class:`tuner.core.errors.LaunchError` if it cannot even be started."""
        ...

    def free_port(self, host: str) -> int:
        """A port that is free on ``host`` now."""
        ...

    def reap_orphans(self, study: str | None = None, worker: str | None = None) -> int:
        """Stop servers a killed tuner left running (for ``study``/``worker``, or all of ours). Returns how many."""
        ...

    def close(self) -> None: ...


def host_secrets(names: Sequence[str]) -> dict[str, str]:
    """The host's values of the environment variables ``names`` (a target's ``secret_env_from_host``).

    The one place secrets are read; they travel in ``LaunchSpec.secret_env`` and are never logged or
    stored. A variable that is not set is left out, with a note in the log.
    """
    out = {}
    for name in names:
        if value := os.environ.get(name):
            out[name] = value
        else:
            log.info("secret %s is not set on the host; the server runs without it", name)
    return out


def read_tail(path: Path, max_bytes: int = 1 << 20) -> str:
    """The last ``max_bytes`` of a log file, decoded leniently ('' if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


@dataclass(frozen=True)
class ImageInfo:
    """What the image's engine accepts, and which image and version that is."""

    image: str
    image_id: str  # sha256:… of the local image: the cache key and the study's record of the image
    repo_digests: tuple[str, ...]  # registry digests (empty for a locally built image)
    engine: str
    engine_version: str
    flags: frozenset[str]  # accepted flag names without dashes, aliases included
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # flag -> values the help lists
    cached: bool = False

    def to_attrs(self) -> dict[str, Any]:
        """Plain-JSON form for the study's user attributes."""
        return {
            "image": self.image,
            "image_id": self.image_id,
            "repo_digests": list(self.repo_digests),
            "engine": self.engine,
            "engine_version": self.engine_version,
            "accepted_flags": len(self.flags),
        }
