"""Whether a configuration could still win: the value a forest of the study's measured trials expects.

A repair costs a server start. After a crash in a region the study already knows to be poor (a kernel
that serves 16 tok/s where another serves 26), the repaired neighbour would start and lose; the guide
(``tuner.search.guide.SearchGuide.after_crash``) spends repairs only on configurations this model
does not rule out. A random forest regression over all parameters (the feasibility forest's encoding)
on every trial that served - complete, or stopped early with its value so far - is asked for its
trees' estimates of the repaired configuration, and the estimate taken is optimistic (a high
percentile of the trees, ``OPTIMISM``): a repair is skipped only when even that stays below
``PROMISE`` of the best value measured, so before a clearly better region is known nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from tuner.search.feasibility import encode
from tuner.search.learned import ran
from tuner.space.schema import SearchSpace
from tuner.store.attrs import TrialAttr

MIN_MEASURED = 5  # trials with a value before the model judges
PROMISE = 0.8  # skip a repair whose optimistic estimate is below this share of the best value
OPTIMISM = 75  # percentile of the trees' estimates taken as the estimate


def measured_value(t: FrozenTrial, metric: str) -> float | None:
    """The objective's value of a trial that served: its value, or a stopped trial's value so far."""
    if not ran(t):
        return None
    if t.state is TrialState.COMPLETE and t.values:
        return float(t.values[0])
    value = (t.user_attrs.get(TrialAttr.METRICS) or {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


class PromiseModel:
    """An optimistic estimate of a configuration's objective value; :meth:`fit` on the study first."""

    def __init__(self, space: SearchSpace, *, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.forest: Any = None
        self.best: float | None = None
        objectives = space.objectives
        self.metric = objectives[0].metric if len(objectives) == 1 else None
        self.maximize = bool(objectives) and objectives[0].direction == "maximize"

    def fit(self, trials: Sequence[FrozenTrial]) -> bool:
        """Train on the trials that served; ``False`` (no judgement) while there are too few, or when
        the study has several objectives or a value that is not positive."""
        self.forest = self.best = None
        if self.metric is None:
            return False
        rows, ys = [], []
        for t in trials:
            value = measured_value(t, self.metric)
            if value is not None:
                rows.append(encode(self.space, t.params))
                ys.append(value)
        if len(rows) < MIN_MEASURED or min(ys) <= 0:
            return False
        try:
            from sklearn.ensemble import RandomForestRegressor  # imported on first use
        except ImportError:
            return False
        self.forest = RandomForestRegressor(n_estimators=64, min_samples_leaf=1, random_state=self.seed)
        self.forest.fit(np.array(rows), np.array(ys))
        self.best = max(ys) if self.maximize else min(ys)
        return True

    def estimate(self, params: Mapping[str, Any]) -> float | None:
        """The optimistic estimate (a high percentile of the trees' when maximizing, a low one when
        minimizing); ``None`` before :meth:`fit` succeeded."""
        if self.forest is None:
            return None
        row = np.array([encode(self.space, params)])
        per_tree = [tree.predict(row)[0] for tree in self.forest.estimators_]
        return float(np.percentile(per_tree, OPTIMISM if self.maximize else 100 - OPTIMISM))

    def ruled_out(self, params: Mapping[str, Any]) -> bool:
        """Even the optimistic estimate is worse than the best value measured by more than ``PROMISE``."""
        estimate = self.estimate(params)
        if estimate is None or self.best is None:
            return False
        return estimate < PROMISE * self.best if self.maximize else estimate * PROMISE > self.best
