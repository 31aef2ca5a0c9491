"""Which trials count and in what order: the one ranking the summary, report, dashboard, confirmation
and nightly job share.

A trial is *feasible* when every constraint value is <= 0 (crash 0, every SLO met); only complete,
feasible trials are ranked, best first by the study's objectives in order.
"""

from __future__ import annotations

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner.objective.constraints import all_hold


def is_feasible(trial: FrozenTrial) -> bool:
    """All constraints hold (:func:`tuner.objective.constraints.all_hold`)."""
    return all_hold(trial.constraints)


def feasible_complete(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials whose constraints all hold, in trial order."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)]


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible complete trials, best first by the first objective (then the others)."""
    signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
    return sorted(
        feasible_complete(study), key=lambda t: [s * v for s, v in zip(signs, t.values, strict=True)]
    )
