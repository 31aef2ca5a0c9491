"""From a search space to a concrete configuration.

:func:`sample_params` is the only function here that sees an Optuna trial (the runner passes it
in); everything else works on plain parameter mappings, so seeds, exports and the nightly job
render flags the same way as sampled trials.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

from tuner.engines.base import FlagVector
from tuner.space.schema import (
    BoolParam,
    CategoricalParam,
    ChoiceValue,
    FloatParam,
    IntParam,
    SearchSpace,
    SeedTrial,
)


class SuggestsParams(Protocol):
    """The part of ``optuna.Trial`` sampling needs."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


def is_active(space: SearchSpace, name: str, params: Mapping[str, Any]) -> bool:
    """Whether parameter ``name``'s ``when`` conditions hold for ``params`` (recursively)."""
    for dep, want in (space.parameters[name].when or {}).items():
        if dep not in params or not is_active(space, dep, params):
            return False
        allowed = want if isinstance(want, list) else [want]
        if params[dep] not in allowed:
            return False
    return True


def is_complete(space: SearchSpace, params: Mapping[str, Any]) -> bool:
    """Whether ``params`` gives every parameter that is active under it a value: a whole configuration,
    not the first values of one whose sampling was cut short."""
    return all(name in params for name in space.parameters if is_active(space, name, params))


def sample_params(space: SearchSpace, trial: SuggestsParams) -> dict[str, ChoiceValue]:
    """Ask ``trial`` for every active parameter, in file order (conditions refer to earlier ones)."""
    params: dict[str, ChoiceValue] = {}
    for name, p in space.parameters.items():
        if not is_active(space, name, params):
            continue
        if isinstance(p, BoolParam):
            params[name] = trial.suggest_categorical(name, [False, True])
        elif isinstance(p, CategoricalParam):
            params[name] = trial.suggest_categorical(name, p.choices)
        elif isinstance(p, IntParam):
            params[name] = trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, FloatParam):
            params[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return params


def params_to_flags(space: SearchSpace, params: Mapping[str, Any]) -> FlagVector:
    """Fixed flags plus the active parameters, keyed by flag name (``None`` = engine default, omitted)."""
    flags: dict[str, Any] = dict(space.fixed_flags)
    for name, value in params.items():
        if name in space.parameters and is_active(space, name, params) and value is not None:
            flags[space.flag_of(name)] = on_grid(space.parameters[name], value)
    return flags


def on_grid(param: object, value: Any) -> Any:
    """A stepped float as the step writes it (Optuna hands back 0.7799999999999999 for 0.78)."""
    if isinstance(param, FloatParam) and param.step is not None and isinstance(value, float):
        decimals = max(0, -Decimal(str(param.step)).as_tuple().exponent)  # type: ignore[operator]
        return round(value, decimals)
    return value


def domain_contains(param: object, value: object) -> bool:
    """Whether ``value`` is a value ``param`` can take."""
    if isinstance(param, BoolParam):
        return isinstance(value, bool)
    if isinstance(param, CategoricalParam):
        return value in param.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(param, IntParam):
        return (
            float(value).is_integer()
            and param.low <= value <= param.high
            and (value - param.low) % param.step == 0
        )
    if isinstance(param, FloatParam):
        if not param.low <= value <= param.high:
            return False
        if param.step is None:
            return True
        k = (value - param.low) / param.step
        return math.isclose(k, round(k), abs_tol=1e-6)
    return False


MAX_WARM_START = 1000  # warm-start points of a space in all (each is a server start)


def warm_start_points(space: SearchSpace) -> list[tuple[str, dict[str, Any]]]:
    """The ``warm_start`` tiers as ``(name, params)``: each tier's value product over the first seed.

    Parameters a point makes inactive are dropped; ones it makes active without a value are left for
    the sampler to fill.
    """
    base: dict[str, Any] = dict(space.seed_trials[0].params) if space.seed_trials else {}
    points: list[tuple[str, dict[str, Any]]] = []
    for tier in space.warm_start:
        names = list(tier)
        for values in itertools.product(*(tier[n] for n in names)):
            params = {**base, **dict(zip(names, values, strict=True))}
            params = {k: v for k, v in params.items() if is_active(space, k, params)}
            points.append(
                ("warm:" + ",".join(f"{n}={v}" for n, v in zip(names, values, strict=True)), params)
            )
    return points


def seeds_to_enqueue(space: SearchSpace, *, all_seeds: bool = True) -> list[SeedTrial]:
    """The seed trials a new study queues, in order: with ``quality:`` the reference first (every later
    trial's answers are compared with its answers, so a trial finished before it would go unjudged) and
    even without ``all_seeds`` (``--no-seed-trials``), since the gate needs it.
    """
    ref = space.quality.reference if space.quality is not None else None
    first = [s for s in space.seed_trials if s.name == ref]
    return first + [s for s in space.seed_trials if s.name != ref] if all_seeds else first
