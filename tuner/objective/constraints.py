"""Objectives and constraints: from a trial's metrics to what Optuna optimises and checks.

Metric names are the keys of ``BenchResult.flat()`` (tuner/loadgen/metrics.py). SLOs become
constraints normalised as ``measured / limit - 1`` (<= 0 feasible) so violations of different
units are comparable; a crash is the constraint ``crash = 1``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CRASH = "crash"

# SLO field -> the metric it bounds
SLO_METRICS: Mapping[str, str] = {
    "ttft_p99_ms": "ttft_p99_ms",
    "tpot_p99_ms": "tpot_p99_ms",
    "e2e_p99_ms": "e2e_p99_ms",
    "error_rate": "error_rate",
}


@dataclass(frozen=True)
class Constraints:
    """Constraint values for one trial (<= 0 feasible), keyed as stored in Optuna."""

    values: Mapping[str, float]

    @property
    def feasible(self) -> bool:
        return all_hold(self.values)

    def violated(self) -> list[str]:
        return [k for k, v in self.values.items() if v > 0]


def all_hold(values: Mapping[str, float]) -> bool:
    """The one feasibility rule: every constraint value is <= 0 (none at all counts as feasible, as in Optuna)."""
    return all(v <= 0 for v in values.values())


def slo_limits(slos: object) -> dict[str, float]:
    """The SLO limits that are set, as ``{slo_field: limit}``."""
    return {f: float(v) for f in SLO_METRICS if (v := getattr(slos, f, None)) is not None}


def constraint_keys(slos: object) -> list[str]:
    """Every constraint key a trial of this space gets (the same set for every trial)."""
    return [CRASH, *(f"slo_{f}" for f in slo_limits(slos))]


def constraints_for_metrics(metrics: Mapping[str, float], slos: object) -> Constraints:
    """Constraints of a trial that ran: crash 0, each SLO as ``measured/limit - 1``.

    A metric that could not be measured (a benchmark stopped early before any request finished has
    no TTFT: NaN) violates its SLO: nothing shows it was met.

    >>> from types import SimpleNamespace as NS
    >>> constraints_for_metrics({"ttft_p99_ms": 300.0}, NS(ttft_p99_ms=200.0)).values
    {'crash': 0.0, 'slo_ttft_p99_ms': 0.5}
    >>> constraints_for_metrics({"ttft_p99_ms": float("nan")}, NS(ttft_p99_ms=200.0)).values
    {'crash': 0.0, 'slo_ttft_p99_ms': inf}
    """
    values: dict[str, float] = {CRASH: 0.0}
    for field, limit in slo_limits(slos).items():
        measured = float(metrics.get(SLO_METRICS[field], float("inf")))
        if math.isnan(measured):
            measured = float("inf")
        if limit == 0:
            values[f"slo_{field}"] = measured  # e.g. error_rate <= 0: any error violates
        else:
            values[f"slo_{field}"] = measured / limit - 1.0
    return Constraints(values)


def constraints_for_crash(slos: object) -> Constraints:
    """Constraints of a trial whose server failed: crash 1, SLOs neutral."""
    return Constraints({CRASH: 1.0, **{f"slo_{f}": 0.0 for f in slo_limits(slos)}})


def objective_values(metrics: Mapping[str, float], objectives: Sequence[object]) -> list[float]:
    """The values Optuna gets, in the order the space lists its objectives."""
    return [float(metrics[o.metric]) for o in objectives]  # type: ignore[attr-defined]
