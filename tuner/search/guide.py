"""The search's memory between trials: no configuration twice, no launch into a learned crash, and a
repaired neighbour after a crash whose evidence says how to fix it.

:class:`SearchGuide` is asked twice per trial by the trial runner (``tuner.trial.objective``):

* :meth:`SearchGuide.screen` before launch: a proposal equal to a configuration the study already
  has (measured, crashed, running on another worker, or queued) is a *duplicate* - it is not measured
  and an unmeasured neighbour is queued in its place; one inside a learned constraint's region
  (``tuner.search.learned``) is pruned without starting a server. Enqueued trials (seeds, warm
  starts, nightly re-measurements, repairs) are deliberate and never screened out as duplicates.
* :meth:`SearchGuide.after_crash`: the engine's repair table (``tuner/engines/<engine>.py``) maps the
  failure and its evidence to a neighbour inside the space (``tuner.space.repair``); the first one the
  study has not seen is queued with ``TrialAttr.REPAIR``; a numeric move lands inside the gap that
  the configuration's siblings leave (``tuner.search.bracket``), so repairs bisect towards the edge.
  A configuration can crash for several reasons
  at once (an FP8 KV cache *and* graphs on a card where both fail), so a repair that crashes for
  another reason is repaired again, up to ``MAX_REPAIR_CHAIN`` repairs in a row, never with a rule that
  already failed to cure that kind of crash in the chain. A chain's first repair also turns off every
  other hazard the table knows in that configuration (``tuner.space.repair.stripped``: its FP8 KV
  cache, graphs, overlap...), so the configuration's core runs after one crash, not one crash per
  hazard. A crash-prone region is so probed at its safe edge instead of abandoned.
* :meth:`SearchGuide.edge_probe`: a repair that ran after moving a number away from the crash is
  followed by the same configuration half-way back: the edge (the most memory that still starts) is
  where the best value usually lies.
* :meth:`SearchGuide.after_run`: once the feasibility model is trusted, every other launched trial is
  a *local move* (``TrialAttr.NEAR``): one or two parameters changed from one of the top trials,
  the candidate the model deems safe, queued between the sampler's proposals. The sampler keeps
  exploring the whole space; the moves refine what already runs well and, being next to
  configurations that ran, rarely crash. In the second half of the budget a move adds none of the
  engine's known hazards the top trial lacks (the sampler's proposals still try them). Before the model is trusted, a *breakthrough* (a best trial
  ``BREAKTHROUGH`` times the best before it: a new region, such as a faster kernel) is followed by
  ``EXPLOIT`` local moves from it that add none of the engine's known hazards, so the region is
  measured while the sampler's start-up draws would wander off.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.core.failures import Failure
from tuner.engines import get_engine
from tuner.search.bracket import bracketed
from tuner.search.feasibility import EXPLORE, VETO, FeasibilityModel
from tuner.search.learned import LearnedConstraint, covering, launched, learned_constraints
from tuner.space.constraints import violated_constraint
from tuner.space.repair import Repair, repairs_for, stripped
from tuner.space.sample import domain_contains, is_active, on_grid, params_to_flags
from tuner.space.schema import BoolParam, CategoricalParam, FloatParam, IntParam, SearchSpace
from tuner.store.attrs import TrialAttr

DELIBERATE = (
    TrialAttr.SEED_NAME, TrialAttr.WARM_START, TrialAttr.REPAIR, TrialAttr.NEIGHBOUR_OF, TrialAttr.RERUN_OF,
    TrialAttr.NEAR,
)  # fmt: skip
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
NEIGHBOUR_TRIES = 200
MAX_REPAIR_CHAIN = 5  # repairs in a row, each after the previous one crashed for another reason
LOCAL_TOP = (0.5, 0.3, 0.2)  # a local move starts from the best, second or third trial with these odds
LOCAL_CANDIDATES = 40  # neighbours drawn per local move; one the model deems safe is taken
LOCAL_SAFE = 0.3  # crash probability below which a neighbour counts as safe
LATE_LOCAL = 3  # local moves per sampler proposal in the second half of the budget (one before)
LATE_VETO = 0.1  # second half: skip a sampler's proposal from this crash probability on, none launched anyway
LATE_SAFE = 0.15  # second half: a local move must be at least this safe
BREAKTHROUGH = 1.1  # a best this many times the best before it is a new region, exploited at once
EXPLOIT = 2  # local moves launched after a breakthrough before the model is trusted (edge probes count)


@dataclass(frozen=True)
class Screened:
    """Why a proposal is not launched: it repeats a trial, or a learned constraint covers it."""

    duplicate_of: int | None = None
    learned: LearnedConstraint | None = None
    neighbour: dict[str, Any] | None = None  # queued in place of a duplicate (None: none left)
    crash_probability: float | None = None  # the feasibility model's, when it vetoed the launch
    launched: int = 0  # how many launched trials the model learned from
    queued: bool = False  # the duplicate was queued (a repair, a re-run), not the sampler's proposal

    def reason(self) -> str:
        if self.learned is not None:
            return f"learned: {self.learned.condition()} -> {self.learned.kind}"
        return (f"predicted crash: p={self.crash_probability:.2f} from a random forest over "
                f"{self.launched} launched trials")  # fmt: skip


def configuration_key(space: SearchSpace, params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A configuration's identity: the flags its server would run with."""
    return tuple(sorted((k, repr(v)) for k, v in params_to_flags(space, params).items()))


def configurations(
    space: SearchSpace, trials: Sequence[FrozenTrial], *, exclude: int | None = None
) -> dict[Any, int]:
    """Every configuration the study has measured, crashed, pruned, is running or has queued -> the
    first trial that has it. FAIL trials (interrupted, duplicates) measured nothing."""
    out: dict[Any, int] = {}
    for t in trials:
        if t.number == exclude or t.state is TrialState.FAIL:
            continue
        # a queued trial's whole configuration, even while it is being sampled
        params = {**t.system_attrs.get("fixed_params", {}), **t.params}
        if params:
            out.setdefault(configuration_key(space, params), t.number)
    return out


class SearchGuide:
    def __init__(
        self,
        space: SearchSpace,
        *,
        max_repair_depth: int = MAX_REPAIR_CHAIN,
        feasibility: bool = True,
        bisect: bool = True,
        local: bool = True,
        strip: bool = True,
        edge: bool = True,
        exploit: bool = True,
        budget: int | None = None,
    ) -> None:
        self.space = space
        self.rules = get_engine(space.engine).repairs
        self.max_repair_depth = max_repair_depth
        self.model = FeasibilityModel(space) if feasibility else None
        self.bisect = bisect  # repairs land inside the gap their siblings leave (tuner.search.bracket)
        self.last_crash_probability: float | None = None  # the model's, for the proposal last screened
        self.local = local and self.model is not None  # local moves between the sampler's proposals
        self.budget = budget  # the study's trials in total, if known: its second half leans on local moves
        self.strip = strip  # a chain's first repair also turns every other known hazard off
        self.edge = edge  # a repair that ran is followed by a probe half-way back towards the crash
        self.exploit = exploit and local  # before the model is trusted, local moves after a breakthrough
        self.maximize = space.objectives[0].direction == "maximize"
        self.hazards = [r for r in self.rules if r.hazard and r.when]  # their flag values are known to crash

    # --- before launch --------------------------------------------------------------------------
    def screen(self, trial: optuna.Trial, params: Mapping[str, Any]) -> Screened | None:
        """``None`` to go ahead; otherwise why not (a queued neighbour replaces a duplicate)."""
        self.last_crash_probability = None
        trials = trial.study.get_trials(deepcopy=False)
        deliberate = any(a in trial.user_attrs for a in DELIBERATE)
        rng = random.Random(trial.number)
        learned = learned_constraints(trials)
        if not deliberate:
            seen = configurations(self.space, trials, exclude=trial.number)
            first = seen.get(configuration_key(self.space, params))
            if first is not None:
                neighbour = self.neighbour(params, seen, learned, rng)
                if neighbour is not None:
                    trial.study.enqueue_trial(neighbour, user_attrs={TrialAttr.NEIGHBOUR_OF: first})
                return Screened(duplicate_of=first, neighbour=neighbour)
        elif TrialAttr.WARM_START not in trial.user_attrs:
            # A queued configuration was new when queued, but copies of it can pile up: a retry of a
            # dead worker's trial (Optuna's heartbeat callback) beside the resume's re-queue, a repair
            # queued again after its crash was re-run. Whatever finished first counts; the rest are not
            # measured again (nor replaced: the sampler did not propose them). The nightly job's warm
            # starts are repeats on purpose (tonight's machine may differ) and always run.
            measured = [t for t in trials if t.state in FINISHED]
            first = configurations(self.space, measured, exclude=trial.number).get(
                configuration_key(self.space, params)
            )
            if first is not None:
                return Screened(duplicate_of=first, queued=True)
        hit = covering(learned, params)
        if hit is not None:
            return Screened(learned=hit)
        if deliberate or self.model is None or not self.model.fit(trials):
            return None
        p = self.last_crash_probability = self.model.crash_probability(params)
        if p is None:
            return None
        # early on, a share of would-be vetoes runs (the model learns where it is wrong); late in the
        # budget the local moves carry the search and a doubtful proposal is not worth a crash
        veto = p >= LATE_VETO if self._late(trials) else p >= VETO and rng.random() >= EXPLORE
        if veto:
            return Screened(crash_probability=p, launched=self.model.launched)
        return None

    def neighbour(
        self,
        params: Mapping[str, Any],
        seen: Mapping[Any, int],
        learned: list[LearnedConstraint],
        rng: random.Random,
    ) -> dict[str, Any] | None:
        """A configuration one or two parameter moves from ``params`` that the study has not seen and no
        constraint excludes; ``None`` when none is found (the space near it is exhausted)."""
        names = [n for n in self.space.parameters if n in params]
        for attempt in range(NEIGHBOUR_TRIES):
            candidate = dict(params)
            for name in rng.sample(names, k=min(len(names), 1 + attempt // (NEIGHBOUR_TRIES // 2))):
                candidate[name] = _step(self.space.parameters[name], candidate[name], rng)
            candidate = self._complete(candidate, params, rng)
            if (
                configuration_key(self.space, candidate) not in seen
                and covering(learned, candidate) is None
                and violated_constraint(self.space, dict(params_to_flags(self.space, candidate))) is None
            ):
                return candidate
        return None

    def _complete(
        self, candidate: dict[str, Any], base: Mapping[str, Any], rng: random.Random
    ) -> dict[str, Any]:
        """Drop parameters the move made inactive; give newly active ones a value (the base's, or random)."""
        for name, p in self.space.parameters.items():
            if is_active(self.space, name, candidate) and name not in candidate:
                candidate[name] = base[name] if name in base else _random_value(p, rng)
        return {k: v for k, v in candidate.items() if is_active(self.space, k, candidate)}

    # --- after a trial that ran -----------------------------------------------------------------
    def edge_probe(self, trial: optuna.Trial) -> tuple[str, Any, Any] | None:
        """After a repair that ran and moved a number (``mem-fraction-static 0.67 -> 0.60`` after a CUDA
        OOM): queue the same configuration half-way back towards the crash's value, once. The repair
        stepped far enough to be safe; the best value usually lies at the edge (the most memory that
        still starts), and a stripped repair also changed what may have caused the crash, so the
        crash's own value may run now. If the probe crashes, its repair bisects between the two
        (``tuner.search.bracket``). Returns ``(param, repaired value, probed value)`` (``None``: none).
        """
        repair = trial.user_attrs.get(TrialAttr.REPAIR)
        if not self.edge or not isinstance(repair, dict) or not repair.get("changes"):
            return None
        first = repair["changes"][0]
        param = self.space.parameters.get(first["param"])
        if first["action"] not in ("lower", "raise") or not isinstance(param, IntParam | FloatParam):
            return None
        old, new = first["old"], first["new"]
        if not isinstance(old, int | float) or not isinstance(new, int | float):
            return None
        step = param.step or (1 if isinstance(param, IntParam) else (param.high - param.low) / 20)
        k = round((old - new) / step / 2)
        probe = on_grid(param, new + k * step)
        if isinstance(param, IntParam):
            probe = round(probe)
        if k == 0 or probe == new or not domain_contains(param, probe):
            return None
        candidate = {**trial.params, first["param"]: probe}
        trials = trial.study.get_trials(deepcopy=False)
        if not self._allowed(candidate, configurations(self.space, trials), learned_constraints(trials)):
            return None
        trial.study.enqueue_trial(candidate, user_attrs={TrialAttr.NEAR: trial.number})
        return first["param"], new, probe

    def after_run(
        self, trial: optuna.Trial, ranked: Sequence[FrozenTrial], value: float | None = None
    ) -> int | None:
        """Queue a local move from one of the top trials (``ranked``: best first; ``value``: this trial's
        own, when it ran and is feasible) when it is its turn: the model is trusted, nothing else waits
        in the queue and the last launched trial was the sampler's; before the model is trusted, after
        a breakthrough (:meth:`_breakthrough`). Returns the number of the trial it starts from
        (``None``: none queued)."""
        if not self.local:
            return None
        trials = trial.study.get_trials(deepcopy=False)
        if any(t.state is TrialState.WAITING for t in trials) or self.model is None:
            return None
        if not self.model.fit(trials):
            return self._exploit(trial, trials, ranked, value)
        if not ranked or self._local_streak(trial, trials) >= self._local_share(trials):
            return None
        rng = random.Random(trial.number)
        base = rng.choices(ranked[: len(LOCAL_TOP)], weights=LOCAL_TOP[: len(ranked[: len(LOCAL_TOP)])])[0]
        safe: list[tuple[float, dict[str, Any]]] = []
        late = self._late(trials)
        limit = LATE_SAFE if late else LOCAL_SAFE
        for candidate in self._candidates(base.params, trials, rng):
            if late and self._adds_hazard(base.params, candidate):
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
            if not self._adds_hazard(params, candidate):
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
            candidate = self.neighbour(params, seen, learned, rng)
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

    def _adds_hazard(self, base: Mapping[str, Any], candidate: Mapping[str, Any]) -> bool:
        """``candidate`` has a flag value the engine's table knows to crash that ``base`` has not."""
        old = dict(params_to_flags(self.space, base))
        new = dict(params_to_flags(self.space, candidate))
        return any(rule.holds(new) and not rule.holds(old) for rule in self.hazards)

    def _late(self, trials: Sequence[FrozenTrial]) -> bool:
        """In the second half of the budget (counted in launched trials), when the budget is known."""
        return self.budget is not None and sum(launched(t) for t in trials) >= self.budget / 2

    def _local_share(self, trials: Sequence[FrozenTrial]) -> int:
        """Local moves per sampler proposal: one, and ``LATE_LOCAL`` in the second half of the budget."""
        return LATE_LOCAL if self._late(trials) else 1

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

    # --- after a crash --------------------------------------------------------------------------
    def after_crash(self, trial: optuna.Trial, params: Mapping[str, Any], failure: Failure) -> Repair | None:
        """Queue the first repaired neighbour the study has not seen; return it (``None``: no repair).

        A chain of repairs (a repair that crashed for another reason, repaired again) stops after
        ``max_repair_depth`` repairs, and never applies a rule again to the failure kind it did not cure.
        """
        earlier = trial.user_attrs.get(TrialAttr.REPAIR)
        chain = list(earlier.get("chain", [])) if isinstance(earlier, dict) else []
        if len(chain) >= self.max_repair_depth or not self.rules:
            return None
        trials = trial.study.get_trials(deepcopy=False)
        seen = configurations(self.space, trials)
        learned = learned_constraints(trials)
        for proposed in repairs_for(self.space, params, failure, self.rules):
            rule_id = self.rules.index(proposed.rule)
            if [failure.kind.value, rule_id] in chain:
                continue  # this rule already answered this kind of crash in the chain, and it came back
            repair = bracketed(self.space, proposed, trials) if self.bisect else proposed
            if repair is None:
                continue  # the trials beside it leave no gap: the edge is known, or there is none
            if not self._allowed(repair.params, seen, learned):
                continue
            if self.strip and not chain:
                wide = stripped(self.space, repair, self.rules, failure)
                if wide is not None and self._allowed(wide.params, seen, learned):
                    repair = wide
            attrs = {
                **repair.to_attrs(),
                "of": trial.number,
                "chain": [*chain, [failure.kind.value, rule_id]],
            }
            trial.study.enqueue_trial(repair.params, user_attrs={TrialAttr.REPAIR: attrs})
            return repair
        return None

    def _allowed(
        self, params: Mapping[str, Any], seen: Mapping[Any, int], learned: list[LearnedConstraint]
    ) -> bool:
        """Not seen yet, outside every learned constraint and the space's own constraints."""
        return (
            configuration_key(self.space, params) not in seen
            and covering(learned, params) is None
            and violated_constraint(self.space, dict(params_to_flags(self.space, params))) is None
        )


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
