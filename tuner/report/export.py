"""A configuration as something a person runs: launch command, ``docker run`` line, flag file."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

import yaml

from tuner.engines import get_engine
from tuner.space.schema import SearchSpace
from tuner.space.targets import DockerTarget


def launch_command(space: SearchSpace, flags: Mapping[str, Any], *, port: int | None = None) -> list[str]:
    """The engine's own launch command for ``flags`` (``python3 -m sglang.launch_server …``)."""
    engine = get_engine(space.engine)
    return engine.launch_argv(
        model=space.model,
        host="0.0.0.0",
        port=port or engine.default_port,
        flags=flags,
        version=space.engine_version,
    )


def docker_run_line(space: SearchSpace, flags: Mapping[str, Any], *, image: str | None = None) -> str:
    """A ``docker run`` line in the shape of the field report's deployed command."""
    engine = get_engine(space.engine)
    if image is None:
        image = (
            space.target.image
            if isinstance(space.target, DockerTarget)
            else engine.image_for(space.engine_version)
        )
    port = engine.default_port
    head = [
        "docker", "run", "-d", "--name", f"{space.engine}-tuned", "--gpus", "all",
        "-p", f"{port}:{port}", "-v", "$HOME/.cache/huggingface:/root/.cache/huggingface",
        "--shm-size", "32g", "-e", "HF_TOKEN", image,
    ]  # fmt: skip
    return (
        " ".join(shlex.quote(a) if not a.startswith("$") else a for a in head)
        + " \\\n  "
        + shlex.join(launch_command(space, flags, port=port))
    )


def flags_yaml(space: SearchSpace, flags: Mapping[str, Any], *, header: str = "") -> str:
    """The configuration as a YAML file of flags, with engine, version and model."""
    doc = {
        "engine": space.engine,
        "engine_version": space.engine_version,
        "model": space.model,
        "flags": dict(flags),
    }
    text = yaml.safe_dump(doc, sort_keys=False)
    return "".join(f"# {line}\n" for line in header.splitlines()) + text
