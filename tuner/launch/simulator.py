"""How the simulated SGLang server (``python -m tuner.sim``) is started for a simulator target."""

from __future__ import annotations

import sys

from tuner.space.schema import SearchSpace
from tuner.space.targets import SimulatorTarget


def simulator_program(space: SearchSpace, target: SimulatorTarget, seed: int | None) -> list[str]:
    """The simulator's command line prefix (its ``--sim-*`` options); SGLang's flags follow."""
    argv = [
        sys.executable, "-m", "tuner.sim",
        "--sim-sglang-version", space.engine_version,
        "--sim-gpu", target.gpu,
        "--sim-model", target.model,
        "--sim-noise", str(target.noise),
        "--sim-startup-scale", str(target.startup_scale),
    ]  # fmt: skip
    if seed is not None:
        argv += ["--sim-seed", str(seed)]
    return [*argv, *target.extra_args]
