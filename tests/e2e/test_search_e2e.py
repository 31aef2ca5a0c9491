"""search efficiency (known constraints, window pruning, confirmation, crash learning) against real simulator processes: known constraints before launch, window pruning
told apart from crashes, and confirmation of the top candidates with repeats."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tuner.launch.process import ProcessLauncher
from tuner.report.learning import is_crash, is_pruned_slow
from tuner.space.sample import params_to_flags
from tuner.space.schema import SearchSpace
from tuner.space.sections import ConfirmSpec, PruningSpec
from tuner.study.confirm import confirm_top, record_confirmation
from tuner.testing.study_cli import ROOT, server_pids
from tuner.trial.measure import ConfigRunner
from tuner.trial.objective import TrialRunner
from tuner.trial.pruning import build_pruner, check_windows, window_should_stop

CONSTRAINED = ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq-constrained.yaml"
RAW = yaml.safe_load(CONSTRAINED.read_text())
BASELINE = dict(RAW["seed_trials"][0]["params"])
FAST = {**BASELINE, "quantization": "awq_marlin", "mem-fraction-static": 0.72}  # marlin fits below ~0.75


def space(**workload: Any) -> SearchSpace:
    data = copy.deepcopy(RAW)
    data["workload"].update(
        {"num_requests": 8, "warmup_requests": 1, "output_len": 4, "stall_timeout_s": 3, **workload}
    )
    data["target"]["startup_scale"] = 0.01
    data["launch"]["stop_timeout_s"] = 2
    return SearchSpace.model_validate(data)


def make_study(tmp_path: Path, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    return optuna.create_study(
        study_name="s", storage=f"sqlite:///{tmp_path}/s.db", direction="maximize", pruner=pruner
    )


def test_known_constraint_prunes_before_launch_without_a_server(tmp_path: Path) -> None:
    sp = space()
    study = make_study(tmp_path)
    runner = ConfigRunner(sp, ProcessLauncher(), study="known", log_dir=tmp_path)
    graphs = {**BASELINE, "cuda-graph-backend-decode": "full", "cuda-graph-max-bs-decode": 8}
    fp8 = {**BASELINE, "kv-cache-dtype": "fp8_e4m3"}
    for params in (graphs, fp8):
        study.enqueue_trial(params)
    study.optimize(TrialRunner(runner), n_trials=2)
    assert not list(tmp_path.glob("*.log"))  # no server was started: none wrote a log
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED]
    for t, name in zip(trials, ("cuda-graphs-segfault-on-sm120", "fp8-kv-unsupported"), strict=True):
        assert t.user_attrs["failure_kind"] == "infeasible_config"
        assert t.user_attrs["failure"]["phase"] == "precheck"
        assert name in t.user_attrs["failure"]["detail"]
        assert t.user_attrs["command"] == []  # never launched
        assert t.constraints["crash"] == 1  # TPE ranks it on the bad side
        assert not is_crash(t)
    assert not list(tmp_path.glob("known-*.log")), "a server log exists: a server was started"
    assert not server_pids("known")


def _run(
    study: optuna.Study, runner: ConfigRunner, params: dict[str, Any], spec: PruningSpec
) -> optuna.trial.FrozenTrial:
    """One trial through the real runner, with the search package's window hook."""
    trial = study.ask()
    flags = params_to_flags(runner.space, params)
    metric = runner.space.objectives[0].metric
    outcome = runner.measure(
        flags, run_index=trial.number, should_stop=window_should_stop(trial, spec, metric)
    )
    try:
        value = TrialRunner(runner).record(trial, outcome)
        study.tell(trial, value)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    return study.get_trials()[-1]


def test_wilcoxon_stops_a_clearly_slower_trial_and_tells_it_apart_from_a_crash(tmp_path: Path) -> None:
    sp = space(num_requests=32, window_requests=4, output_len=6)  # 8 windows
    spec = PruningSpec(pruner="wilcoxon")
    check_windows(spec, sp.workload)
    study = make_study(tmp_path, build_pruner(spec, n_objectives=1))
    runner = ConfigRunner(sp, ProcessLauncher(), study="prune", log_dir=tmp_path)
    best = _run(study, runner, FAST, spec)
    assert best.state is TrialState.COMPLETE
    assert sorted(best.intermediate_values) == list(range(8))  # one value per window, paired by index
    slow = _run(study, runner, BASELINE, spec)  # eager AWQ kernels: far slower on every window
    assert slow.state is TrialState.PRUNED
    assert is_pruned_slow(slow) and "failure_kind" not in slow.user_attrs and not is_crash(slow)
    assert 4 <= len(slow.intermediate_values) < 8  # stopped after 4 windows, before the end
    assert slow.user_attrs["timings"]["bench_s"] < best.user_attrs["timings"]["bench_s"] * 1.5
    crash = _run(study, runner, {**FAST, "mem-fraction-static": 0.9}, spec)  # marlin workspace: CUDA OOM
    assert crash.state is TrialState.PRUNED and crash.user_attrs["failure_kind"] == "cuda_oom"
    assert is_crash(crash) and not is_pruned_slow(crash)
    assert not server_pids("prune")


def test_confirm_remeasures_the_top_candidates_with_intervals(tmp_path: Path) -> None:
    sp = space()
    study = make_study(tmp_path)
    runner = ConfigRunner(sp, ProcessLauncher(), study="confirm", log_dir=tmp_path)
    for params in (FAST, BASELINE, {**FAST, "enable-two-batch-overlap": True}):
        study.enqueue_trial(params)
    study.optimize(TrialRunner(runner), n_trials=3)  # the third hangs under load: not a candidate
    seen: list[tuple[int, int]] = []
    conf = confirm_top(
        study,
        sp,
        runner,
        ConfirmSpec(top_k=3, repeats=2),
        on_repeat=lambda c, r, _: seen.append((c.trial_number, r)),
    )
    assert seen == [(0, 0), (1, 0), (0, 1), (1, 1)]  # interleaved rounds, feasible candidates only
    winner = conf.winner
    assert winner is not None and winner.trial_number == 0 and winner.stable
    assert winner.ci is not None and winner.ci.low <= winner.ci.mean <= winner.ci.high and winner.ci.n == 2
    runner_up = conf.candidates[1]
    assert runner_up.vs_winner is not None and runner_up.vs_winner.estimate > 1.3
    assert "#0" in conf.verdict
    record_confirmation(study, conf)
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db").user_attrs[
        "confirmation"
    ]
    assert stored["candidates"][0]["trial"] == 0 and len(stored["candidates"][0]["values"]) == 2
    text = "\n".join(conf.lines())
    assert "95% CI" in text and "verdict:" in text
    assert not server_pids("confirm")


@pytest.mark.parametrize("pruner", ["median", "patient"])
def test_running_value_pruners_get_the_running_throughput(tmp_path: Path, pruner: str) -> None:
    sp = space(num_requests=12, window_requests=4)
    spec = PruningSpec(pruner=pruner, n_startup_trials=0, warmup_windows=0, patience=0)
    study = make_study(tmp_path, build_pruner(spec, n_objectives=1))
    runner = ConfigRunner(sp, ProcessLauncher(), study=f"run-{pruner}", log_dir=tmp_path)
    first = _run(study, runner, FAST, spec)
    values = list(first.intermediate_values.values())
    assert len(values) == 3
    # the last running value is the trial's own final throughput
    assert values[-1] == pytest.approx(first.value, rel=0.02)
