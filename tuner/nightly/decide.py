"""The nightly job's decision rules, on the bootstrap intervals of :mod:`tuner.core.stats`.

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from tuner.core.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    RatioCI,
    paired_ratio_ci,
    unpaired_ratio_ci,
)

DEFAULT_MARGIN = 0.02

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MARGIN",
    "DEFAULT_RESAMPLES",
    "RatioCI",
    "Verdict",
    "paired_ratio_ci",
    "promotion_verdict",
    "regression_verdict",
    "unpaired_ratio_ci",
]


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
