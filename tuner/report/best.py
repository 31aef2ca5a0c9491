"""The best configuration as things a person runs: the one exporter the summary, the report and the
dashboard note share (launch command, ``docker run`` line, flag file, each headed by the trial it is).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial
from pydantic import ValidationError

from tuner.core.errors import ConfigError
from tuner.engines import get_engine
from tuner.report.export import docker_run_line, flags_yaml, launch_command
from tuner.space.schema import SearchSpace
from tuner.store.attrs import StudyAttr, TrialAttr, study_image

FILES = ("best-launch.sh", "best-docker-run.sh", "best-flags.yaml")


@dataclass(frozen=True)
class BestConfig:
    """The best configuration as things a person runs."""

    trial_number: int
    header: str  # "best trial #31 of study demo: output_throughput 50.123"
    values: dict[str, float]
    flags: dict[str, Any]
    command: list[str]
    docker_run: str
    flags_yaml: str

    def write(self, folder: Path) -> list[Path]:
        """``best-launch.sh`` and ``best-docker-run.sh`` (executable) and ``best-flags.yaml`` in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        texts = (
            f"#!/bin/sh\n# {self.header}\n{shlex.join(self.command)}\n",
            f"#!/bin/sh\n# {self.header}\n{self.docker_run}\n",
            self.flags_yaml,
        )
        paths = []
        for name, text in zip(FILES, texts, strict=True):
            path = folder / name
            path.write_text(text)
            if name.endswith(".sh"):
                os.chmod(path, 0o755)
            paths.append(path)
        return paths


def objective_names(study: optuna.Study) -> list[str]:
    """The study's metric names (``study.set_metric_names``), else ``value_0``, ``value_1`` …"""
    names = study.metric_names
    return list(names) if names else [f"value_{i}" for i in range(len(study.directions))]


def best_config(study: optuna.Study, trial: FrozenTrial, space: SearchSpace | None = None) -> BestConfig:
    """``trial``'s configuration as launch command, ``docker run`` line and YAML flag file.

    With the search space (given, or recorded on the study by ``tuner.study``), the command is the
    engine's own (``python3 -m sglang.launch_server …``) even when the trial ran on the simulator, and
    the image is the one the study's image check inspected, else the space's; without it, the trial's
    recorded ``command``.
    """
    flags = dict(trial.user_attrs.get(TrialAttr.FLAGS) or {})
    values = dict(zip(objective_names(study), trial.values or [], strict=False))
    header = f"best trial #{trial.number} of study {study.study_name}: " + ", ".join(
        f"{k} {v:.3f}" for k, v in values.items()
    )
    image = study_image(study.user_attrs)
    space = space if space is not None else space_of(study)
    if space is not None:
        command = launch_command(space, flags)
        docker = docker_run_line(space, flags, image=image)  # None: the space's or the engine's image
        flag_file = flags_yaml(space, flags, header=header)
    else:
        command = list(trial.user_attrs.get(TrialAttr.COMMAND) or [])
        docker = (
            "docker run -d --gpus all --ipc=host --shm-size 32g -p 30000:30000 "
            "-v $HOME/.cache/huggingface:/root/.cache/huggingface "
            f"{shlex.quote(image or _engine_image(study))} \\\n  " + shlex.join(command)
        )
        flag_file = "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(
            {"flags": flags}, sort_keys=False
        )
    return BestConfig(trial.number, header, values, flags, command, docker, flag_file)


def _engine_image(study: optuna.Study) -> str:
    """The image of the study's engine and version (user attr ``engine``: "sglang 0.5.23"), else SGLang's."""
    name, _, version = str(study.user_attrs.get(StudyAttr.ENGINE) or "sglang").partition(" ")
    try:
        return get_engine(name).image_for(version.strip() or None)
    except ConfigError:
        return get_engine("sglang").default_image


def space_of(study: optuna.Study) -> SearchSpace | None:
    """The search space recorded on the study; None when absent or written by another tuner version."""
    raw = study.user_attrs.get(StudyAttr.SPACE)
    if not raw:
        return None
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError:
        return None
