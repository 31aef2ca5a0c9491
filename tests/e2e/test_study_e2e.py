"""The product end to end: ``python -m tuner.study`` against the real simulator process, SQLite on disk."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.testing.study_cli import (
    ROOT,
    assert_seeds_crashed,
    exit_code,
    popen_study,
    seed,
    server_pids,
    small_space,
    study_cmd,
    wait_for,
)


def load(tmp_path: Path, study: str = "t") -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/t.db")


def test_study_of_ten_trials_prunes_crashes_with_their_kinds(tmp_path: Path) -> None:
    seeds = [
        seed("baseline"),
        seed("cuda-graphs-on-sm120", **{"cuda-graph-backend-decode": "full", "cuda-graph-max-bs-decode": 8}),
        seed("fp8-kv", **{"kv-cache-dtype": "fp8_e5m2"}),
        seed("awq-marlin", quantization="awq_marlin"),
        seed("too-much-memory", **{"mem-fraction-static": 0.95, "max-total-tokens": None}),
    ]
    space = small_space(tmp_path, seeds=seeds)
    proc = subprocess.run(
        study_cmd(space, tmp_path, trials=10, study="ten"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    study = load(tmp_path, "ten")
    trials = study.get_trials()
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 10
    by_seed = assert_seeds_crashed(
        trials,
        {
            "cuda-graphs-on-sm120": "segfault",
            "fp8-kv": "cuda_oom",
            "awq-marlin": "cuda_oom",
            "too-much-memory": "not_enough_memory",
        },
    )
    assert by_seed["baseline"].state is TrialState.COMPLETE
    assert by_seed["baseline"].constraints["crash"] == 0
    # every trial that ran a server has its log as an artifact and its flags/command recorded
    for t in trials:
        if t.state is not TrialState.WAITING:  # a repair queued by the last crash waits for a resume
            assert "command" in t.user_attrs and "flags" in t.user_attrs
    best = tmp_path / "out" / "ten"
    for name in ("best-launch.sh", "best-docker-run.sh", "best-flags.yaml"):
        assert (best / name).stat().st_size > 0
    assert "python3 -m sglang.launch_server" in (best / "best-launch.sh").read_text()
    assert "failures by kind" in out and "segfault" in out
    # the summary leads with the answer: the best against the seed trials, then the crash detail
    ranked = sorted((t for t in trials if t.state is TrialState.COMPLETE), key=lambda t: -t.values[0])
    base = by_seed["baseline"]
    answer = out.index(f"answer: best trial #{ranked[0].number}, output_throughput {ranked[0].values[0]:.2f}")
    if ranked[0].number != base.number:
        ratio = f"  best / baseline: {ranked[0].values[0] / base.values[0]:.3f}x on output_throughput"
        assert answer < out.index(ratio) < out.index("failures by kind")
    assert "decode speed of the best: " in out  # the simulated RTX 5090 and model have profiles
    assert not server_pids("ten"), "a simulated server outlived the study"


def test_sigkilled_tuner_resumes_and_leaves_no_server(tmp_path: Path) -> None:
    space = small_space(tmp_path, num_requests=40)
    cmd = study_cmd(space, tmp_path, "--heartbeat", "1", trials=3, study="k")
    log = tmp_path / "first.log"
    first = popen_study(cmd, log)
    try:
        wait_for(lambda: "measuring" in log.read_text(), 120, "the first trial to start measuring")
        assert server_pids("k"), "no server running mid-trial"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    time.sleep(3)  # past the heartbeat grace period (2 x 1 s): the killed trial is stale
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout + second.stderr
    study = load(tmp_path, "k")
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 3
    assert TrialState.RUNNING not in states
    assert TrialState.FAIL in states  # the killed trial, failed by the heartbeat check and retried
    assert not server_pids("k")


@pytest.mark.parametrize("started", ["foreground", "background"])
def test_sigint_stops_cleanly_and_records_the_interrupted_trial(tmp_path: Path, started: str) -> None:
    """Also when started as a script's background job, which inherits SIGINT ignored."""
    space = small_space(tmp_path, num_requests=60)
    log = tmp_path / "run.log"
    proc = popen_study(
        study_cmd(space, tmp_path, trials=3, study="i"), log, sigint_ignored=started == "background"
    )
    wait_for(lambda: "measuring" in log.read_text(), 120, "a trial to start measuring")
    proc.send_signal(signal.SIGINT)
    assert exit_code(proc, 60, log) == 130, log.read_text()
    trials = load(tmp_path, "i").get_trials()
    failed = [t for t in trials if t.state is TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs.get("interrupted") is True
    assert TrialState.RUNNING not in [t.state for t in trials]
    assert not server_pids("i")
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert text.count("interrupted: the running trial was recorded") == 1
    # resumed: the interrupted configuration is measured after all, without costing the study a trial
    resumed = subprocess.run(study_cmd(space, tmp_path, trials=3, study="i"), cwd=ROOT, capture_output=True,
                             text=True, timeout=400)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (
        f"re-queued 1 trial(s) interrupted before their measurement ended: #{failed[0].number}"
        in resumed.stderr
    )
    (rerun,) = [
        t for t in load(tmp_path, "i").get_trials() if t.user_attrs.get("rerun_of") == failed[0].number
    ]
    assert rerun.params == failed[0].params and rerun.state in (TrialState.COMPLETE, TrialState.PRUNED)


def test_a_kill_while_parameters_were_chosen_reruns_the_queued_configuration_whole(tmp_path: Path) -> None:
    """What a SIGKILL between a trial's first and last suggestion leaves (state FAIL, first few params):
    a queued seed is re-run whole, not its first values plus the sampler's (the storm found a 'baseline'
    re-run with CUDA graphs on, segfaulting, re-run at every resume); a sampler's trial had decided
    nothing and is not re-run."""
    space = small_space(tmp_path, seeds=[seed("baseline")])
    cmd = study_cmd(space, tmp_path, trials=1, study="cut")
    # the study as the killed run left it: the seed queued, popped, three of its values suggested
    study = optuna.create_study(study_name="cut", storage=f"sqlite:///{tmp_path}/t.db", direction="maximize")
    whole = seed("baseline")["params"]
    first = {k: whole[k] for k in ("quantization", "schedule-policy", "schedule-conservativeness")}
    dists = {
        "quantization": optuna.distributions.CategoricalDistribution(["awq", "awq_marlin"]),
        "schedule-policy": optuna.distributions.CategoricalDistribution(["fcfs", "lpm", "lof", "random", "dfs-weight"]),
        "schedule-conservativeness": optuna.distributions.FloatDistribution(0.5, 1.5, step=0.1),
    }  # fmt: skip
    cut_seed = optuna.create_trial(
        state=TrialState.FAIL, params=first, distributions=dists,
        user_attrs={"seed_name": "baseline"}, system_attrs={"fixed_params": whole},
    )  # fmt: skip
    cut_sampled = optuna.create_trial(state=TrialState.FAIL, params=first, distributions=dists)
    study.add_trials([cut_seed, cut_sampled])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "re-queued 1 trial(s) interrupted before their measurement ended: #0" in proc.stderr
    (rerun,) = [t for t in load(tmp_path, "cut").get_trials() if "rerun_of" in t.user_attrs]
    assert rerun.user_attrs["rerun_of"] == 0 and rerun.user_attrs["seed_name"] == "baseline"
    assert rerun.user_attrs["flags"]["cuda-graph-backend-decode"] == "disabled"
    assert rerun.state is TrialState.COMPLETE, rerun.user_attrs.get("failure")


def test_bad_space_file_stops_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml").read_text()
                   .replace("schedule-policy:", "schedule-polcy:", 1))  # fmt: skip
    proc = subprocess.run(study_cmd(bad, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "schedule-polcy" in proc.stderr
    assert not (tmp_path / "t.db").exists() or not load(tmp_path).get_trials()


def test_unreachable_storage_is_a_clear_error(tmp_path: Path) -> None:
    space = small_space(tmp_path)
    cmd = study_cmd(space, tmp_path)
    cmd[cmd.index("--storage") + 1] = "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "storage error" in proc.stderr and "secret" not in proc.stderr


def test_two_objectives_give_a_pareto_front(tmp_path: Path) -> None:
    import yaml

    space = small_space(tmp_path, seeds=[seed("baseline"), seed("balanced-v2", base="balanced-v2")])
    data = yaml.safe_load(space.read_text())
    data["objectives"] = [
        {"metric": "output_throughput", "direction": "maximize"},
        {"metric": "ttft_p99_ms", "direction": "minimize"},
    ]
    space.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = subprocess.run(study_cmd(space, tmp_path, trials=3, study="mo"), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load(tmp_path, "mo")
    assert len(study.directions) == 2
    assert study.metric_names == ["output_throughput", "ttft_p99_ms"]
    assert "Pareto front" in proc.stdout
    assert study.best_trials and all(len(t.values) == 2 for t in study.best_trials)


def test_capacity_objective_end_to_end(tmp_path: Path) -> None:
    """`maximize capacity_rps`: each trial searches the highest Poisson rate within the SLOs; probes are kept."""
    import yaml

    data = yaml.safe_load((ROOT / "search_spaces" / "sglang-rtx5090-capacity.yaml").read_text())
    data["target"]["startup_scale"] = 0.01
    data["workload"].update({"warmup_requests": 1})
    data["capacity"].update({"probe_requests": 10, "min_probe_requests": 10, "max_probes": 4, "time_budget_s": 60,
                             "min_rate": 0.5, "max_rate": 4, "cooldown_s": 0.2})  # fmt: skip
    data["seed_trials"] = [s for s in data["seed_trials"] if s["name"] == "baseline"]
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = subprocess.run(study_cmd(space, tmp_path, trials=1, study="cap"), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr
    trial = load(tmp_path, "cap").get_trials()[0]
    probes = trial.user_attrs["capacity"]["probes"]
    assert 1 <= len(probes) <= 4
    for p in probes:
        assert {"rate", "verdict", "ttft_p99_ms", "tpot_p99_ms", "goodput"} <= set(p)
    passed = [p["rate"] for p in probes if p["verdict"] == "pass"]
    assert trial.user_attrs["metrics"]["capacity_rps"] == (max(passed) if passed else 0.0)
    assert "probing" in proc.stderr


@pytest.mark.parametrize("after_s", [0.8, 1.5, 3.0])  # after the interpreter itself started
def test_ctrl_c_while_starting_is_one_line(tmp_path: Path, after_s: float) -> None:
    """During the imports, the set-up (space, database, launcher) or the first launch: never a traceback."""
    log = tmp_path / "run.log"
    proc = popen_study(study_cmd(small_space(tmp_path), tmp_path, trials=1, study="s"), log)
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    code = exit_code(proc, 60, log)
    text = log.read_text()
    assert code in (0, 130) and "Traceback" not in text, text  # 0: it was already done
    assert code == 0 or "interrupted" in text.strip().splitlines()[-1] or "interrupted: the running" in text


DATA = ROOT / "search_spaces" / "data"
CLOSED = {"kind": "closed", "clients": 4}


@pytest.mark.parametrize(
    ("dataset", "arrival"),
    [
        ({"kind": "sharegpt", "path": str(DATA / "sharegpt-small.json"), "turns": "all", "output_len": 8}, CLOSED),
        # conversations turn by turn, two at a time
        ({"kind": "sharegpt", "path": str(DATA / "sharegpt-small.json"), "turns": "all", "output_len": 8},
         {"kind": "sessions", "clients": 2, "think_time_s": 0.1}),
        ({"kind": "shared_prefix", "groups": 2, "prefix_len": 200, "share": 0.9}, CLOSED),
        # a trace at its own times, four times as fast
        ({"kind": "trace", "path": str(DATA / "trace-small.jsonl"), "block_size": 64}, {"kind": "trace", "speed": 4.0}),
    ],
    ids=["sharegpt", "sessions", "shared_prefix", "trace"],
)  # fmt: skip
def test_a_study_runs_on_each_dataset_kind(
    tmp_path: Path, dataset: dict[str, object], arrival: dict[str, object]
) -> None:
    seeds = [seed("baseline"), seed("balanced-v2", base="balanced-v2")]
    space = small_space(tmp_path, seeds=seeds, dataset=dataset, output_len=8, arrival=arrival)
    proc = subprocess.run(
        study_cmd(space, tmp_path, trials=2), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    done = [t for t in load(tmp_path).get_trials() if t.state is TrialState.COMPLETE]
    assert len(done) == 2 and all(t.user_attrs["metrics"]["completed"] == 8 for t in done)
