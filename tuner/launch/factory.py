"""The launcher a space's target needs: local processes, or Docker containers after the image's flag check."""

from __future__ import annotations

import logging
from pathlib import Path

from tuner.engines import get_engine
from tuner.launch.base import Launcher
from tuner.launch.docker import DockerLauncher
from tuner.launch.image_check import check_image
from tuner.launch.process import ProcessLauncher
from tuner.space.schema import SearchSpace
from tuner.space.targets import DockerTarget

log = logging.getLogger(__name__)


def make_launcher(space: SearchSpace, *, source: str) -> Launcher:
    """The launcher a space's target needs; for Docker, the image's flags are checked first."""
    if isinstance(space.target, DockerTarget):
        return launcher_for_space(space, source=source)
    return ProcessLauncher()


def launcher_for_space(
    space: SearchSpace, *, source: str | None = None, cache_dir: Path | None = None
) -> DockerLauncher:
    """The launcher for a space whose target is Docker, after checking its flags against the image.

    For an engine with an image probe (``EngineProfile.image_probe``: SGLang), runs its
    ``--help`` in the image (cached by image id) and raises :class:`~tuner.core.errors.UnknownFlagError`
    naming every parameter or fixed flag the image rejects, or :class:`~tuner.core.errors.ConfigError` for
    a categorical choice its help does not list. The launcher's ``image_info`` then holds the image id
    and engine version for the study to record; it stays None for other engines (llama.cpp).
    """
    if not isinstance(space.target, DockerTarget):
        raise TypeError(f"space {space.name!r} does not run in Docker (target kind {space.target.kind})")
    launcher = DockerLauncher(space.target)
    probe = get_engine(space.engine).image_probe
    if probe is None:  # asking a llama.cpp image for SGLang's --help would fail every such study
        log.info("%s: no image flag check for %s images", source or space.name, space.engine)
        return launcher
    flags = {"model-path", "host", "port", *space.fixed_flags}
    choices: dict[str, list[object]] = {}
    for name, param in space.parameters.items():
        flag = space.flag_of(name)
        flags.add(flag)
        if getattr(param, "type", None) == "categorical":
            choices.setdefault(flag, []).extend(param.choices)  # type: ignore[union-attr]
    for flag, value in space.fixed_flags.items():
        if isinstance(value, str):
            choices.setdefault(flag, []).append(value)
    info = check_image(launcher, sorted(flags), probe, choices=choices, source=source, cache_dir=cache_dir)
    if info.engine_version != space.engine_version:
        log.warning(
            "%s: engine_version %s but image %s runs %s %s; the image's --help decided which flags pass",
            source or space.name,
            space.engine_version,
            info.image,
            info.engine,
            info.engine_version,
        )
    launcher.image_info = info
    return launcher
