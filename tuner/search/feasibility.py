"""How likely a configuration is to crash, learned from the study's launched trials.

A random forest (as SCOOT does for LLM-serving configurations) over all of the space's parameters,
trained on every trial that started a server: it ran (complete, or stopped early) or it crashed.
Unlike a constraint it weighs every parameter together, so one out-of-memory crash with
``awq_marlin`` at a high memory fraction does not condemn ``awq_marlin``: the forest also sees the
``awq_marlin`` trials that ran at a lower fraction.

The guide (``tuner.search.guide``) asks it before launch and skips a proposal only when the forest
is confident (``VETO``) and has seen enough of both outcomes; a share of those proposals
(``EXPLORE``) is launched anyway, so a wrong belief gets corrected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from tuner.search.learned import launched, ran
from tuner.space.schema import BoolParam, CategoricalParam, FloatParam, IntParam, SearchSpace

MIN_LAUNCHED = 10  # launched trials before the forest is trusted
MIN_EACH = 3  # crashes and runs it must have seen
VETO = 0.4  # skip a proposal the forest gives at least this crash probability (calibration: docs/search.md)
EXPLORE = 0.15  # launch this share of would-be vetoes anyway


class FeasibilityModel:
    """P(crash) of a parameter set; :meth:`fit` on the study's trials first."""

    def __init__(self, space: SearchSpace, *, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.forest: Any = None
        self.launched = 0

    def fit(self, trials: Sequence[FrozenTrial]) -> bool:
        """Train on the launched trials; ``False`` (and no predictions) while there are too few."""
        rows, labels = [], []
        for t in trials:
            if launched(t):
                rows.append(self.encode(t.params))
                labels.append(0 if ran(t) else 1)
        self.launched = len(rows)
        crashes = sum(labels)
        if self.launched < MIN_LAUNCHED or min(crashes, self.launched - crashes) < MIN_EACH:
            self.forest = None
            return False
        try:
            from sklearn.ensemble import RandomForestClassifier  # imported on first use: ~0.5 s
        except ImportError:  # a GPU host carrying only the tuner's core needs: no model, no vetoes
            self.forest = None
            return False
        self.forest = RandomForestClassifier(n_estimators=64, min_samples_leaf=1, random_state=self.seed)
        self.forest.fit(np.array(rows), np.array(labels))
        return True

    def crash_probability(self, params: Mapping[str, Any]) -> float | None:
        if self.forest is None:
            return None
        proba = self.forest.predict_proba(np.array([self.encode(params)]))[0]
        classes = list(self.forest.classes_)
        return float(proba[classes.index(1)]) if 1 in classes else 0.0

    def encode(self, params: Mapping[str, Any]) -> list[float]:
        """Numbers scaled to [0, 1] (log ones in log space), categoricals one-hot; inactive = -1 / zeros."""
        row: list[float] = []
        for name, p in self.space.parameters.items():
            v = params.get(name)
            active = name in params
            if isinstance(p, CategoricalParam):
                row += [1.0 if active and v == c else 0.0 for c in p.choices]
            elif isinstance(p, BoolParam):
                row.append(1.0 if active and v else 0.0 if active else -1.0)
            elif isinstance(p, IntParam | FloatParam):
                row.append(_scaled(p, v) if active and isinstance(v, int | float) else -1.0)
        return row


def _scaled(p: IntParam | FloatParam, v: float) -> float:
    if p.high == p.low:
        return 0.0
    if p.log and p.low > 0 and v > 0:
        return (math.log(v) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
    return (v - p.low) / (p.high - p.low)
