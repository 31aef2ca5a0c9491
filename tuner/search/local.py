"""Local moves: trials one or two parameter steps from the top trials, queued between the sampler's
proposals by the search guide (``tuner.search.guide``) after a trial that ran.

* Once the feasibility model is trusted, every other launched trial is a local move
  (``TrialAttr.NEAR``) from the best, second or third trial (``LOCAL_TOP``), the candidate the model
  deems safe. The sampler keeps exploring the whole space; the moves refine what already runs well
  and, being next to configurations that ran, rarely crash. In the second half of the budget three
  moves follow each sampler proposal (``LATE_LOCAL``), each safer (``LATE_SAFE``) and adding none of
  the engine's known hazards that the top trial lacks (the sampler's proposals still try them).
* Before the model is trusted, a *breakthrough* (a best trial ``BREAKTHROUGH`` times the best before
  it: a new region, such as a faster kernel) is followed by ``EXPLOIT`` local moves from it that add
  no known hazard, so the region is measured while the sampler's start-up draws would wander off.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.core.repairs import RepairRule
from tuner.search.feasibility import FeasibilityModel
from tuner.search.learned import launched, learned_constraints
from tuner.search.neighbours import configuration_key, configurations, neighbour
from tuner.space.sample import params_to_flags
from tuner.space.schema import SearchSpace
from tuner.store.attrs import TrialAttr

LOCAL_TOP = (0.5, 0.3, 0.2)  # a local move starts from the best, second or third trial with these odds
LOCAL_CANDIDATES = 40  # neighbours drawn per local move; one the model deems safe is taken
LOCAL_SAFE = 0.3  # crash probability below which a neighbour counts as safe
LATE_LOCAL = 3  # local moves per sampler proposal in the second half of the budget (one before)
LATE_SAFE = 0.15  # second half: a local move must be at least this safe
BREAKTHROUGH = 1.1  # a best this many times the best before it is a new region, exploited at once
EXPLOIT = 2  # local moves launched after a breakthrough before the model is trusted (edge probes count)


def second_half(budget: int | None, trials: Sequence[FrozenTrial]) -> bool:
    """In the second half of the budget (counted in launched trials), when the budget is known."""
    return budget is not None and sum(launched(t) for t in trials) >= budget / 2


class LocalMoves:
    def __init__(
        self,
        space: SearchSpace,
        model: FeasibilityModel,
        rules: Sequence[RepairRule],
        *,
        exploit: bool = True,
        budget: int | None = None,
    ) -> None:
        self.space = space
        self.model = model
        self.hazards = [r for r in rules if r.hazard and r.when]  # their flag values are known to crash
        self.exploit = exploit  # before the model is trusted, local moves after a breakthrough
        self.budget = budget  # the study's trials in total, if known: its second half leans on local moves
        self.maximize = space.objectives[0].direction == "maximize"

    def after_run(
        self, trial: optuna.Trial, ranked: Sequence[FrozenTrial], value: float | None = None
    ) -> int | None:
        """Queue a local move from one of the top trials (``ranked``: best first; ``value``: this trial's
        own, when it ran and is feasible) when it is its turn: the model is trusted, nothing else waits
        in the queue and the last launched trial was the sampler's; before the model is trusted, after
        a breakthrough (:meth:`_breakthrough`). Returns the number of the trial it starts from
        (``None``: none queued)."""
        trials = trial.study.get_trials(deepcopy=False)
        if any(t.state is TrialState.WAITING for t in trials):
            return None
        if not self.model.fit(trials):
            return self._exploit(trial, trials, ranked, value)
        if not ranked or self._local_streak(trial, trials) >= self._local_share(trials):
            return None
        rng = random.Random(trial.number)
        base = rng.choices(ranked[: len(LOCAL_TOP)], weights=LOCAL_TOP[: len(ranked[: len(LOCAL_TOP)])])[0]
        safe: list[tuple[float, dict[str, Any]]] = []
        late = second_half(self.budget, trials)
        limit = LATE_SAFE if late else LOCAL_SAFE
        for candidate in self._candidates(base.params, trials, rng):
            if late and self.adds_hazard(base.params, candidate):
                continue  # refining, late: a known hazard the base lacks is the sampler's to try
            p = self.model.crash_probability(candidate)
            if p is not None and p < limit:
                safe.append((p, candidate))
        if not safe:
            return None
        _, chosen = rng.choice(safe)
        trial.study.enqueue_trial(chosen, user_attrs={TrialAttr.NEAR: base.number})
        return base.number

    def _exploit(
        self,
        trial: optuna.Trial,
        trials: Sequence[FrozenTrial],
        ranked: Sequence[FrozenTrial],
        value: float | None,
    ) -> int | None:
        """Before the model is trusted: a local move from the best trial when it is a breakthrough and
        fewer than ``EXPLOIT`` local moves have launched since; the move adds no known hazard."""
        base = self._breakthrough(trial, ranked, value)
        if base is None:
            return None
        number, params = base
        since = sum(
            1 for t in trials
            if t.number > number and TrialAttr.NEAR in t.user_attrs and (launched(t) or t.number == trial.number)
        )  # fmt: skip
        if since >= EXPLOIT:
            return None
        rng = random.Random(trial.number)
        for candidate in self._candidates(params, trials, rng):
            if not self.adds_hazard(params, candidate):
                trial.study.enqueue_trial(candidate, user_attrs={TrialAttr.NEAR: number})
                return number
        return None

    def _candidates(
        self, params: Mapping[str, Any], trials: Sequence[FrozenTrial], rng: random.Random
    ) -> Iterator[dict[str, Any]]:
        """Up to ``LOCAL_CANDIDATES`` distinct neighbours of ``params`` the study has not seen and no
        constraint excludes (fewer when the space near it runs out)."""
        seen = configurations(self.space, trials)
        learned = learned_constraints(trials)
        for _ in range(LOCAL_CANDIDATES):
            candidate = neighbour(self.space, params, seen, learned, rng)
            if candidate is None:
                return
            yield candidate
            seen = {**seen, configuration_key(self.space, candidate): -1}  # draw another one next time

    def _breakthrough(
        self, trial: optuna.Trial, ranked: Sequence[FrozenTrial], value: float | None
    ) -> tuple[int, dict[str, Any]] | None:
        """The best trial so far (this one included, with its ``value``) as ``(number, params)`` when
        it beats the best trial before it by ``BREAKTHROUGH`` times; ``None`` otherwise, and while
        exploitation is off."""
        if not self.exploit:
            return None
        pool = [(t.number, t.values[0], t.params) for t in ranked]
        if value is not None:
            pool.append((trial.number, value, dict(trial.params)))
        sign = 1.0 if self.maximize else -1.0
        pool.sort(key=lambda e: -sign * e[1])
        if not pool:
            return None
        number, best, params = pool[0]
        before = next((v for n, v, _ in pool[1:] if n < number), None)
        if before is None or before <= 0 or best <= 0:
            return None
        ratio = best / before if self.maximize else before / best
        return (number, params) if ratio >= BREAKTHROUGH else None

    def adds_hazard(self, base: Mapping[str, Any], candidate: Mapping[str, Any]) -> bool:
        """``candidate`` has a flag value the engine's table knows to crash that ``base`` has not."""
        old = dict(params_to_flags(self.space, base))
        new = dict(params_to_flags(self.space, candidate))
        return any(rule.holds(new) and not rule.holds(old) for rule in self.hazards)

    def _local_share(self, trials: Sequence[FrozenTrial]) -> int:
        """Local moves per sampler proposal: one, and ``LATE_LOCAL`` in the second half of the budget."""
        return LATE_LOCAL if second_half(self.budget, trials) else 1

    @staticmethod
    def _local_streak(trial: optuna.Trial, trials: Sequence[FrozenTrial]) -> int:
        """Local moves launched in a row up to and including ``trial``."""
        streak = int(TrialAttr.NEAR in trial.user_attrs)
        if not streak:
            return 0
        for t in sorted(trials, key=lambda t: -t.number):
            if t.number >= trial.number or not launched(t):
                continue
            if TrialAttr.NEAR not in t.user_attrs:
                break
            streak += 1
        return streak
