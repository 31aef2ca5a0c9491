"""The report's figures (plotly): history, Pareto front, parameter importance, failures by parameter,
and the latency and capacity of the best configuration against the baseline."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.study import StudyDirection
from optuna.trial import TrialState
from plotly.subplots import make_subplots

from tuner.report.best import objective_names
from tuner.report.frames import OK
from tuner.space.schema import BoolParam, CategoricalParam, SearchSpace
from tuner.store.attrs import StudyAttr

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


def importance_figure(study: optuna.Study, space: SearchSpace | None = None) -> tuple[go.Figure | None, str]:
    """Parameter importance of the first objective with its uncertainty, or None with the reason.

    fANOVA's importances over ``BOOTSTRAPS`` resamples of the complete trials: a bar is the median,
    its whisker the 10th-90th percentile, so a ranking that one lucky trial makes is seen as such.
    A conditional parameter is named with its parent (``torch-compile-max-bs (if enable-torch-compile)``).
    Skipped when too few trials completed or when their objective values spread no wider than the
    run-to-run noise the study's confirmation measured (importance would rank noise)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (
            f"parameter importance skipped: {len(complete)} complete trial(s), "
            f"needs at least {MIN_TRIALS_FOR_IMPORTANCE}"
        )
    values = [t.values[0] for t in complete]
    noise = confirmed_noise(study)
    spread = _relative_spread(values)
    if noise is not None and spread is not None and spread <= 2 * noise:
        return None, (
            f"parameter importance skipped: the complete trials' values spread {100 * spread:.1f} % "
            f"(interquartile / median), within twice the run-to-run noise the confirmation measured "
            f"({100 * noise:.1f} %): an importance ranking would rank noise"
        )
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    sign = -1.0 if study.directions[0] == StudyDirection.MAXIMIZE else 1.0
    # the evaluators rank importance for reaching LOW target values: a maximised objective is flipped
    target = (lambda t: sign * t.values[0]) if len(study.directions) > 1 else None
    rng = random.Random(0)
    draws: dict[str, list[float]] = {}
    try:
        names = list(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), target=target))
        for b in range(BOOTSTRAPS):
            resample = optuna.create_study(directions=study.directions)
            resample.add_trials([complete[rng.randrange(len(complete))] for _ in complete])
            try:
                got = get_param_importances(
                    resample, evaluator=FanovaImportanceEvaluator(seed=b), target=target, params=names
                )
            except (RuntimeError, ValueError, ZeroDivisionError):
                continue  # a resample where nothing varies
            for n in names:
                draws.setdefault(n, []).append(float(got.get(n, 0.0)))
    except (RuntimeError, ValueError, ZeroDivisionError) as e:
        # e.g. every complete trial has the same value, or a parameter never varied
        return None, f"parameter importance skipped: {e}"
    if not draws:
        return None, "parameter importance skipped: no resample of the complete trials varied"
    stats = sorted(((n, *np.percentile(d, [50, 10, 90])) for n, d in draws.items()), key=lambda row: row[1])
    labels = [_with_parent(n, space) for n, *_ in stats]
    fig = go.Figure(
        go.Bar(
            x=[m for _, m, _, _ in stats],
            y=labels,
            orientation="h",
            error_x={"type": "data", "symmetric": False,
                     "array": [hi - m for _, m, _, hi in stats], "arrayminus": [m - lo for _, m, lo, _ in stats]},
            hovertemplate="%{y}: median %{x:.2f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title=f"Parameter importance for {objective_names(study)[0]} (fANOVA; median and 10th-90th "
        f"percentile over {len(next(iter(draws.values())))} bootstrap resamples of {len(complete)} trials)",
        xaxis_title="importance",
        height=max(300, 28 * len(stats) + 120),
        margin={"l": 260},
    )
    return fig, ""


BOOTSTRAPS = 30


def confirmed_noise(study: optuna.Study) -> float | None:
    """The run-to-run noise the study's confirmation measured: the largest relative half-width of its
    candidates' intervals (``None``: no confirmation)."""
    cands = (study.user_attrs.get(StudyAttr.CONFIRMATION) or {}).get("candidates", [])
    widths = [
        (c["ci"]["high"] - c["ci"]["low"]) / 2 / abs(c["ci"]["mean"])
        for c in cands
        if c.get("ci") and c["ci"].get("mean")
    ]
    return max(widths) if widths else None


def _relative_spread(values: list[float]) -> float | None:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return None if med == 0 else float((q3 - q1) / abs(med))


def _with_parent(name: str, space: SearchSpace | None) -> str:
    spec = space.parameters.get(name) if space is not None else None
    when = getattr(spec, "when", None)
    if not when:
        return name
    return f"{name} (if {', '.join(when)})"


def failures_figure(frame: pd.DataFrame, space: SearchSpace | None = None) -> go.Figure | None:
    """For each parameter, the outcome (ok or failure kind) of every trial against its value.

    Values are labels in the space's own order (choices as listed, ``False`` before ``True``; numbers
    ascending; ``None`` first), integers shown as integers; the outcome labels stand on the left
    column only, the same rows in every panel."""
    params = [c for c in frame.columns if c.startswith("param_")]
    if frame.empty or not params:
        return None
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[p.removeprefix("param_") for p in params],
        horizontal_spacing=0.06,
        vertical_spacing=min(0.12, 0.5 / rows),
    )
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
        name = p.removeprefix("param_")
        spec = space.parameters.get(name) if space is not None else None
        axis, order = axis_labels(frame[p], spec)
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
        if order is not None:
            fig.update_xaxes(
                type="category", categoryorder="array", categoryarray=order, row=r + 1, col=c + 1
            )
        fig.update_yaxes(type="category", categoryorder="array", categoryarray=outcomes,
                         showticklabels=c == 0, row=r + 1, col=c + 1)  # fmt: skip
    fig.update_layout(title="Failures by kind against parameter values", height=260 * rows)
    return fig


def axis_labels(values: pd.Series, spec: object | None = None) -> tuple[pd.Series, list[str] | None]:
    """The x values of one parameter's panel, and the category order (``None``: a plain numeric axis).

    >>> axis_labels(pd.Series([None, 1024.0, -1.0, 512.0]))[1]
    ['None', '-1', '512', '1024']
    """
    plain = [v for v in values if not _missing(v)]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in plain)
    if numeric and len(plain) == len(values) and not isinstance(spec, CategoricalParam | BoolParam):
        return values, None  # a number for every trial: a numeric axis sorts itself
    labels = values.map(_label)
    if isinstance(spec, CategoricalParam):
        order = [_label(v) for v in spec.choices]
    elif isinstance(spec, BoolParam):
        order = ["False", "True"]
    else:
        order = []
    seen = sorted(set(labels), key=_label_key)
    order += [v for v in seen if v not in order]
    return labels, order


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _label(v: Any) -> str:
    """``None``, ``1024`` (not ``1024.0``), ``True``, ``fcfs``."""
    if _missing(v):
        return "None"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _label_key(label: str) -> tuple[int, float, str]:
    if label == "None":
        return (0, 0.0, "")
    try:
        return (1, float(label), "")
    except ValueError:
        return (2, 0.0, label)


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


def workload_figure(requests: pd.DataFrame) -> go.Figure | None:
    """The load one trial was measured under: prompt and output lengths (histograms) and the requests
    sent per second over the run (the offered load: flat for a closed loop, the trace's shape for a
    replayed trace)."""
    measured = requests[~requests["warmup"].astype(bool)] if not requests.empty else requests
    if measured.empty:
        return None
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=["prompt tokens", "output tokens", "requests sent per second"]
    )
    fig.add_trace(
        go.Histogram(x=measured["prompt_tokens"], name="prompt tokens", showlegend=False), row=1, col=1
    )
    fig.add_trace(
        go.Histogram(x=measured["output_tokens"], name="output tokens", showlegend=False), row=1, col=2
    )
    sent = (measured["sent_ns"] - measured["sent_ns"].min()) / 1e9
    span = float(sent.max())
    width = max(0.25, span / 40) if span > 0 else 1.0  # about 40 bins over the run
    counts = (sent // width).value_counts().sort_index()
    fig.add_trace(
        go.Scatter(x=counts.index * width, y=counts.values / width, mode="lines+markers", showlegend=False,
                   line={"shape": "hv"}, hovertemplate="%{x:.1f} s: %{y:.2f} req/s<extra></extra>"),
        row=1, col=3,
    )  # fmt: skip
    fig.update_xaxes(title_text="seconds since the first measured request", row=1, col=3)
    trial = int(measured["trial_number"].iloc[0])
    fig.update_layout(title=f"Workload of trial #{trial} (measured requests)", height=320)
    return fig
