"""Warm start and the time-boxed search of a nightly run.

The deployed configuration and the best configurations the study already knows are enqueued
first (so tonight's engine/driver measures them again), then Optuna proposes new trials until
the trial count or the time budget runs out. Tonight's trials carry the user attribute
``nightly`` (the run's stamp), which is how the report and the candidate list find them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.launch.base import ImageInfo
from tuner.nightly.compat import rejection
from tuner.nightly.deployed import canonical_flags, same_config
from tuner.objective.ranking import ranked_trials
from tuner.space.constraints import violated_constraint
from tuner.space.sample import domain_contains, is_active, params_to_flags
from tuner.space.schema import SearchSpace
from tuner.store.attrs import TrialAttr
from tuner.trial.objective import DuplicateProposal, TrialRunner

NIGHTLY_ATTR = "nightly"


@dataclass(frozen=True)
class WarmStart:
    """A configuration enqueued before the search: where it came from and its parameters."""

    label: str  # "deployed", "known #12"
    params: dict[str, Any]
    flags: dict[str, Any]


def known_top(
    study: optuna.Study,
    space: SearchSpace,
    *,
    n: int,
    exclude: Mapping[str, Any],
    image: ImageInfo | None = None,
) -> tuple[list[WarmStart], list[str]]:
    """The ``n`` best distinct feasible configurations of the study (not ``exclude``) and notes.

    Trials whose flags tonight's engine rejects, or whose parameters the space no longer
    contains, are dropped with a note naming the trial and the reason.
    """
    picked: list[WarmStart] = []
    notes: list[str] = []
    seen = [canonical_flags(exclude)]
    for t in ranked_trials(study):
        if len(picked) >= n:
            break
        flags = dict(t.user_attrs.get(TrialAttr.FLAGS) or params_to_flags(space, t.params))
        if canonical_flags(flags) in seen:
            continue
        seen.append(canonical_flags(flags))
        if (why := rejection(space, flags, image)) is not None:
            notes.append(f"known trial #{t.number} dropped: {why}")
            continue
        if (why := params_outside(space, t.params)) is not None:
            notes.append(f"known trial #{t.number} dropped: {why}")
            continue
        picked.append(WarmStart(f"known #{t.number}", dict(t.params), flags))
    return picked, notes


def params_outside(space: SearchSpace, params: Mapping[str, Any]) -> str | None:
    """Why ``params`` cannot be enqueued in ``space`` any more (None when they can)."""
    for name, value in params.items():
        if name not in space.parameters:
            return f"parameter {name!r} is no longer in the search space"
        if not domain_contains(space.parameters[name], value):
            return f"{name}={value!r} is outside the search space's range now"
    missing = [n for n in space.parameters if is_active(space, n, params) and n not in params]
    if missing:
        return f"no value for {', '.join(missing)} (added to the space since)"
    if (why := violated_constraint(space, params_to_flags(space, params))) is not None:
        return f"a known constraint excludes it now ({why})"
    return None


def enqueue(study: optuna.Study, entries: list[WarmStart], stamp: str) -> None:
    """Enqueue ``entries`` for tonight (even if measured before: tonight's machine may differ)."""
    waiting = [t.params for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
    for e in entries:
        if any(p == e.params for p in waiting):
            continue  # left WAITING by an interrupted run: it runs first anyway
        study.enqueue_trial(e.params, user_attrs={NIGHTLY_ATTR: stamp, "warm_start": e.label})


class TaggedObjective:
    """The trial runner, marking each trial with the nightly stamp first."""

    def __init__(self, runner: TrialRunner, stamp: str) -> None:
        self.runner = runner
        self.stamp = stamp

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        trial.set_user_attr(NIGHTLY_ATTR, self.stamp)
        return self.runner(trial)


def run_search(
    study: optuna.Study, runner: TrialRunner, *, stamp: str, max_trials: int, budget_s: float
) -> float:
    """Run up to ``max_trials`` trials, starting none after ``budget_s`` seconds. Returns seconds spent.

    Duplicate proposals (the guide's, ``tuner.search.guide``) end unmeasured and do not count.
    """
    t0 = time.monotonic()

    def enough(study: optuna.Study, _: FrozenTrial) -> None:
        done = [
            t for t in tonights_trials(study, stamp) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        ]
        if len(done) >= max_trials:
            study.stop()

    if max_trials > 0 and budget_s > 0:
        study.optimize(
            TaggedObjective(runner, stamp),
            n_trials=max_trials * 4,  # the callback stops at max_trials measured; this bounds duplicates
            timeout=budget_s,
            callbacks=[enough],
            catch=(DuplicateProposal,),
        )
    return time.monotonic() - t0


def tonights_trials(study: optuna.Study, stamp: str) -> list[FrozenTrial]:
    """Trials this run measured, in order."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(NIGHTLY_ATTR) == stamp]


def candidates(
    study: optuna.Study, space: SearchSpace, stamp: str, *, deployed_flags: Mapping[str, Any], n: int
) -> list[FrozenTrial]:
    """Tonight's best ``n`` distinct feasible trials that are not the deployed configuration."""
    tonight = {t.number for t in tonights_trials(study, stamp)}
    out: list[FrozenTrial] = []
    seen: list[dict[str, Any]] = []
    for t in ranked_trials(study):
        if t.number not in tonight:
            continue
        flags = t.user_attrs.get(TrialAttr.FLAGS, {})
        if same_config(flags, deployed_flags) or canonical_flags(flags) in seen:
            continue
        seen.append(canonical_flags(flags))
        out.append(t)
        if len(out) >= n:
            break
    return out
