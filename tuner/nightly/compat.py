"""Does tonight's engine still accept a configuration? Checked before anything is launched.

Engines drop and rename flags between releases (SGLang 0.5.20 removed ``--cuda-graph-max-bs``).
A configuration recorded under an older version may be rejected by the version in the space
file now; the nightly job drops such configurations with a note instead of failing.

Sources, in order: the engine's version flag table (``get_engine(...).flag_specs(version)``:
names and choices), then, for Docker targets, the image's own parser when
``tuner.launch.image_check`` provides ``rejected_flags(space, flags) -> dict[str, str]``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from tuner.core.errors import UnknownFlagError
from tuner.engines import get_engine
from tuner.space.schema import SearchSpace
from tuner.space.targets import DockerTarget


def rejection(space: SearchSpace, flags: Mapping[str, Any]) -> str | None:
    """Why ``space``'s engine version (or image) rejects ``flags``; None when it accepts them."""
    engine = get_engine(space.engine)
    version = space.engine_version
    active = [name for name, value in flags.items() if value is not False and value is not None]
    try:
        engine.check_flags(active, version)
    except UnknownFlagError as e:
        return str(e)
    specs = engine.flag_specs(version)
    for name in active:
        spec = specs[name.lstrip("-")]
        value = flags[name]
        if spec.choices is not None and not isinstance(value, bool) and str(value) not in spec.choices:
            return f"{engine.name} {version} does not accept --{spec.name} {value} (choices: {', '.join(spec.choices)})"
    if isinstance(space.target, DockerTarget):
        return _image_rejection(space, flags)
    return None


def image_check_available() -> bool:
    """Whether the Docker image flag check (``tuner.launch.image_check.rejected_flags``) exists."""
    return _image_checker() is not None


def _image_checker() -> Any:
    try:
        module = importlib.import_module("tuner.launch.image_check")
    except ImportError:
        return None
    return getattr(module, "rejected_flags", None)


def _image_rejection(space: SearchSpace, flags: Mapping[str, Any]) -> str | None:
    check = _image_checker()
    if check is None:
        return None
    bad: Mapping[str, str] = check(space, dict(flags))
    if not bad:
        return None
    target = space.target
    image = target.image if isinstance(target, DockerTarget) else "?"
    return f"image {image} rejects " + "; ".join(f"--{k}: {v}" for k, v in sorted(bad.items()))
