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

Two more rules make the start-up's proposals run rather than crash (``careful``, on in the study CLI):

* **Known hazards are not stacked.** A value the engine's repair table names as a known cause of crashes
  (``tuner.space.repair.hazard_choices``: an FP8 KV cache, CUDA graphs, torch.compile, two-batch
  overlap... on SGLang) is not what a start-up draw covers: covering every untried value at once put
  all of them into the first proposal after the seed trials, which crashed whenever any one of them
  failed on the hardware (in every seed on the simulated RTX 5090), and a crash of five new values at
  once says nothing about which one. The hazards come one at a time: local moves from the top trials
  add them where the feasibility model deems them safe, and TPE proposes them after the start-up.
* **Numbers fill the widest gap.** A start-up draw of a number lands in the middle half of the widest
  gap that the values proposed so far leave in its range (the range's ends count as proposed): a
  space-filling design, as the choices' covering is, instead of TPE's uniform draw. After seed trials
  at a memory fraction of 0.85 and 0.87 in [0.50, 0.95], the next proposal tries 0.59-0.76, not an
  extreme that is as likely as not to crash for too much or too little memory. A stepped or integer
  range keeps its grid; a log range is split in log space.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from tuner.search.neighbours import whole_params
from tuner.space.repair import among
from tuner.store.attrs import TrialAttr

# trials made from another one (they inherit its values)
DERIVED = (TrialAttr.REPAIR, TrialAttr.NEAR, TrialAttr.NEIGHBOUR_OF, TrialAttr.RERUN_OF)
STARTUP = 10  # TPE's start-up trials (finished: complete or pruned, as TPE counts them)


class CoveringStart(optuna.samplers.BaseSampler):
    """``sampler`` (TPE), whose start-up draws of a choice take a least-proposed value."""

    def __init__(
        self,
        sampler: optuna.samplers.BaseSampler,
        *,
        n_startup: int = STARTUP,
        seed: int | None = None,
        hazards: Mapping[str, Sequence[Any]] | None = None,
        gaps: bool = False,
    ) -> None:
        self._sampler = sampler
        self._n_startup = n_startup
        self._seed = random.randrange(2**32) if seed is None else seed
        self._hazards = dict(hazards or {})  # parameter -> its values a start-up draw does not cover
        self._gaps = gaps  # numbers: a draw inside the widest gap left by the proposed values

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
        dist = param_distribution
        ours = isinstance(dist, CategoricalDistribution) or (
            self._gaps and isinstance(dist, FloatDistribution | IntDistribution)
        )
        if ours:
            trials = study.get_trials(deepcopy=False)
            if sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) < self._n_startup:
                if isinstance(dist, CategoricalDistribution):
                    return self._least_proposed(trials, trial.number, param_name, dist.choices)
                if isinstance(dist, FloatDistribution | IntDistribution):
                    values = proposed_values(trials, param_name, exclude=trial.number)
                    return widest_gap_draw(dist, values, self._rng(trial.number, param_name))
        return self._sampler.sample_independent(study, trial, param_name, dist)

    def _rng(self, number: int, name: str) -> random.Random:
        return random.Random(self._seed * 1_000_003 + number * 7919 + zlib.crc32(name.encode()))

    def _least_proposed(
        self, trials: Sequence[FrozenTrial], number: int, name: str, choices: Sequence[Any]
    ) -> Any:
        counts = proposed_counts(trials, name, choices, exclude=number)
        hazards = self._hazards.get(name, ())
        safe = [i for i, c in enumerate(choices) if not among(c, hazards)]
        pool = safe or list(range(len(choices)))
        fewest = min(counts[i] for i in pool)
        return choices[self._rng(number, name).choice([i for i in pool if counts[i] == fewest])]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sampler.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()
        self._seed = random.randrange(2**32)


def widest_gap_draw(
    dist: FloatDistribution | IntDistribution, values: Sequence[float], rng: random.Random
) -> float | int:
    """A value of ``dist`` in the middle half of the widest gap that ``values`` leave in its range (the
    ends count as values; ties between gaps go to ``rng``), snapped onto the range's grid.

    >>> widest_gap_draw(FloatDistribution(0.5, 0.95, step=0.01), [0.85, 0.87], random.Random(0))
    0.72
    """
    log = dist.log

    def scale(v: float) -> float:
        return math.log(v) if log else v

    inside = sorted({scale(v) for v in values if dist.low <= v <= dist.high})
    points = [scale(dist.low), *inside, scale(dist.high)]
    gaps = [(b - a, a, b) for a, b in pairwise(points)]
    widest = max(g[0] for g in gaps)
    _, a, b = rng.choice([g for g in gaps if g[0] >= widest * (1 - 1e-9)])
    x = a + (b - a) * (0.25 + 0.5 * rng.random())
    x = math.exp(x) if log else x
    step = dist.step
    if isinstance(dist, IntDistribution):
        step = step or 1
        return int(min(dist.high, max(dist.low, dist.low + round((x - dist.low) / step) * step)))
    if step is not None:
        x = round(dist.low + round((x - dist.low) / step) * step, 10)
    return float(min(dist.high, max(dist.low, x)))


def proposed_values(trials: Sequence[FrozenTrial], name: str, *, exclude: int | None = None) -> list[float]:
    """The numbers proposed for ``name`` by the trials that chose their own values (as
    :func:`proposed_counts` counts them)."""
    out = []
    for t in _own_choices(trials, exclude):
        v = whole_params(t).get(name)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out.append(float(v))
    return out


def _own_choices(trials: Sequence[FrozenTrial], exclude: int | None) -> list[FrozenTrial]:
    """The trials that chose their own values and were measured (or are being): seeds, warm starts, the
    sampler's proposals; not unmeasured duplicates (FAIL) nor trials derived from another one."""
    return [
        t
        for t in trials
        if t.number != exclude
        and t.state is not TrialState.FAIL
        and not any(a in t.user_attrs for a in DERIVED)
    ]


def proposed_counts(
    trials: Sequence[FrozenTrial], name: str, choices: Sequence[Any], *, exclude: int | None = None
) -> list[int]:
    """How often each of ``choices`` was proposed for ``name`` by a trial that chose its own values
    (unmeasured duplicates, FAIL, excluded: nothing was measured)."""
    counts = [0] * len(choices)
    for t in _own_choices(trials, exclude):
        params = whole_params(t)
        if name not in params:
            continue
        for i, c in enumerate(choices):
            if type(params[name]) is type(c) and params[name] == c:
                counts[i] += 1
                break
    return counts
