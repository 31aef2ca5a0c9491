"""The deployed configuration: a YAML file people and deploy scripts read, plus database history.

The file (default ``storage/deployed/<study>.yaml``) holds what :func:`tuner.report.export.flags_yaml`
writes (engine, engine_version, model, flags) plus ``params`` (the search-space parameters, so
the configuration can be enqueued as a trial), ``study``, ``trial_number``, ``reason`` and
``deployed_at``. Every deployment is also a :class:`tuner.store.models.Deployment` row; its
``metrics`` hold the repeats that justified it, the reference a later night compares against.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuner.core.errors import ConfigError
from tuner.report.export import flags_yaml
from tuner.space.sample import domain_contains, is_active, params_to_flags
from tuner.space.schema import BoolParam, CategoricalParam, SearchSpace


@dataclass(frozen=True)
class DeployedConfig:
    """One configuration in service."""

    flags: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    study: str | None = None
    trial_number: int | None = None
    reason: str = ""
    deployed_at: str | None = None
    engine_version: str | None = None  # the version the file was written for, when it says


def canonical_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Flags as they reach the command line: switches set False and ``None`` values dropped.

    Two flag vectors are the same configuration when their canonical forms are equal.
    """
    return {k: v for k, v in sorted(flags.items()) if v is not False and v is not None}


def same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two flag vectors launch the same server."""
    return canonical_flags(a) == canonical_flags(b)


def read_deployed(path: Path) -> DeployedConfig | None:
    """The deployed file, or None if there is none. A malformed file is a ConfigError naming it."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML ({e}); fix or delete it", source=str(path)) from e
    if not isinstance(raw, dict) or not isinstance(raw.get("flags"), dict):
        raise ConfigError(
            "needs a mapping with a `flags:` mapping (as written by the nightly job)", source=str(path)
        )
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError("`params` must be a mapping", source=str(path), field="params")
    return DeployedConfig(
        flags=dict(raw["flags"]),
        params=dict(params),
        study=raw.get("study"),
        trial_number=raw.get("trial_number"),
        reason=str(raw.get("reason", "")),
        deployed_at=str(raw["deployed_at"]) if raw.get("deployed_at") else None,
        engine_version=str(raw["engine_version"]) if raw.get("engine_version") else None,
    )


def write_deployed(path: Path, space: SearchSpace, config: DeployedConfig, *, header: str = "") -> None:
    """Write the deployed file atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {
        "params": config.params,
        "study": config.study,
        "trial_number": config.trial_number,
        "reason": config.reason,
        "deployed_at": config.deployed_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    text = flags_yaml(space, config.flags, header=header) + yaml.safe_dump(extra, sort_keys=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def params_from_flags(space: SearchSpace, flags: Mapping[str, Any]) -> dict[str, Any] | None:
    """Recover search-space parameters from a flag vector (a hand-written deployed file has none).

    An absent switch is ``False``, an absent value flag is ``None`` when ``None`` is a choice.
    Returns None when some active parameter cannot be recovered, a value is outside the space, or
    the flags hold something the space cannot express.
    """
    params: dict[str, Any] = {}
    for name, p in space.parameters.items():
        if not is_active(space, name, params):
            continue
        flag = space.flag_of(name)
        if flag in flags:
            value = flags[flag]
        elif isinstance(p, BoolParam):
            value = False
        elif isinstance(p, CategoricalParam) and None in p.choices:
            value = None
        else:
            return None
        if not domain_contains(p, value):
            return None
        params[name] = value
    # flags outside the space (a hand edit) would be lost when the params are enqueued as a trial
    return params if same_config(params_to_flags(space, params), flags) else None
