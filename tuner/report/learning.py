"""Does the sampler learn the hidden constraints? The crash rate of a study's first half against its second.

A crash (a server that died, hung, ran out of memory, or answered /health but failed its requests)
is recorded as a PRUNED trial with the ``crash`` constraint violated (``tuner/trial/objective.py``), which
TPE ranks on the bad side: it should propose fewer crashing configurations as the study goes on.
Random search cannot learn, so its rate stays flat. :func:`crash_rate_by_half` measures this on any
study; the summary and ``bench/search_efficiency.py`` print it.

Counted separately:

* ``infeasible_config`` — rejected before launch by a declared constraint: it cost nothing and
  is not a crash; it is reported as its own rate.
* trials stopped early for slowness (``pruned_by == "slow"``) — a measurement, not a failure.
* seed trials (``seed_name``) — chosen by a person, not proposed by the sampler; left out by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from tuner.store.attrs import TrialAttr, is_crash, is_infeasible

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def is_pruned_slow(trial: FrozenTrial) -> bool:
    """The trial's benchmark was stopped early because it was clearly worse (not a failure)."""
    return trial.user_attrs.get(TrialAttr.PRUNED_BY) == "slow"


@dataclass(frozen=True)
class Half:
    """Counts of one half of a study."""

    trials: int  # finished trials proposed by the sampler
    crashes: int
    infeasible: int

    @property
    def launched(self) -> int:
        """Trials that started a server (infeasible ones did not)."""
        return self.trials - self.infeasible

    @property
    def crash_rate(self) -> float:
        """Crashes per launched server (NaN when none was launched)."""
        return self.crashes / self.launched if self.launched else float("nan")

    @property
    def infeasible_rate(self) -> float:
        return self.infeasible / self.trials if self.trials else float("nan")


@dataclass(frozen=True)
class CrashHalves:
    """Crash and infeasible rates of the first and second half of a study, in trial order."""

    first: Half
    second: Half
    p_value: float  # one-sided Fisher exact test: is the second half's crash rate lower?

    @property
    def learned(self) -> bool:
        """The second half crashes less, significantly at 5 %."""
        return self.p_value < 0.05

    def describe(self) -> str:
        """``crash rate 1st half 6/12 (50%), 2nd half 1/12 (8%), one-sided Fisher p=0.034``"""

        def one(h: Half) -> str:
            rate = "n/a" if h.launched == 0 else f"{h.crash_rate:.0%}"
            return f"{h.crashes}/{h.launched} ({rate})"

        text = (
            f"crash rate 1st half {one(self.first)}, 2nd half {one(self.second)}, "
            f"one-sided Fisher p={self.p_value:.3g}"
        )
        if self.first.infeasible or self.second.infeasible:
            text += f"; pruned before launch {self.first.infeasible} then {self.second.infeasible}"
        return text

    def as_dict(self) -> dict[str, float | int]:
        """Flat figures for CSV/JSON."""
        return {
            "first_trials": self.first.trials,
            "first_launched": self.first.launched,
            "first_crashes": self.first.crashes,
            "first_infeasible": self.first.infeasible,
            "second_trials": self.second.trials,
            "second_launched": self.second.launched,
            "second_crashes": self.second.crashes,
            "second_infeasible": self.second.infeasible,
            "p_value": self.p_value,
        }


def _half(trials: list[FrozenTrial]) -> Half:
    return Half(len(trials), sum(map(is_crash, trials)), sum(map(is_infeasible, trials)))


def crash_rate_by_half(trials: Iterable[FrozenTrial], *, include_seeded: bool = False) -> CrashHalves:
    """Split the finished trials (by trial number) into halves and count crashes in each.

    With an odd count the middle trial goes to the first half. Seed trials are left out unless
    ``include_seeded``. The p-value is a one-sided Fisher exact test on launched trials (1.0 when
    a half launched nothing).
    """
    done = sorted(
        (t for t in trials if t.state in FINISHED and (include_seeded or "seed_name" not in t.user_attrs)),
        key=lambda t: t.number,
    )
    mid = (len(done) + 1) // 2
    first, second = _half(done[:mid]), _half(done[mid:])
    p = 1.0
    if first.launched and second.launched:
        table = [
            [first.crashes, first.launched - first.crashes],
            [second.crashes, second.launched - second.crashes],
        ]
        p = float(stats.fisher_exact(table, alternative="greater").pvalue)
    return CrashHalves(first, second, p)


def study_crash_halves(study: optuna.Study, *, include_seeded: bool = False) -> CrashHalves:
    """:func:`crash_rate_by_half` of a study's trials."""
    return crash_rate_by_half(study.get_trials(deepcopy=False), include_seeded=include_seeded)


__all__ = [
    "CrashHalves",
    "Half",
    "crash_rate_by_half",
    "is_crash",
    "is_infeasible",
    "is_pruned_slow",
    "study_crash_halves",
]
