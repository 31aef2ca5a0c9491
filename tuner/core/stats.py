"""Statistics shared by the nightly job, the confirmation of top candidates and the benchmarks.

Bootstrap confidence intervals of a ratio of means. Every ratio is *oriented*: above 1 means
"better" whatever the objective's direction (``candidate / reference`` for a maximised metric,
``reference / candidate`` for a minimised one).

* :func:`paired_ratio_ci` for interleaved rounds (reference, candidate, …): whole rounds are
  resampled, so drift that hits both sides of a round cancels.
* :func:`unpaired_ratio_ci` for two independent groups (each resampled on its own).

Intervals are *expanded* percentile intervals (:func:`expanded_tail`): with 4-5 repeats a plain
percentile bootstrap is far too narrow and calls noise a difference several times in a hundred.
With fewer than two values on a side no interval is claimed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 4000


@dataclass(frozen=True)
class RatioCI:
    """An oriented ratio of means with its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int  # rounds (paired) or the smaller group (unpaired)
    method: str

    def describe(self) -> str:
        """``1.084 [1.052, 1.113] (95 % CI, 5 rounds paired)``"""
        return (
            f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}] "
            f"({self.confidence:.0%} CI, {self.n} {self.method})"
        )


def _oriented(num: np.ndarray, den: np.ndarray, maximize: bool) -> np.ndarray:
    return num / den if maximize else den / num


def expanded_tail(confidence: float, n: int) -> float:
    """The tail probability of the *expanded* percentile interval (Hesterberg 2015).

    A plain percentile bootstrap is too narrow for the few repeats a nightly run affords (it acts
    like a z interval with the sample spread); expanding the tail to
    ``Φ(-sqrt(n/(n-1)) · t_{1-α/2, n-1})`` gives it the width of a t interval.

    >>> round(expanded_tail(0.95, 10) * 100, 2)
    0.86
    """
    alpha = 1.0 - confidence
    return float(stats.norm.cdf(-math.sqrt(n / (n - 1)) * stats.t.ppf(1.0 - alpha / 2.0, n - 1)))


def _interval(boot: np.ndarray, estimate: float, confidence: float, n: int, method: str) -> RatioCI:
    tail = expanded_tail(confidence, n) * 100.0
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return RatioCI(float(estimate), float(low), float(high), confidence, n, method)


def paired_ratio_ci(
    deployed: Sequence[float],
    candidate: Sequence[float],
    *,
    maximize: bool,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> RatioCI | None:
    """Blocked bootstrap of mean(candidate)/mean(deployed) over interleaved rounds.

    ``deployed[i]`` and ``candidate[i]`` were measured in the same round; whole rounds are
    resampled. None with fewer than two rounds.

    >>> ci = paired_ratio_ci([10, 10.2, 9.9, 10.1], [11, 11.1, 10.8, 11.2], maximize=True)
    >>> round(ci.estimate, 3), ci.low > 1.05
    (1.097, True)
    """
    a = np.asarray(deployed, dtype=float)
    b = np.asarray(candidate, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {len(a)} deployed, {len(b)} candidate")
    n = len(a)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    boot = _oriented(b[idx].mean(axis=1), a[idx].mean(axis=1), maximize)
    return _interval(boot, float(_oriented(b.mean(), a.mean(), maximize)), confidence, n, "rounds paired")


def unpaired_ratio_ci(
    reference: Sequence[float],
    fresh: Sequence[float],
    *,
    maximize: bool,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> RatioCI | None:
    """Bootstrap of mean(fresh)/mean(reference) resampling each group on its own.

    None when either group has fewer than two values.
    """
    r = np.asarray(reference, dtype=float)
    f = np.asarray(fresh, dtype=float)
    if len(r) < 2 or len(f) < 2:
        return None
    rng = np.random.default_rng(seed)
    rb = r[rng.integers(0, len(r), size=(resamples, len(r)))].mean(axis=1)
    fb = f[rng.integers(0, len(f), size=(resamples, len(f)))].mean(axis=1)
    boot = _oriented(fb, rb, maximize)
    return _interval(
        boot, float(_oriented(f.mean(), r.mean(), maximize)), confidence, min(len(r), len(f)), "unpaired"
    )
