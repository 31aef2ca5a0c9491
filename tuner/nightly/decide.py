"""The nightly job's statistics: bootstrap confidence intervals of a ratio of means, and the rules.

Every ratio is *oriented*: above 1 means "better" whatever the objective's direction
(``candidate / deployed`` for a maximised metric, ``deployed / candidate`` for a minimised one).

* Promotion uses interleaved rounds (deployed, candidate, deployed, candidate, …): a paired,
  blocked bootstrap resamples whole rounds, so drift that hits both sides of a round cancels.
  A candidate is promoted only when the CI's lower bound exceeds ``1 + margin``, it never failed
  and it met every SLO on every repeat.
* Regression compares the deployed configuration's fresh repeats with the repeats recorded
  when it was deployed (two independent groups: each is resampled on its own). An alarm is
  raised when the CI's upper bound is below ``1 - margin``: slower beyond noise.

Intervals are *expanded* percentile intervals (:func:`expanded_tail`): with 4-5 repeats a plain
percentile bootstrap is far too narrow and promotes noise several times in a hundred.
With fewer than two values on a side no interval is claimed and the rule never fires.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats

DEFAULT_MARGIN = 0.02
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


@dataclass(frozen=True)
class Verdict:
    """What a rule concluded, the interval it used and why, in words for the report."""

    decision: Literal["promote", "keep", "regression", "no-regression", "undecided"]
    ci: RatioCI | None
    reasons: list[str] = field(default_factory=list)


def promotion_verdict(
    deployed: Sequence[float],
    candidate: Sequence[float],
    *,
    candidate_slo_ok: Sequence[bool],
    candidate_failures: int,
    maximize: bool,
    margin: float = DEFAULT_MARGIN,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Verdict:
    """Promote only if the paired CI's lower bound > 1 + margin, no failure, every SLO on every repeat."""
    reasons: list[str] = []
    if candidate_failures:
        reasons.append(f"failed in {candidate_failures} of its repeats")
    if not all(candidate_slo_ok):
        bad = sum(1 for ok in candidate_slo_ok if not ok)
        reasons.append(f"violated an SLO in {bad} of {len(candidate_slo_ok)} repeats")
    ci = paired_ratio_ci(
        deployed, candidate, maximize=maximize, confidence=confidence, resamples=resamples, seed=seed
    )
    if ci is None:
        reasons.append("fewer than two complete rounds: no interval")
    elif ci.low <= 1.0 + margin:
        reasons.append(
            f"improvement not significant: CI lower bound {ci.low:.3f} is not above 1 + margin ({1 + margin:.3f})"
        )
    if reasons:
        return Verdict("keep", ci, reasons)
    assert ci is not None
    return Verdict(
        "promote", ci, [f"CI lower bound {ci.low:.3f} > {1 + margin:.3f}; every SLO held on every repeat"]
    )


def regression_verdict(
    reference: Sequence[float],
    fresh: Sequence[float],
    *,
    maximize: bool,
    margin: float = DEFAULT_MARGIN,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Verdict:
    """Regression when the upper CI bound of fresh/reference (oriented) is below 1 - margin."""
    ci = unpaired_ratio_ci(
        reference, fresh, maximize=maximize, confidence=confidence, resamples=resamples, seed=seed
    )
    if ci is None:
        return Verdict(
            "undecided",
            None,
            [f"need two values on each side ({len(reference)} reference, {len(fresh)} fresh)"],
        )
    if ci.high < 1.0 - margin:
        return Verdict(
            "regression",
            ci,
            [f"CI upper bound {ci.high:.3f} < 1 - margin ({1 - margin:.3f}): slower beyond noise"],
        )
    return Verdict("no-regression", ci, [f"CI upper bound {ci.high:.3f} is not below {1 - margin:.3f}"])
