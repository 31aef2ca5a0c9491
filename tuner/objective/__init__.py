"""From measurements to what Optuna optimises: objectives, SLO constraints, the one feasibility rule and
ranking, and the capacity search (the highest rate that meets the SLOs)."""

from tuner.objective.constraints import (
    CRASH,
    SLO_METRICS,
    Constraints,
    constraint_keys,
    constraints_for_crash,
    constraints_for_metrics,
    objective_values,
    slo_limits,
)

__all__ = [
    "CRASH",
    "SLO_METRICS",
    "Constraints",
    "constraint_keys",
    "constraints_for_crash",
    "constraints_for_metrics",
    "objective_values",
    "slo_limits",
]
