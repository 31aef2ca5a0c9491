"""A study as tables (pandas): one row per trial, request latencies of chosen trials, capacity probes."""

from __future__ import annotations

import shlex
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from tuner.objective.ranking import is_feasible
from tuner.report.best import objective_names
from tuner.store import TunerStore
from tuner.store.attrs import TrialAttr

OK = "ok"  # outcome label of a trial without a failure


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, every state: objectives, params, metrics, constraints and the failure.

    Columns: ``number``, ``state``, ``seed_name``, ``outcome`` (failure kind, ``pruned_by`` reason or
    ``ok``), ``failure_kind``, ``failure`` (one-line evidence), ``feasible``, ``duration_s``,
    ``objective_<metric>``, ``param_<name>``, ``metric_<name>`` (user attr ``metrics``),
    ``constraint_<key>``, ``command`` (shell line).
    """
    names = objective_names(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        failure = t.user_attrs.get(TrialAttr.FAILURE) or {}
        kind = t.user_attrs.get(TrialAttr.FAILURE_KIND)
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "seed_name": t.user_attrs.get(TrialAttr.SEED_NAME),
            "outcome": kind
            or t.user_attrs.get(TrialAttr.PRUNED_BY)
            or (OK if t.state == TrialState.COMPLETE else t.state.name.lower()),
            "failure_kind": kind,
            "failure": _failure_line(failure) if failure else None,
            "feasible": t.state == TrialState.COMPLETE and is_feasible(t),
            "datetime_start": t.datetime_start,
            "duration_s": t.duration.total_seconds() if t.duration else None,
        }
        for i, name in enumerate(names):
            row[f"objective_{name}"] = t.values[i] if t.values else None
        row.update({f"param_{k}": v for k, v in t.params.items()})
        metrics = t.user_attrs.get(TrialAttr.METRICS) or {}
        row.update({f"metric_{k}": v for k, v in metrics.items()})
        row.update({f"constraint_{k}": v for k, v in t.constraints.items()})
        command = t.user_attrs.get(TrialAttr.COMMAND)
        row["command"] = shlex.join(command) if command else None
        rows.append(row)
    return pd.DataFrame(rows)


def _failure_line(failure: dict[str, Any]) -> str:
    parts = [str(failure.get("phase", ""))]
    if failure.get("detail"):
        parts.append(str(failure["detail"]))
    lines = failure.get("matched_lines") or []
    if lines:
        parts.append(str(lines[0])[:200])
    return "; ".join(p for p in parts if p)


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The trial whose user attr ``seed_name`` is ``baseline``, else trial 0 (None if no trials)."""
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.user_attrs.get(TrialAttr.SEED_NAME) == "baseline":
            return t
    return trials[0] if trials else None


def latency_frame(store: TunerStore, study: optuna.Study, trials: dict[str, FrozenTrial]) -> pd.DataFrame:
    """Measured (non-warm-up, successful) requests of ``trials`` ({label: trial}) with TTFT/E2E in ms."""
    parts = []
    for label, t in trials.items():
        req = store.requests_frame(study.study_name, [t.number])
        req = req[req["ok"] & ~req["warmup"]]
        parts.append(
            pd.DataFrame(
                {
                    "label": f"{label} (#{t.number})",
                    # float even when empty: a crashed baseline has no requests (object dtype)
                    "ttft_ms": req["ttft_s"].astype("float64") * 1000.0,
                    "e2e_ms": req["e2e_s"].astype("float64") * 1000.0,
                }
            )
        )
    return (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["label", "ttft_ms", "e2e_ms"])
    )


def capacity_frame(trials: dict[str, FrozenTrial]) -> pd.DataFrame:
    """Every capacity probe of the labelled trials (user attr ``capacity``), sorted by rate."""
    rows = [
        {"label": f"{label} (#{t.number})", **probe}
        for label, t in trials.items()
        for probe in (t.user_attrs.get(TrialAttr.CAPACITY) or {}).get("probes", [])
    ]
    cols = ["label", "rate", "verdict", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "goodput"]
    frame = pd.DataFrame(rows)
    return frame[[c for c in cols if c in frame]].sort_values(["label", "rate"]) if rows else frame
