"""Which trials count and in what order: the one ranking the summary, report, dashboard, confirmation
and nightly job share.

A trial is *feasible* when every constraint value is <= 0 (crash 0, every SLO met); only complete,
feasible trials are ranked, best first by the study's objectives in order.
"""

from __future__ import annotations

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


def is_feasible(trial: FrozenTrial) -> bool:
    """All constraints hold (trials without constraints count as feasible, as in Optuna)."""
    return all(v <= 0 for v in trial.constraints.values())


def feasible_complete(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials whose constraints all hold, in trial order."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)]


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible complete trials, best first by the first objective (then the others)."""
    signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
    return sorted(
        feasible_complete(study), key=lambda t: [s * v for s, v in zip(signs, t.values, strict=True)]
    )
