"""The report's figures (plotly): history, Pareto front, parameter importance, failures by parameter,
and the latency and capacity of the best configuration against the baseline."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.study import StudyDirection
from optuna.trial import TrialState
from plotly.subplots import make_subplots

from tuner.report.best import objective_names
from tuner.report.frames import OK

# fANOVA on fewer complete trials than this says more about noise than about the parameters.
MIN_TRIALS_FOR_IMPORTANCE = 4


def history_figure(study: optuna.Study) -> go.Figure:
    """Optimisation history of the first objective (Optuna's plot)."""
    from optuna.visualization import plot_optimization_history

    name = objective_names(study)[0]
    if len(study.directions) == 1:
        fig = plot_optimization_history(study, target_name=name)
    else:
        fig = plot_optimization_history(study, target=lambda t: t.values[0], target_name=name)
    return fig.update_layout(title=f"Optimisation history: {name}")


def pareto_figure(study: optuna.Study) -> go.Figure | None:
    """Pareto front of a two-objective study; None otherwise."""
    if len(study.directions) != 2:
        return None
    from optuna.visualization import plot_pareto_front

    return plot_pareto_front(study, target_names=objective_names(study))


def importance_figure(study: optuna.Study) -> tuple[go.Figure | None, str]:
    """Parameter importance of the first objective, or None with the reason it was skipped."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (
            f"parameter importance skipped: {len(complete)} complete trial(s), "
            f"needs at least {MIN_TRIALS_FOR_IMPORTANCE}"
        )
    from optuna.visualization import plot_param_importances

    name = objective_names(study)[0]
    target = None
    if len(study.directions) > 1:
        # The evaluator ranks importance for reaching LOW target values: flip a maximised one.
        sign = -1.0 if study.directions[0] == StudyDirection.MAXIMIZE else 1.0
        target = lambda t: sign * t.values[0]  # noqa: E731
    try:
        return plot_param_importances(study, target=target, target_name=name), ""
    except (RuntimeError, ValueError, ZeroDivisionError) as e:
        # e.g. every complete trial has the same value, or a parameter never varied
        return None, f"parameter importance skipped: {e}"


def failures_figure(frame: pd.DataFrame) -> go.Figure | None:
    """For each parameter, the outcome (ok or failure kind) of every trial against its value."""
    params = [c for c in frame.columns if c.startswith("param_")]
    if frame.empty or not params:
        return None
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p.removeprefix("param_") for p in params])
    outcomes = sorted(frame["outcome"].astype(str).unique(), key=lambda o: (o != OK, o))
    palette = [
        "#2ca02c",
        "#d62728",
        "#ff7f0e",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ]
    for i, p in enumerate(params):
        r, c = divmod(i, cols)
        axis = frame[p].map(_axis_value)
        if (axis == "None").any():
            axis = axis.map(str)  # a None choice among numbers: label every value
        for j, outcome in enumerate(outcomes):
            mask = frame["outcome"].astype(str) == outcome
            sub = frame[mask]
            fig.add_trace(
                go.Scatter(
                    x=axis[mask],
                    y=[outcome] * len(sub),
                    mode="markers",
                    name=outcome,
                    legendgroup=outcome,
                    showlegend=i == 0,
                    marker={"color": palette[j % len(palette)], "size": 9, "opacity": 0.7},
                    text=[f"trial {n}" for n in sub["number"]],
                    hovertemplate="%{text}<br>%{x}<extra>%{y}</extra>",
                ),
                row=r + 1,
                col=c + 1,
            )
    fig.update_layout(title="Failures by kind against parameter values", height=260 * rows)
    return fig


def _axis_value(v: Any) -> Any:
    # Categorical params mix None, numbers and strings: plot them as labels on one axis.
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "None"
    return v


def latency_figure(lat: pd.DataFrame) -> go.Figure | None:
    """TTFT and E2E distributions (violin + box) per labelled trial."""
    if lat.empty:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=["TTFT (ms)", "E2E latency (ms)"])
    for k, label in enumerate(lat["label"].unique()):
        sub = lat[lat["label"] == label]
        color = ["#1f77b4", "#7f7f7f", "#ff7f0e"][k % 3]
        for col, metric in ((1, "ttft_ms"), (2, "e2e_ms")):
            fig.add_trace(
                go.Violin(y=sub[metric], name=label, box_visible=True, meanline_visible=True, spanmode="hard",
                          line_color=color, legendgroup=label, showlegend=col == 1),
                row=1, col=col,
            )  # fmt: skip
    return fig.update_layout(title="Latency distribution: best configuration against the baseline")


def capacity_figure(cap: pd.DataFrame) -> go.Figure | None:
    """p99 TTFT and TPOT against the offered rate: where each configuration's latency bends up."""
    if cap.empty:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=["p99 TTFT (ms)", "p99 TPOT (ms)"])
    for label, part in cap.groupby("label"):
        for col, metric in enumerate(("ttft_p99_ms", "tpot_p99_ms"), start=1):
            fig.add_trace(
                go.Scatter(
                    x=part["rate"],
                    y=part[metric],
                    mode="lines+markers",
                    name=str(label),
                    legendgroup=str(label),
                    showlegend=col == 1,
                    text=part["verdict"],
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="offered rate (requests/s, Poisson)")
    fig.update_yaxes(type="log")
    return fig
