"""The space file's ``capacity:``, ``pruning:`` and ``confirm:`` sections, as typed models.

The code that acts on them lives in later layers: the capacity search in ``tuner/objective/capacity.py``,
the pruners in ``tuner/trial/pruning.py``, the confirmation in ``tuner/study/confirm.py``.

    capacity: {min_rate: 0.5, max_rate: 16, probe_requests: 100}
    pruning: {pruner: wilcoxon, warmup_windows: 2, p_threshold: 0.1}
    confirm: {top_k: 3, repeats: 3, confidence: 0.95}
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuner.space.workload import SLOs

PrunerName = Literal["wilcoxon", "median", "patient", "none"]


class PruningSpec(BaseModel):
    """The space file's ``pruning:`` section (see ``tuner/trial/pruning.py`` for each pruner).

    >>> PruningSpec(pruner="median", warmup_windows=1).pruner
    'median'
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    pruner: PrunerName = "wilcoxon"
    # windows measured before any pruning decision (Wilcoxon: paired windows needed, at least 2)
    warmup_windows: int = Field(default=2, ge=0)
    p_threshold: float = Field(default=0.1, gt=0, lt=1)  # wilcoxon: how sure "worse than the best" must be
    # wilcoxon: a window is worse only when below the best trial's by more than this (relative): set it to
    # the spread between server starts of one configuration, which paired windows of one server cannot see
    tolerance: float = Field(default=0.05, ge=0, lt=1)
    n_startup_trials: int = Field(default=5, ge=0)  # median/patient: complete trials before pruning starts
    patience: int = Field(default=2, ge=0)  # patient: windows without improvement before asking the median

    @property
    def reports(self) -> Literal["window", "running"]:
        """Which value a trial reports after each window: the window's own, or the running one."""
        return "window" if self.pruner == "wilcoxon" else "running"


class ConfirmSpec(BaseModel):
    """The space file's ``confirm:`` section: re-measure the final top candidates.

    >>> ConfirmSpec().repeats
    3
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    top_k: int = Field(default=3, ge=1, le=50)  # distinct configurations re-measured
    repeats: int = Field(
        default=3, ge=2, le=100
    )  # fresh measurements per candidate: two at least, for an interval
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    # seed trials (by name) re-measured in the same interleaved rounds: the winner / baseline ratio
    # comes with its interval (the question a user brings: how much better than what I run now?)
    baselines: list[str] = Field(default_factory=list)


class QualitySpec(BaseModel):
    """The space file's ``quality:`` section: no configuration that changes the answers is crowned.

    Every trial that completes its benchmark also answers ``probes`` fixed prompts (``probe_len`` words,
    drawn from the workload's seed) greedily, ``max_tokens`` each; the seed trial ``reference`` (run
    first, as seeds are) gives the reference answers. A trial's *agreement* is the mean, over probes,
    of the share of the reference answer's words it reproduces before the first difference; below
    ``min_agreement`` it violates the ``quality`` constraint and cannot win, with the evidence (which
    probes, the first different word) on the trial. ``min_exact`` (optional) also asks that share of the
    probes be answered word for word (an exact-match rate; 1.0: every probe identical).

    >>> QualitySpec(reference="defaults").min_agreement
    0.9
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    reference: str = Field(min_length=1)  # a seed trial's name
    probes: int = Field(default=8, ge=1, le=256)
    probe_len: int = Field(default=48, ge=1, le=100_000)
    max_tokens: int = Field(default=32, ge=1, le=100_000)
    min_agreement: float = Field(default=0.9, gt=0, le=1)
    min_exact: float | None = Field(default=None, gt=0, le=1)

    def shortfall(self, agreement: float, exact: float) -> float:
        """How far a verdict (``agreement``, ``exact`` as recorded on a trial) falls short of the gate: the
        larger of the two shortfalls; <= 0 passes.

        >>> gate = QualitySpec(reference="f16", min_exact=0.75)
        >>> round(gate.shortfall(0.95, 0.5), 6), QualitySpec(reference="f16").shortfall(0.95, 0.5) <= 0
        (0.25, True)
        """
        short = self.min_agreement - agreement
        return short if self.min_exact is None else max(short, self.min_exact - exact)

    def accepts(self, agreement: float, exact: float) -> bool:
        """Whether a verdict passes the gate."""
        return self.shortfall(agreement, exact) <= 0

    def threshold(self) -> str:
        """``agreement >= 0.9`` (and ``exact >= 0.75`` with min_exact)."""
        text = f"agreement >= {self.min_agreement:g}"
        return text + (f", exact >= {self.min_exact:g}" if self.min_exact is not None else "")


__all__ = ["ConfirmSpec", "PrunerName", "PruningSpec", "QualitySpec"]


class CapacitySpec(BaseModel):
    """How to search for a configuration's capacity (the ``capacity:`` block of a space file).

    Each probe sends ``probe_requests`` requests, or ``rate × probe_duration_s`` of them (never
    fewer than ``min_probe_requests``: a p99 of few requests is little more than their maximum).
    ``slos`` defines pass/fail; left out, the space's ``slos:`` are used.

    >>> spec = CapacitySpec(min_rate=0.5, max_rate=16, probe_requests=100)
    >>> spec.requests_at(4.0), spec.tolerance
    (100, 0.05)
    >>> CapacitySpec(min_rate=0.5, max_rate=16, probe_duration_s=30).requests_at(4.0)
    120
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    min_rate: float = Field(gt=0)
    max_rate: float = Field(gt=0)
    probe_requests: int | None = Field(default=None, ge=1)
    probe_duration_s: float | None = Field(default=None, gt=0)
    min_probe_requests: int = Field(default=50, ge=1)
    tolerance: float = Field(default=0.05, gt=0, lt=1)
    ramp_factor: float = Field(default=2.0, gt=1)
    max_probes: int = Field(default=12, ge=1)
    time_budget_s: float = Field(default=900.0, gt=0)
    slos: SLOs | None = None
    fail_badly_factor: float = Field(default=3.0, gt=1)
    fail_badly_error_rate: float = Field(default=0.5, gt=0, le=1)
    decide_early: bool = True
    cooldown_s: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> CapacitySpec:
        if self.min_rate >= self.max_rate:
            raise ValueError(f"min_rate ({self.min_rate:g}) must be below max_rate ({self.max_rate:g})")
        if self.probe_requests is not None and self.probe_duration_s is not None:
            raise ValueError("set at most one of probe_requests and probe_duration_s")
        if self.probe_requests is not None and self.probe_requests < self.min_probe_requests:
            raise ValueError(
                f"probe_requests ({self.probe_requests}) is below min_probe_requests "
                f"({self.min_probe_requests}): a p99 over so few requests is mostly noise; "
                "raise probe_requests or lower min_probe_requests deliberately"
            )
        return self

    def requests_at(self, rate: float) -> int:
        """How many measured requests a probe at ``rate`` sends."""
        if self.probe_duration_s is not None:
            return max(self.min_probe_requests, math.ceil(rate * self.probe_duration_s))
        return self.probe_requests if self.probe_requests is not None else max(100, self.min_probe_requests)
