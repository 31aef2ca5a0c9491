"""How the simulated SGLang server runs: its command line for a simulator target (a local process), and
the Docker target of the simulated image (``scripts/build-sim-image.sh``) on the host's Python."""

from __future__ import annotations

import sys
from pathlib import Path

from tuner.space.schema import SearchSpace
from tuner.space.targets import DockerTarget, SimulatorTarget, VolumeBind

SIM_IMAGE = "sglang-tuner/sim:dev"


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


def sim_image_target(
    *, repo: Path | None = None, venv: Path | None = None, image: str = SIM_IMAGE
) -> DockerTarget:
    """The target running the simulated SGLang image on the host's Python (see docker-images/README.md)."""
    repo = (repo or Path(__file__).resolve().parents[2]).resolve()
    venv = (venv or repo / ".venv").absolute()
    volumes: dict[str, VolumeBind] = {
        p: VolumeBind(bind=p, mode="ro")
        for p in ("/usr", "/lib", "/lib64", "/bin", "/etc")
        if Path(p).exists()
    }
    home = _python_home(venv)
    if home is not None and not any(home == Path(p) or Path(p) in home.parents for p in volumes):
        volumes[str(home)] = VolumeBind(bind=str(home), mode="ro")
    volumes[str(venv)] = VolumeBind(bind="/opt/sim-venv", mode="ro")
    volumes[str(repo)] = VolumeBind(bind="/opt/tuner-src", mode="ro")
    return DockerTarget(image=image, gpus="none", shm_size="256m", volumes=volumes)


def _python_home(venv: Path) -> Path | None:
    """The installation prefix of the interpreter a virtualenv was made from (``home`` in pyvenv.cfg)."""
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                return Path(value.strip()).resolve().parent
    except FileNotFoundError:
        return None
    return None
