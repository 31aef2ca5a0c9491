"""Re-measure the final top candidates with repeats, so the winner is a winner beyond noise.

During the search every configuration is measured once, and the best single number is partly luck
(the "winner's curse": the maximum of noisy values is biased upwards). :func:`confirm_top` takes the
``top_k`` best distinct configurations of a study and measures each ``repeats`` more times, in
interleaved rounds (A, B, C, A, B, C, …) so that drift of the machine hits every candidate alike.
The search's own value is NOT reused: it is the biased one.

Each candidate gets the mean of its repeats with a Student-t confidence interval (``n`` is small;
a bootstrap of three values says nothing), and the winner is compared with every other candidate by
the paired, blocked-bootstrap ratio of ``tuner.nightly.decide`` over the rounds both completed. The
verdict says whether the winner is better than the runner-up beyond noise or the two are tied.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from scipy import stats

from tuner.core.stats import RatioCI, paired_ratio_ci
from tuner.objective import constraints_for_metrics
from tuner.objective.ranking import ranked_trials
from tuner.space.sample import params_to_flags
from tuner.space.schema import SearchSpace
from tuner.space.sections import ConfirmSpec
from tuner.store.attrs import StudyAttr, TrialAttr
from tuner.trial.measure import ConfigRunner, Outcome

# run_index of confirmation runs: far above any trial number, so logs and simulator seeds never collide
RUN_INDEX_BASE = 1_000_000


@dataclass(frozen=True)
class MeanCI:
    """The mean of repeated measurements with its Student-t interval."""

    mean: float
    low: float
    high: float
    std: float
    n: int
    confidence: float

    def describe(self, unit: str = "") -> str:
        """``41.27 ± 0.83 (95 % CI [40.44, 42.10], n=3)``"""
        half = (self.high - self.low) / 2
        return (
            f"{self.mean:.2f} ± {half:.2f}{unit} ({self.confidence:.0%} CI [{self.low:.2f}, {self.high:.2f}], "
            f"n={self.n})"
        )


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI | None:
    """Student-t interval of the mean; None with fewer than two values.

    >>> ci = mean_ci([10.0, 10.2, 10.4])
    >>> round(ci.mean, 2), round(ci.low, 2), round(ci.high, 2)
    (10.2, 9.7, 10.7)
    """
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, std, n, confidence)


@dataclass
class Candidate:
    """One re-measured configuration."""

    trial_number: int
    flags: dict[str, Any]
    search_value: float  # the single value the search measured (biased upwards for the winner)
    values: list[float | None] = field(default_factory=list)  # per round; None: failed or SLO violated
    failures: list[str] = field(default_factory=list)  # failure kinds / SLO notes of failed repeats
    ci: MeanCI | None = None
    vs_winner: RatioCI | None = None  # oriented ratio winner / this (> 1: the winner is better)
    baseline: str | None = None  # the seed trial's name when it is re-measured as a named baseline

    @property
    def stable(self) -> bool:
        """Every repeat produced a feasible measurement."""
        return not self.failures and all(v is not None for v in self.values)

    @property
    def measured(self) -> list[float]:
        return [v for v in self.values if v is not None]


@dataclass
class Confirmation:
    """The confirmed ranking: stable candidates by mean (winner first), then unstable ones."""

    metric: str
    direction: str
    repeats: int
    confidence: float
    candidates: list[Candidate]

    @property
    def winner(self) -> Candidate | None:
        return self.candidates[0] if self.candidates and self.candidates[0].stable else None

    @property
    def verdict(self) -> str:
        """One sentence: decided beyond noise, tied, or no stable candidate."""
        w = self.winner
        if w is None:
            return "no candidate measured feasibly on every repeat: no winner"
        others = [c for c in self.candidates[1:] if c.stable]
        if not others:
            return f"trial #{w.trial_number} is the only candidate stable on every repeat"
        ru = others[0]
        if ru.vs_winner is None:
            return f"trial #{w.trial_number} leads; too few common rounds to compare with #{ru.trial_number}"
        if ru.vs_winner.low > 1.0:
            return (
                f"trial #{w.trial_number} beats the runner-up #{ru.trial_number} beyond noise: "
                f"ratio {ru.vs_winner.describe()}"
            )
        return (
            f"trial #{w.trial_number} and #{ru.trial_number} are tied within noise "
            f"(ratio {ru.vs_winner.describe()} includes 1): pick either"
        )

    def to_attrs(self) -> dict[str, Any]:
        """JSON-ready form for a study user attribute (``confirmation``)."""
        return json.loads(
            json.dumps(
                {
                    "metric": self.metric,
                    "direction": self.direction,
                    "repeats": self.repeats,
                    "confidence": self.confidence,
                    "verdict": self.verdict,
                    "candidates": [
                        {
                            "trial": c.trial_number,
                            "flags": c.flags,
                            "search_value": c.search_value,
                            "values": c.values,
                            "failures": c.failures,
                            "stable": c.stable,
                            "ci": asdict(c.ci) if c.ci else None,
                            "vs_winner": asdict(c.vs_winner) if c.vs_winner else None,
                            "baseline": c.baseline,
                        }
                        for c in self.candidates
                    ],
                },
                default=str,
            )
        )

    def lines(self) -> list[str]:
        """Human-readable table for the end-of-study summary."""
        out = [f"confirmed top {len(self.candidates)} ({self.repeats} fresh repeats each, {self.metric}):"]
        for c in self.candidates:
            ci = c.ci.describe() if c.ci else "no interval (fewer than 2 feasible repeats)"
            note = "" if c.stable else f"  UNSTABLE: {', '.join(c.failures) or 'failed repeats'}"
            vs = (
                f"  winner/this {c.vs_winner.describe()}"
                if c.vs_winner and c is not self.candidates[0]
                else ""
            )
            name = f" ({c.baseline})" if c.baseline else ""
            out.append(f"  #{c.trial_number:<5} {ci}  (search: {c.search_value:.2f}){name}{vs}{note}")
        out.append(f"verdict: {self.verdict}")
        return out


def pick_candidates(study: optuna.Study, space: SearchSpace, top_k: int) -> list[FrozenTrial]:
    """The ``top_k`` best feasible complete trials with distinct flags, best first."""
    seen: set[str] = set()
    picked: list[FrozenTrial] = []
    for t in ranked_trials(study):
        key = json.dumps(t.user_attrs.get(TrialAttr.FLAGS, t.params), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            picked.append(t)
        if len(picked) == top_k:
            break
    return picked


def _value(outcome: Outcome, space: SearchSpace) -> tuple[float | None, str | None]:
    """The objective value of one repeat, or why it does not count."""
    if outcome.failure is not None:
        return None, outcome.failure.kind.value
    assert outcome.metrics is not None
    constraints = constraints_for_metrics(outcome.metrics, space.slos)
    if not constraints.feasible:
        return None, "slo:" + "+".join(constraints.violated())
    value = outcome.metrics.get(space.objectives[0].metric)
    if value is None or not math.isfinite(value):
        return None, "no value"
    return float(value), None


def rank(candidates: list[Candidate], *, maximize: bool, confidence: float) -> list[Candidate]:
    """Sort stable candidates by mean (best first), unstable after; attach intervals and ratios."""
    for c in candidates:
        c.ci = mean_ci(c.measured, confidence)
    sign = -1.0 if maximize else 1.0

    def key(c: Candidate) -> tuple[int, float]:
        if not c.measured:
            return (2, 0.0)
        return (0 if c.stable else 1, sign * math.fsum(c.measured) / len(c.measured))

    ranked = sorted(candidates, key=key)
    head = ranked[0] if ranked else None
    for c in ranked[1:]:
        assert head is not None
        common = [
            (a, b) for a, b in zip(c.values, head.values, strict=False) if a is not None and b is not None
        ]
        if len(common) >= 2:
            this, win = zip(*common, strict=True)
            c.vs_winner = paired_ratio_ci(list(this), list(win), maximize=maximize, confidence=confidence)
    return ranked


def confirm_top(
    study: optuna.Study,
    space: SearchSpace,
    runner: ConfigRunner,
    spec: ConfirmSpec,
    *,
    on_repeat: Callable[[Candidate, int, Outcome], None] | None = None,
) -> Confirmation:
    """Re-measure the study's top ``spec.top_k`` configurations ``spec.repeats`` times each.

    Runs through ``runner`` (real servers), in interleaved rounds. ``on_repeat(candidate, round,
    outcome)`` is called after each measurement (progress, storage). Single objective: the first
    objective of the space ranks the candidates.
    """
    objective = space.objectives[0]
    trials = pick_candidates(study, space, spec.top_k)
    candidates = [
        Candidate(t.number, dict(t.user_attrs.get(TrialAttr.FLAGS, {})), float(t.values[0])) for t in trials
    ]
    candidates += baseline_candidates(study, space, spec.baselines, candidates)
    for r in range(spec.repeats):
        for i, c in enumerate(candidates):
            outcome = runner.measure(c.flags, run_index=RUN_INDEX_BASE + r * len(candidates) + i)
            value, why = _value(outcome, space)
            c.values.append(value)
            if why is not None:
                c.failures.append(why)
            if on_repeat is not None:
                on_repeat(c, r, outcome)
    ranked = rank(candidates, maximize=objective.direction == "maximize", confidence=spec.confidence)
    return Confirmation(objective.metric, objective.direction, spec.repeats, spec.confidence, ranked)


def baseline_candidates(
    study: optuna.Study, space: SearchSpace, names: Sequence[str], picked: Sequence[Candidate]
) -> list[Candidate]:
    """The named seed trials as candidates (a picked one is only labelled): measured in the same rounds."""
    out: list[Candidate] = []
    by_name = {t.user_attrs.get(TrialAttr.SEED_NAME): t for t in study.get_trials(deepcopy=False)}
    for name in names:
        t = by_name.get(name)
        if t is None:
            continue  # not enqueued in this study (--no-seed-trials): nothing to compare with
        flags = dict(t.user_attrs.get(TrialAttr.FLAGS) or params_to_flags(space, t.params))
        same = next((c for c in picked if c.flags == flags), None)
        if same is not None:
            same.baseline = name
            continue
        value = t.values[0] if t.values else math.nan
        out.append(Candidate(t.number, flags, float(value), baseline=name))
    return out


def record_confirmation(study: optuna.Study, confirmation: Confirmation) -> None:
    """Store the confirmation on the study (user attribute ``confirmation``) for reports and dashboard."""
    study.set_user_attr(StudyAttr.CONFIRMATION, confirmation.to_attrs())


__all__ = [
    "Candidate",
    "ConfirmSpec",
    "Confirmation",
    "MeanCI",
    "confirm_top",
    "mean_ci",
    "pick_candidates",
    "rank",
    "record_confirmation",
]
