"""``python -m tuner.report`` on real study databases (SQLite and PostgreSQL), run as the CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tuner.objective.ranking import ranked_trials
from tuner.report.frames import baseline_trial, latency_frame
from tuner.sim.profiles import MODELS
from tuner.space import load_space
from tuner.store import TunerStore, make_optuna_storage
from tuner.testing.store import backend_database, populate_demo_study

SPACE = Path("search_spaces/sglang-rtx5090-qwen3-32b-awq.yaml")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with backend_database(request.param, tmp_path) as u:
        yield u


def report(url: str, study: str, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tuner.report", "--storage", url, "--study", study, "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_single_objective_report(url: str, tmp_path: Path) -> None:
    space = load_space(SPACE).model_dump(mode="json")
    study = populate_demo_study(url, "single", space=space)
    out = tmp_path / "single"
    run = report(url, "single", out)
    assert run.returncode == 0, run.stderr

    frame = pd.read_csv(out / "trials.csv")
    assert len(frame) == len(study.trials) == 10
    assert pd.read_parquet(out / "trials.parquet")["number"].tolist() == frame["number"].tolist()
    kinds = frame.set_index("number")["failure_kind"]
    assert kinds[7] == "cuda_oom" and kinds[8] == "segfault" and kinds.isna().sum() == 8
    assert frame.set_index("number").loc[9, "state"] == "FAIL"
    assert not frame.set_index("number").loc[3, "feasible"]  # violates the TTFT SLO
    assert {"param_mem-fraction-static", "metric_ttft_p99_ms", "constraint_crash"} <= set(frame.columns)

    # The best is the feasible complete trial with the highest throughput, computed here independently.
    feasible = [
        t for t in study.trials if t.state.name == "COMPLETE" and t.constraints["slo_ttft_p99_ms"] <= 0
    ]
    best = max(feasible, key=lambda t: t.values[0])
    md = (out / "report.md").read_text()
    assert f"## Best configuration (trial #{best.number})" in md
    assert "| cuda_oom | 1 | 7 |" in md
    # the answer leads: best against the baseline seed, and its decode speed against the GPU's bound
    answer = md.split("## Answer", 1)[1].split("\n## ", 1)[0]
    assert md.index("## Answer") < md.index("## Failures by kind") < md.index("## Top feasible trials")
    base = study.trials[0]
    assert f"- Best / baseline (#0): {best.values[0] / base.values[0]:.3f}x on output_throughput" in answer
    bound = 1.792e12 / MODELS["qwen3-32b-awq"].weight_bytes  # RTX 5090 bandwidth / the AWQ weights
    share = 100 * 1000 / best.user_attrs["metrics"]["tpot_median_ms"] / bound
    assert f"- Decode speed of the best: {share:.1f} % of the estimated bound 1.792 TB/s / " in answer
    assert "decode_bound_pct" in md
    # the load the best was measured under: its source and the lengths its measured requests had
    workload = md.split(f"## Workload (trial #{best.number}'s measured requests)", 1)[1].split("\n## ", 1)[0]
    assert "Prompts: synthetic words (lengths in words); arrival: closed; fingerprint `" in workload
    assert "| tokens | p10 | p50 | p90 | max |" in workload and "| prompt_tokens |" in workload
    launch = (out / "best-launch.sh").read_text()
    assert "sglang.launch_server --model-path Qwen/Qwen3-32B-AWQ" in launch
    assert f"--schedule-policy {best.params['schedule-policy']}" in launch
    # Simulator target: the docker line uses the image of the engine version the flags were checked for
    assert "lmsysorg/sglang:v0.5.23" in (out / "best-docker-run.sh").read_text()
    assert f"quantization: {best.params['quantization']}" in (out / "best-flags.yaml").read_text()

    page = (out / "report.html").read_text()
    for title in (
        "Optimisation history",
        "Parameter importance",
        "Failures by kind",
        "Workload",
        "Latency distribution",
    ):
        assert f"<h2>{title}</h2>" in page
    assert "Pareto front" not in page
    # the text rendered (tables, lists), not Markdown in a <pre>, and before the first figure
    assert "<h2>Answer</h2>" in page and "<table>" in page and "| cuda_oom |" not in page
    assert page.index("<h2>Answer</h2>") < page.index("<h2>Optimisation history</h2>")
    assert "<script src=" not in page and "plotly.js v" in page.lower()  # self-contained: js inline


def test_two_objective_report_has_pareto_front(url: str, tmp_path: Path) -> None:
    populate_demo_study(url, "multi", metrics=("output_throughput", "ttft_p99_ms"),
                        image="lmsysorg/sglang:v0.5.5", seed=3)  # fmt: skip
    out = tmp_path / "multi"
    run = report(url, "multi", out)
    assert run.returncode == 0, run.stderr
    assert "<h2>Pareto front</h2>" in (out / "report.html").read_text()
    docker = (out / "best-docker-run.sh").read_text()
    assert "lmsysorg/sglang:v0.5.5" in docker and "sglang.launch_server" in docker
    frame = pd.read_csv(out / "trials.csv")
    assert {"objective_output_throughput", "objective_ttft_p99_ms"} <= set(frame.columns)


def test_latency_of_best_and_baseline_comes_from_request_records(url: str) -> None:
    study = populate_demo_study(url, "lat", seed=5)
    best, base = ranked_trials(study)[0], baseline_trial(study)
    assert base is not None and base.user_attrs["seed_name"] == "baseline"
    with TunerStore(url) as store:
        lat = latency_frame(store, study, {"best": best, "baseline": base})
        expected = [r.ttft_s * 1000 for r in store.read_requests("lat", best.number)
                    if r.ok and not r.warmup and r.ttft_s is not None]  # fmt: skip
    assert lat[lat.label == f"best (#{best.number})"].ttft_ms.tolist() == pytest.approx(expected)


def test_few_trials_skip_importance_but_still_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'few.db'}"
    study = optuna.create_study(study_name="few", storage=make_optuna_storage(url), direction="maximize")
    study.set_metric_names(["output_throughput"])
    for x in (1.0, 2.0):
        t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        t.set_user_attr("command", ["python3", "-m", "sglang.launch_server", "--x", str(x)])
        t.set_user_attr("flags", {"x": x})
        study.tell(t, x)
    run = report(url, "few", tmp_path / "few")
    assert run.returncode == 0, run.stderr
    assert "parameter importance skipped: 2 complete trial(s)" in run.stderr
    assert "--x 2.0" in (tmp_path / "few" / "best-launch.sh").read_text()
    # no engine version recorded on this hand-made study: nothing to pin the image to
    assert "lmsysorg/sglang:latest" in (tmp_path / "few" / "best-docker-run.sh").read_text()


def test_unknown_study_and_bad_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    optuna.create_study(study_name="there", storage=make_optuna_storage(url))
    run = report(url, "missing", tmp_path / "o")
    assert run.returncode == 3 and "no study 'missing'" in run.stderr and "studies there: there" in run.stderr
    run = report("postgresql+psycopg://u:pw@127.0.0.1:1/db", "s", tmp_path / "o")
    assert run.returncode == 3 and "u:***@127.0.0.1:1/db" in run.stderr and ":pw@" not in run.stderr


@pytest.fixture(scope="module")
def real_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """A short real study: ``python -m tuner.study`` against the shipped simulator (4 trials)."""
    tmp = tmp_path_factory.mktemp("real")
    url = f"sqlite:///{tmp / 'study.db'}"
    cmd = [sys.executable, "-m", "tuner.study", "--space", str(SPACE), "--trials", "4", "--seed", "1",
           "--storage", url, "--study", "real", "--out", str(tmp / "out")]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert run.returncode in (0, 5), run.stdout[-3000:] + run.stderr[-3000:]  # 5: no feasible trial
    return url, "real", tmp


def test_report_of_a_real_study_run(real_study: tuple[str, str, Path]) -> None:
    url, name, tmp = real_study
    out = tmp / "report"
    run = report(url, name, out)
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name=name, storage=make_optuna_storage(url))
    frame = pd.read_csv(out / "trials.csv").set_index("number")
    assert sorted(frame.index) == [t.number for t in study.trials] and len(frame) >= 4
    for t in study.trials:  # every trial as recorded, failures included
        assert frame.loc[t.number, "state"] == t.state.name
        kind = frame.loc[t.number, "failure_kind"]
        assert (None if pd.isna(kind) else kind) == t.user_attrs.get("failure_kind")
    ranked = ranked_trials(study)
    md = (out / "report.md").read_text()
    if not ranked:
        assert not (out / "best-launch.sh").exists() and "no feasible complete trial" in md
        return
    best = ranked[0]
    assert f"## Best configuration (trial #{best.number})" in md
    assert "sglang.launch_server --model-path Qwen/Qwen3-32B-AWQ" in (out / "best-launch.sh").read_text()
    with TunerStore(url) as store:
        measured = [r for r in store.read_requests(name, best.number) if r.ok and not r.warmup]
    assert measured, "the runner stores every request of a measured trial"
    assert (
        f"best (#{best.number})" in md
        and "<h2>Latency distribution</h2>" in (out / "report.html").read_text()
    )


def test_a_confirmed_study_answers_with_its_intervals(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conf.db'}"
    study = populate_demo_study(url, "conf", space=load_space(SPACE).model_dump(mode="json"))
    ranked = ranked_trials(study)
    best, base = ranked[0].number, baseline_trial(study).number  # type: ignore[union-attr]
    study.set_user_attr("confirmation", {
        "metric": "output_throughput", "repeats": 4, "verdict": f"trial #{best} wins",
        "candidates": [
            {"trial": best, "ci": {"mean": 50.0, "low": 48.0, "high": 52.0}, "stable": True},
            {"trial": base, "baseline": "baseline", "ci": {"mean": 30.0, "low": 29.0, "high": 31.0}, "stable": True,
             "vs_winner": {"estimate": 1.667, "low": 1.6, "high": 1.73, "confidence": 0.95, "n": 4,
                           "method": "rounds paired"}},
        ],
    })  # fmt: skip
    assert report(url, "conf", tmp_path / "r").returncode == 0
    md = (tmp_path / "r" / "report.md").read_text()
    answer = md.split("## Answer", 1)[1].split("\n## ", 1)[0]
    assert "- Confirmed best / baseline: 1.667 [1.600, 1.730]" in answer
    assert f"- Verdict: trial #{best} wins" in answer
    assert "Best / baseline (#" not in answer  # confirmed: no one-measurement ratio beside it
    assert f"| {best} |  | 50.000 | 48.000 | 52.000 | yes |" in answer  # the confirmation's table
