"""``python -m tuner.report``: a study as tables, plots and the best configuration as commands.

    python -m tuner.report --storage sqlite:///storage/tuner.db --study NAME --out reports/NAME

Writes into ``--out``:

* ``trials.csv``, ``trials.parquet`` — one row per trial, failures included (:func:`trials_frame`);
* ``report.md`` — the answer first (best against the space's seed trials, with the confirmation's
  intervals; its decode speed against the GPU's bandwidth bound where profiles allow; the crash
  regions learned), then counts, failures by kind, learned constraints, top trials, best configuration;
* ``report.html`` — the same text rendered, then plots (self-contained: plotly.js is embedded, no network needed):
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

import optuna
import pandas as pd
import plotly.graph_objects as go
from markdown_it import MarkdownIt
from optuna.trial import FrozenTrial, TrialState

from tuner.core.cli import run_cli
from tuner.core.errors import StorageError
from tuner.objective.ranking import ranked_trials
from tuner.report.best import BestConfig, best_config, objective_names
from tuner.report.figures import (
    capacity_figure,
    failures_figure,
    history_figure,
    importance_figure,
    latency_figure,
    pareto_figure,
    workload_figure,
)
from tuner.report.frames import baseline_trial, capacity_frame, latency_frame, trials_frame
from tuner.report.roofline import DecodeBound, decode_bound
from tuner.report.sections import answer_section, markdown_table, pct, quality_section, workload_section
from tuner.report.summary import write_learned
from tuner.search.learned import LearnedConstraint, learned_constraints
from tuner.space.schema import SearchSpace
from tuner.store import DEFAULT_URL, TunerStore, make_optuna_storage, mask_url, storage_errors
from tuner.store.attrs import StudyAttr, TrialAttr

# -- data -------------------------------------------------------------------------------------


# -- figures ----------------------------------------------------------------------------------


# -- writers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    out: Path
    files: list[Path]
    best: BestConfig | None
    notes: list[str]


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

    space_data = study.user_attrs.get(StudyAttr.SPACE)
    space = SearchSpace.model_validate(space_data) if space_data is not None else None
    figures: list[tuple[str, go.Figure]] = []
    if not frame.empty and ranked:
        figures.append(("Optimisation history", history_figure(study)))
    pareto = pareto_figure(study)
    if pareto is not None:
        figures.append(("Pareto front", pareto))
    imp, why = importance_figure(study, space)
    if imp is not None:
        figures.append(("Parameter importance", imp))
    else:
        notes.append(why)
    fail = failures_figure(frame, space)
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
    # the best trial's load (with no feasible trial, the last one that completed its benchmark), the
    # requests of best and baseline and the best's provenance: the tuner's own tables, one connection
    measured = ranked[0] if ranked else next(
        (t for t in reversed(study.get_trials(deepcopy=False)) if t.state is TrialState.COMPLETE), None)  # fmt: skip
    load, lat, prov = pd.DataFrame(), pd.DataFrame(), None
    with TunerStore(storage_url) as store:
        if measured is not None:
            load = store.requests_frame(study.study_name, [measured.number])
        if ranked and baseline is not None:
            pair = (
                {"best": ranked[0]}
                if baseline.number == ranked[0].number
                else {"best": ranked[0], "baseline": baseline}
            )
            lat = latency_frame(store, study, pair)
        if ranked:
            prov = store.read_provenance(study.study_name, ranked[0].number)
    load_fig = workload_figure(load)
    if load_fig is not None:
        figures.append(("Workload", load_fig))
    if ranked and baseline is not None:
        lat_fig = latency_figure(lat)
        if lat_fig is not None:
            figures.append(("Latency distribution", lat_fig))
        else:
            notes.append("latency distribution skipped: no request records for the best/baseline trials")
    storage.engine.dispose()

    learned = learned_constraints(study.get_trials(deepcopy=False))
    if learned and space is not None:
        written.append(write_learned(learned, space, out))
    bound = decode_bound(space, prov.gpu_name if prov else None) if space is not None else None
    md = markdown_report(study, frame, ranked, best, lat, notes, cap, learned, bound, load, space)
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


def markdown_report(
    study: optuna.Study,
    frame: pd.DataFrame,
    ranked: Sequence[FrozenTrial],
    best: BestConfig | None,
    lat: pd.DataFrame,
    notes: Sequence[str],
    cap: pd.DataFrame | None = None,
    learned: Sequence[LearnedConstraint] = (),
    bound: DecodeBound | None = None,
    load: pd.DataFrame | None = None,
    space: SearchSpace | None = None,
) -> str:
    """The report's text: the answer first (best against the baselines, with intervals where the study
    confirmed them; how far from the hardware's bound; what the crashes taught), then counts,
    failures, learned constraints, top trials, latency of best vs baseline, the best configuration."""
    names = objective_names(study)
    dirs = ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions, strict=True))
    states = frame["state"].value_counts() if not frame.empty else pd.Series(dtype=int)
    counted = f" ({', '.join(f'{k} {v}' for k, v in states.items())})" if len(states) else ""
    out = [f"# Study `{study.study_name}`\n\n", f"Objectives: {dirs}. Trials: {len(frame)}{counted}.\n"]
    out += answer_section(study, ranked, names, learned, bound)
    if not frame.empty:
        fails = frame[frame["failure_kind"].notna()]
        if not fails.empty:
            out.append("\n## Failures by kind\n")
            counts = fails.groupby("failure_kind")["number"].agg(["count", lambda s: ", ".join(map(str, s))])
            counts.columns = ["trials", "trial numbers"]
            out.append(markdown_table(counts.reset_index()))
    if learned:
        out.append("\n## Learned from crashes\n")
        out.append("\nEach crash region below is backed by the trials named; the search pruned it before "
                   "launch from then on. `learned-constraints.yaml` beside this report holds them as "
                   "`constraints:` entries for the space file.\n\n")  # fmt: skip
        out.extend(f"- {c.describe()}\n" for c in learned)
    if ranked:
        out.append("\n## Top feasible trials\n")
        cols = ["number", "seed_name", *[f"objective_{n}" for n in names]]
        top = frame.set_index("number").loc[[t.number for t in ranked[:10]]].reset_index()
        extra = [c for c in ("metric_ttft_p99_ms", "metric_tpot_p99_ms", "metric_error_rate") if c in top]
        table = top[cols + extra]
        if bound is not None:
            shares = {t.number: bound.share(t.user_attrs.get(TrialAttr.METRICS)) for t in ranked[:10]}
            table = table.assign(decode_bound_pct=[pct(shares.get(n)) for n in top["number"]])
        out.append(markdown_table(table))
        if bound is not None:
            out.append(
                f"\n`decode_bound_pct`: 1000 / median TPOT against the estimated bound {bound.formula()}.\n"
            )
    out += quality_section(study, names)
    if load is not None and not load.empty:
        out += workload_section(load, space)
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
    """A self-contained HTML page: the Markdown text rendered (raw HTML in it escaped), then the figures,
    plotly.js inline."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Study {html.escape(study.study_name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}pre{white-space:pre-wrap;"
        "background:#f6f8fa;padding:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}</style></head><body>",
        f"<h1>Study {html.escape(study.study_name)}</h1>",
    ]
    # the text first (the answer leads), rendered; the figures after it
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown.split("\n", 1)[1])
    parts.append(body)
    for i, (title, fig) in enumerate(figures):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=i == 0))
    parts.append("</body></html>")
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
