"""Does tonight's engine still accept a configuration? Checked before anything is launched.

Engines drop and rename flags between releases (SGLang 0.5.20 removed ``--cuda-graph-max-bs``).
A configuration recorded under an older version may be rejected by the version in the space
file now; the nightly job drops such configurations with a note instead of failing.

Sources, in order: the engine's version flag table (``get_engine(...).flag_specs(version)``:
names and choices), then, for Docker targets whose engine has an image probe (SGLang), what the image's
own ``--help`` accepts (:class:`tuner.launch.base.ImageInfo`, from the launcher's image check).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuner.core.errors import UnknownFlagError
from tuner.engines import get_engine
from tuner.launch.base import ImageInfo
from tuner.space.schema import SearchSpace


def rejection(space: SearchSpace, flags: Mapping[str, Any], image: ImageInfo | None = None) -> str | None:
    """Why ``space``'s engine version (or ``image``, when given) rejects ``flags``; None when both accept them."""
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
    return None if image is None else image_rejection(image, flags)


def image_rejection(image: ImageInfo, flags: Mapping[str, Any]) -> str | None:
    """Why the engine in ``image`` rejects ``flags`` (a flag its help lacks, a choice it does not list)."""
    bad: dict[str, str] = {}
    for name, value in flags.items():
        if value is False or value is None:
            continue
        flag = name.lstrip("-")
        if flag not in image.flags:
            bad[flag] = "not in its --help"
        elif (
            (choices := image.choices.get(flag)) and not isinstance(value, bool) and str(value) not in choices
        ):
            bad[flag] = f"{value} is not one of {', '.join(choices)}"
    if not bad:
        return None
    where = f"image {image.image} ({image.engine} {image.engine_version})"
    return f"{where} rejects " + "; ".join(f"--{k}: {v}" for k, v in sorted(bad.items()))
