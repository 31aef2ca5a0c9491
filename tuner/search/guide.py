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
* :meth:`SearchGuide.after_run`: a local move from a top trial between the sampler's proposals, and
  moves from a breakthrough before the feasibility model is trusted (``tuner.search.local``).

A configuration's identity and its neighbours live in ``tuner.search.neighbours``; the sampler's
start-up draws, which cover every choice before one repeats, in ``tuner.search.startup``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.core.failures import Failure
from tuner.engines import get_engine
from tuner.search.bracket import bracketed
from tuner.search.feasibility import EXPLORE, VETO, FeasibilityModel
from tuner.search.learned import LearnedConstraint, covering, learned_constraints
from tuner.search.local import LocalMoves, second_half
from tuner.search.neighbours import allowed, configuration_key, configurations, neighbour
from tuner.search.startup import DERIVED
from tuner.space.repair import Repair, repairs_for, stripped
from tuner.space.sample import domain_contains, on_grid
from tuner.space.schema import FloatParam, IntParam, SearchSpace
from tuner.store.attrs import TrialAttr

DELIBERATE = (TrialAttr.SEED_NAME, TrialAttr.WARM_START, *DERIVED)  # queued on purpose, never screened
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_REPAIR_CHAIN = 5  # repairs in a row, each after the previous one crashed for another reason
LATE_VETO = 0.1  # second half: skip a sampler's proposal from this crash probability on, none launched anyway


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
        self.budget = budget  # the study's trials in total, if known: its second half leans on local moves
        self.strip = strip  # a chain's first repair also turns every other known hazard off
        self.edge = edge  # a repair that ran is followed by a probe half-way back towards the crash
        # local moves between the sampler's proposals, and after a breakthrough before the model is trusted
        self.moves = (
            LocalMoves(space, self.model, self.rules, exploit=exploit, budget=budget)
            if local and self.model is not None
            else None
        )

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
                other = neighbour(self.space, params, seen, learned, rng)
                if other is not None:
                    trial.study.enqueue_trial(other, user_attrs={TrialAttr.NEIGHBOUR_OF: first})
                return Screened(duplicate_of=first, neighbour=other)
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
        veto = p >= LATE_VETO if second_half(self.budget, trials) else p >= VETO and rng.random() >= EXPLORE
        if veto:
            return Screened(crash_probability=p, launched=self.model.launched)
        return None

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
        if not allowed(
            self.space, candidate, configurations(self.space, trials), learned_constraints(trials)
        ):
            return None
        trial.study.enqueue_trial(candidate, user_attrs={TrialAttr.NEAR: trial.number})
        return first["param"], new, probe

    def after_run(
        self, trial: optuna.Trial, ranked: Sequence[FrozenTrial], value: float | None = None
    ) -> int | None:
        """Queue a local move when it is its turn (``tuner.search.local``); the number of the trial it
        starts from, ``None`` when none is queued. ``ranked``: the feasible trials, best first; ``value``:
        this trial's own, when it ran and is feasible."""
        return self.moves.after_run(trial, ranked, value) if self.moves is not None else None

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
            if not allowed(self.space, repair.params, seen, learned):
                continue
            if self.strip and not chain:
                wide = stripped(self.space, repair, self.rules, failure)
                if wide is not None and allowed(self.space, wide.params, seen, learned):
                    repair = wide
            attrs = {
                **repair.to_attrs(),
                "of": trial.number,
                "chain": [*chain, [failure.kind.value, rule_id]],
            }
            trial.study.enqueue_trial(repair.params, user_attrs={TrialAttr.REPAIR: attrs})
            return repair
        return None
