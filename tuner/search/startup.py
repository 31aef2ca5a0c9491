"""The sampler's start-up draws, spread over every choice before any choice repeats.

TPE draws its first ``n_startup`` trials at random. On a space of a few categorical levers that leaves
a lot to chance: with the space's seed trials all on one kernel, a random start-up can spend five
launches (and their crashes and repairs) on that kernel again before it tries the other one, while a
grid's first tier covers every kernel at once. :class:`CoveringStart` keeps TPE but answers its
start-up draws of a categorical (or boolean) parameter with a value the study has proposed least
often so far - a space-filling design over the choices, as a Latin hypercube is over numbers - and
leaves numbers to TPE's own random draws.

Proposed counts over the trials that chose their own values: the seed trials, warm starts and the
sampler's proposals. Trials derived from another one (repairs, local moves, a duplicate's
replacement, re-runs) inherit their base's values and do not count: a repair that turns every hazard
off would otherwise push the next draws towards the hazards. Ties go to a draw seeded by the sampler's
seed and the trial's number, so a run is reproducible and a resumed study draws as it would have.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.search.neighbours import whole_params
from tuner.store.attrs import TrialAttr

# trials made from another one (they inherit its values)
DERIVED = (TrialAttr.REPAIR, TrialAttr.NEAR, TrialAttr.NEIGHBOUR_OF, TrialAttr.RERUN_OF)
STARTUP = 10  # TPE's start-up trials (finished: complete or pruned, as TPE counts them)


class CoveringStart(optuna.samplers.BaseSampler):
    """``sampler`` (TPE), whose start-up draws of a choice take a least-proposed value."""

    def __init__(
        self, sampler: optuna.samplers.BaseSampler, *, n_startup: int = STARTUP, seed: int | None = None
    ) -> None:
        self._sampler = sampler
        self._n_startup = n_startup
        self._seed = random.randrange(2**32) if seed is None else seed

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        if isinstance(param_distribution, CategoricalDistribution):
            trials = study.get_trials(deepcopy=False)
            if sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) < self._n_startup:
                return self._least_proposed(trials, trial.number, param_name, param_distribution.choices)
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def _least_proposed(
        self, trials: Sequence[FrozenTrial], number: int, name: str, choices: Sequence[Any]
    ) -> Any:
        counts = proposed_counts(trials, name, choices, exclude=number)
        fewest = min(counts)
        rng = random.Random(self._seed * 1_000_003 + number * 7919 + zlib.crc32(name.encode()))
        return choices[rng.choice([i for i, c in enumerate(counts) if c == fewest])]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sampler.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()
        self._seed = random.randrange(2**32)


def proposed_counts(
    trials: Sequence[FrozenTrial], name: str, choices: Sequence[Any], *, exclude: int | None = None
) -> list[int]:
    """How often each of ``choices`` was proposed for ``name`` by a trial that chose its own values
    (unmeasured duplicates, FAIL, excluded: nothing was measured)."""
    counts = [0] * len(choices)
    for t in trials:
        if t.number == exclude or t.state is TrialState.FAIL or any(a in t.user_attrs for a in DERIVED):
            continue
        params = whole_params(t)
        if name not in params:
            continue
        for i, c in enumerate(choices):
            if type(params[name]) is type(c) and params[name] == c:
                counts[i] += 1
                break
    return counts
