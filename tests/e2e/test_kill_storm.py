"""Twenty SIGKILLs at random moments of a simulator study (seeded): afterwards no server is left, no
trial is RUNNING, the study reaches its total, and every configuration it sampled was measured (or
crashed on its own) exactly once - a kill costs time, never a configuration or a duplicate."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.space.load import load_space
from tuner.space.sample import is_complete
from tuner.testing.study_cli import ROOT, popen_study, server_pids, small_space, study_cmd

KILLS = 20
TOTAL = 12


@pytest.mark.slow
def test_twenty_kills_lose_no_configuration_and_leave_nothing_running(tmp_path: Path) -> None:
    space = small_space(tmp_path, num_requests=12)
    cmd = study_cmd(space, tmp_path, "--heartbeat", "1", trials=TOTAL, study="storm")
    rng = random.Random(0)
    for i in range(KILLS):
        proc = popen_study(cmd, tmp_path / f"run-{i}.log")
        time.sleep(rng.uniform(1.0, 6.0))  # start-up, a launch, a warm-up or a measurement
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(rng.choice((0.0, 2.5)))  # resumed at once, or after the heartbeat grace (2 x 1 s)
    time.sleep(2.5)
    final = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    time.sleep(1)
    assert not server_pids("storm"), "a server outlived the kills"

    trials = optuna.load_study(study_name="storm", storage=f"sqlite:///{tmp_path}/t.db").get_trials()
    states = Counter(t.state for t in trials)
    assert states[TrialState.RUNNING] == 0
    waiting = [t for t in trials if t.state is TrialState.WAITING]
    queued = {"repair", "neighbour_of", "near"}  # repairs, duplicates' neighbours, local moves
    assert all(queued & set(t.user_attrs) for t in waiting)  # queued by the last trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == TOTAL
    configs = Counter(json.dumps(t.user_attrs["flags"], sort_keys=True) for t in finished)
    assert max(configs.values()) == 1, [c for c, n in configs.items() if n > 1]  # measured once each
    # a kill while the sampler chose leaves no configuration to lose; a queued trial is whole from the start
    space_ = load_space(space)
    intended = {t.number: {**t.system_attrs.get("fixed_params", {}), **t.params} for t in trials}
    interrupted = [
        t for t in trials if t.state is TrialState.FAIL and "duplicate_of" not in t.user_attrs
        and is_complete(space_, intended[t.number])
    ]  # fmt: skip
    for t in finished:  # a re-run runs the configuration that was cut, not its first few values
        if "rerun_of" in t.user_attrs:
            assert t.params == intended[t.user_attrs["rerun_of"]], t.number
    done = {json.dumps(sorted(t.params.items()), default=str) for t in finished}
    # every configuration a kill interrupted was measured later (re-queued on resume or retried)
    lost = [
        t.number
        for t in interrupted
        if json.dumps(sorted(intended[t.number].items()), default=str) not in done
    ]
    assert not lost, f"interrupted and never measured: trials {lost}"
    print(f"{KILLS} kills: {states[TrialState.FAIL]} trials cut, {len(trials)} trials in all")
