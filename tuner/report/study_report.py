"""``python -m tuner.report``: a study as tables, plots and the best configuration as commands.

    python -m tuner.report --storage sqlite:///storage/tuner.db --study NAME --out reports/NAME

Writes into ``--out``:

* ``trials.csv``, ``trials.parquet`` — one row per trial, failures included (:func:`trials_frame`);
* ``report.md`` — counts, failures by kind, top trials, best configuration;
* ``report.html`` — the same with plots (self-contained: plotly.js is embedded, no network needed):
  optimisation history, Pareto front (two objectives), parameter importance (when enough complete
  trials), failures by kind against each parameter, TTFT/E2E distribution of best vs baseline;
* ``best-launch.sh``, ``best-docker-run.sh``, ``best-flags.yaml`` — the best configuration.

Reads Optuna's tables and the ``tuner_requests`` table; never writes to the database.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from tuner.core.cli import run_cli
from tuner.core.errors import StorageError
from tuner.objective.ranking import is_feasible, ranked_trials
from tuner.report.best import BestConfig, best_config, objective_names
from tuner.store import DEFAULT_URL, TunerStore, make_optuna_storage, mask_url, storage_errors
from tuner.store.attrs import TrialAttr

# fANOVA on fewer complete trials than this says more about noise than about the parameters.
MIN_TRIALS_FOR_IMPORTANCE = 4
OK = "ok"  # outcome label of a trial without a failure


# -- data -------------------------------------------------------------------------------------


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


# -- figures ----------------------------------------------------------------------------------


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
                    "ttft_ms": req["ttft_s"] * 1000.0,
                    "e2e_ms": req["e2e_s"] * 1000.0,
                }
            )
        )
    return (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["label", "ttft_ms", "e2e_ms"])
    )


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


# -- writers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    out: Path
    files: list[Path]
    best: BestConfig | None
    notes: list[str]


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


def write_report(storage_url: str, study_name: str, out: Path) -> ReportFiles:
    """Build every output of the report for ``study_name`` into ``out``; see the module docstring.

    Raises StorageError (unreachable database, no such study) and never writes to the database.
    """
    storage = make_optuna_storage(storage_url)
    with storage_errors(storage_url, f"reading study {study_name!r} from"):
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError as e:
            known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
            raise StorageError(
                f"no study {study_name!r} in {mask_url(storage_url)}; "
                f"studies there: {', '.join(known) or 'none'}"
            ) from e
        frame = trials_frame(study)
        ranked = ranked_trials(study)
        baseline = baseline_trial(study)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes: list[str] = []

    written.append(out / "trials.csv")
    frame.to_csv(written[-1], index=False)
    written.append(out / "trials.parquet")
    _parquet_safe(frame).to_parquet(written[-1], index=False)

    best = best_config(study, ranked[0]) if ranked else None
    if best is not None:
        written += best.write(out)
    else:
        notes.append("no feasible complete trial: no best configuration to export")

    figures: list[tuple[str, go.Figure]] = []
    if not frame.empty and ranked:
        figures.append(("Optimisation history", history_figure(study)))
    pareto = pareto_figure(study)
    if pareto is not None:
        figures.append(("Pareto front", pareto))
    imp, why = importance_figure(study)
    if imp is not None:
        figures.append(("Parameter importance", imp))
    else:
        notes.append(why)
    fail = failures_figure(frame)
    if fail is not None:
        figures.append(("Failures by kind", fail))
    cap = pd.DataFrame()
    if ranked:
        pair = {"best": ranked[0]} if baseline is None or baseline.number == ranked[0].number else {
            "best": ranked[0], "baseline": baseline}  # fmt: skip
        cap = capacity_frame(pair)
        cap_fig = capacity_figure(cap)
        if cap_fig is not None:
            figures.append(("Latency against load (capacity probes)", cap_fig))
    lat = pd.DataFrame()
    if ranked and baseline is not None:
        with TunerStore(storage_url) as store:
            pair = (
                {"best": ranked[0]}
                if baseline.number == ranked[0].number
                else {"best": ranked[0], "baseline": baseline}
            )
            lat = latency_frame(store, study, pair)
        lat_fig = latency_figure(lat)
        if lat_fig is not None:
            figures.append(("Latency distribution", lat_fig))
        else:
            notes.append("latency distribution skipped: no request records for the best/baseline trials")
    storage.engine.dispose()

    md = markdown_report(study, frame, ranked, baseline, best, lat, notes, cap)
    written.append(out / "report.md")
    written[-1].write_text(md)
    written.append(out / "report.html")
    written[-1].write_text(html_report(study, md, figures))
    return ReportFiles(out, written, best, notes)


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    # Parquet columns need one type: a categorical param may mix None, numbers and strings.
    safe = frame.copy()
    for col in safe.columns:
        if safe[col].dtype == object:
            kinds = {
                type(v) for v in safe[col] if v is not None and not (isinstance(v, float) and math.isnan(v))
            }
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                safe[col] = safe[col].map(lambda v: None if v is None else json.dumps(v, default=str))
    return safe


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (floats to 3 decimals)."""

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def markdown_report(
    study: optuna.Study,
    frame: pd.DataFrame,
    ranked: Sequence[FrozenTrial],
    baseline: FrozenTrial | None,
    best: BestConfig | None,
    lat: pd.DataFrame,
    notes: Sequence[str],
    cap: pd.DataFrame | None = None,
) -> str:
    """The report's text: counts, failures, top trials, latency of best vs baseline, best configuration."""
    names = objective_names(study)
    dirs = ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions, strict=True))
    out = [f"# Study `{study.study_name}`\n", f"Objectives: {dirs}. Trials: {len(frame)}.\n"]
    if not frame.empty:
        states = frame["state"].value_counts()
        out.append("States: " + ", ".join(f"{k} {v}" for k, v in states.items()) + ".\n")
        fails = frame[frame["failure_kind"].notna()]
        if not fails.empty:
            out.append("\n## Failures by kind\n")
            counts = fails.groupby("failure_kind")["number"].agg(["count", lambda s: ", ".join(map(str, s))])
            counts.columns = ["trials", "trial numbers"]
            out.append(markdown_table(counts.reset_index()))
    if ranked:
        out.append("\n## Top feasible trials\n")
        cols = ["number", "seed_name", *[f"objective_{n}" for n in names]]
        top = frame.set_index("number").loc[[t.number for t in ranked[:10]]].reset_index()
        extra = [c for c in ("metric_ttft_p99_ms", "metric_tpot_p99_ms", "metric_error_rate") if c in top]
        out.append(markdown_table(top[cols + extra]))
    if baseline is not None and ranked and baseline.values and baseline.state == TrialState.COMPLETE:
        b = ranked[0]
        if b.number == baseline.number:
            out.append(f"\nThe baseline (#{b.number}) is the best feasible trial.\n")
        else:
            ratio = b.values[0] / baseline.values[0] if baseline.values[0] else float("nan")
            out.append(f"\nBest #{b.number} against baseline #{baseline.number}: {ratio:.3f}x on {names[0]} "
                       "(one measurement each).\n")  # fmt: skip
    if not lat.empty:
        out.append("\n## Latency of best against baseline (measured requests)\n")
        q = lat.groupby("label")[["ttft_ms", "e2e_ms"]].quantile([0.5, 0.9, 0.99]).unstack()
        q.columns = [f"{m}_p{int(p * 100)}" for m, p in q.columns]
        out.append(markdown_table(q.reset_index()))
    if cap is not None and not cap.empty:
        out.append("\n## Capacity probes of best and baseline (latency against offered load)\n")
        out.append(markdown_table(cap))
    if best is not None:
        out.append(f"\n## Best configuration (trial #{best.trial_number})\n")
        out.append("\n```sh\n" + shlex.join(best.command) + "\n```\n")
        out.append("\n```sh\n" + best.docker_run + "\n```\n")
        out.append("\n```yaml\n" + best.flags_yaml + "```\n")
    if notes:
        out.append("\n## Notes\n")
        out.extend(f"- {n}\n" for n in notes)
    return "".join(out)


def html_report(study: optuna.Study, markdown: str, figures: Sequence[tuple[str, go.Figure]]) -> str:
    """A self-contained HTML page: the Markdown text (preformatted) and the figures, plotly.js inline."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Study {html.escape(study.study_name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}pre{white-space:pre-wrap;"
        "background:#f6f8fa;padding:1em}</style></head><body>",
        f"<h1>Study {html.escape(study.study_name)}</h1>",
    ]
    for i, (title, fig) in enumerate(figures):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=i == 0))
    parts.append("<h2>Summary</h2><pre>" + html.escape(markdown) + "</pre></body></html>")
    return "\n".join(parts)


# -- CLI --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit codes: ``tuner.core.cli.ExitCode``."""
    p = argparse.ArgumentParser(prog="python -m tuner.report", description="Report of one study.")
    p.add_argument("--storage", default=DEFAULT_URL, help=f"database URL (default {DEFAULT_URL})")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--out", required=True, help="output directory")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return run_cli("tuner.report", lambda: _write(args.storage, args.study, Path(args.out)))


def _write(storage: str, study: str, out: Path) -> int:
    result = write_report(storage, study, out)
    for path in result.files:
        print(path)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
