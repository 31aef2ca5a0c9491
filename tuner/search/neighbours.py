"""A configuration's identity and its neighbours: what the search guide's duplicates, local moves and
breakthrough moves are made of.

A configuration is the flag vector its server would run with (:func:`configuration_key`), so two
parameter sets that differ only in an inactive parameter are one configuration. A neighbour is one or
two parameter steps away (the next grid points of a number, another choice), inside the space, outside
its known and learned constraints, and not yet in the study.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tuner.search.learned import LearnedConstraint, covering
from tuner.space.constraints import violated_constraint
from tuner.space.sample import domain_contains, is_active, params_to_flags
from tuner.space.schema import BoolParam, CategoricalParam, FloatParam, IntParam, SearchSpace

NEIGHBOUR_TRIES = 200


def configuration_key(space: SearchSpace, params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A configuration's identity: the flags its server would run with."""
    return tuple(sorted((k, repr(v)) for k, v in params_to_flags(space, params).items()))


def whole_params(t: FrozenTrial) -> dict[str, Any]:
    """A trial's whole configuration, also while it is queued or being sampled (its fixed parameters)."""
    return {**t.system_attrs.get("fixed_params", {}), **t.params}


def configurations(
    space: SearchSpace, trials: Sequence[FrozenTrial], *, exclude: int | None = None
) -> dict[Any, int]:
    """Every configuration the study has measured, crashed, pruned, is running or has queued -> the
    first trial that has it. FAIL trials (interrupted, duplicates) measured nothing."""
    out: dict[Any, int] = {}
    for t in trials:
        if t.number == exclude or t.state is TrialState.FAIL:
            continue
        params = whole_params(t)
        if params:
            out.setdefault(configuration_key(space, params), t.number)
    return out


def neighbour(
    space: SearchSpace,
    params: Mapping[str, Any],
    seen: Mapping[Any, int],
    learned: list[LearnedConstraint],
    rng: random.Random,
) -> dict[str, Any] | None:
    """A configuration one or two parameter moves from ``params`` that the study has not seen and no
    constraint excludes; ``None`` when none is found (the space near it is exhausted)."""
    names = [n for n in space.parameters if n in params]
    for attempt in range(NEIGHBOUR_TRIES):
        candidate = dict(params)
        for name in rng.sample(names, k=min(len(names), 1 + attempt // (NEIGHBOUR_TRIES // 2))):
            candidate[name] = _step(space.parameters[name], candidate[name], rng)
        candidate = _complete(space, candidate, params, rng)
        if allowed(space, candidate, seen, learned):
            return candidate
    return None


def allowed(
    space: SearchSpace, params: Mapping[str, Any], seen: Mapping[Any, int], learned: list[LearnedConstraint]
) -> bool:
    """Not seen yet, outside every learned constraint and the space's own constraints."""
    return (
        configuration_key(space, params) not in seen
        and covering(learned, params) is None
        and violated_constraint(space, dict(params_to_flags(space, params))) is None
    )


def _complete(
    space: SearchSpace, candidate: dict[str, Any], base: Mapping[str, Any], rng: random.Random
) -> dict[str, Any]:
    """Drop parameters the move made inactive; give newly active ones a value (the base's, or random)."""
    for name, p in space.parameters.items():
        if is_active(space, name, candidate) and name not in candidate:
            candidate[name] = base[name] if name in base else _random_value(p, rng)
    return {k: v for k, v in candidate.items() if is_active(space, k, candidate)}


def _step(param: object, value: Any, rng: random.Random) -> Any:
    """Another value of ``param`` near ``value``: the next grid points for numbers, another choice else."""
    if isinstance(param, BoolParam):
        return not value
    if isinstance(param, CategoricalParam):
        others = [c for c in param.choices if c != value]
        return rng.choice(others) if others else value
    if isinstance(param, IntParam | FloatParam):
        step = param.step or (1 if isinstance(param, IntParam) else (param.high - param.low) / 20)
        moved = value + rng.choice((-3, -2, -1, 1, 2, 3)) * step
        moved = min(param.high, max(param.low, moved))
        if isinstance(param, IntParam):
            return round(moved)
        decimals = 6
        return round(moved, decimals) if domain_contains(param, round(moved, decimals)) else value
    return value


def _random_value(param: object, rng: random.Random) -> Any:
    if isinstance(param, BoolParam):
        return rng.random() < 0.5
    if isinstance(param, CategoricalParam):
        return rng.choice(param.choices)
    if isinstance(param, IntParam):
        return param.low + param.step * rng.randrange((param.high - param.low) // param.step + 1)
    if isinstance(param, FloatParam):
        if param.step is None:
            return rng.uniform(param.low, param.high)
        return round(
            param.low + param.step * rng.randrange(int((param.high - param.low) / param.step + 1e-9) + 1), 6
        )
    raise TypeError(type(param))
