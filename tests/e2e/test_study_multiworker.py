"""Several ``python -m tuner.study`` workers sharing one PostgreSQL study, against the real simulator.

Each test starts real worker processes (``--workers 2 --worker a|b``) on a scratch database and
checks the finished study with ``bench/gpu/multiworker_check.py``, the verifier the two-GPU run uses.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bench.gpu.multiworker_check import retry_of, verify
from tuner.store.store import TunerStore
from tuner.testing.store import postgres_url_or_skip, scratch_postgres_database
from tuner.testing.study_cli import ROOT, popen_study, small_space, wait_for

TRIALS = 8


@pytest.fixture
def pg_url() -> Iterator[str]:
    with scratch_postgres_database(postgres_url_or_skip()) as url:
        yield url


def worker_cmd(space: Path, url: str, tmp_path: Path, worker: str, seed: int, study: str) -> list[str]:
    """One worker of a two-worker study; each worker seeds its sampler differently."""
    return [
        sys.executable, "-m", "tuner.study", "--space", str(space), "--storage", url, "--study", study,
        "--trials", str(TRIALS), "--workers", "2", "--worker", worker, "--heartbeat", "1",
        "--seed", str(seed), "--out", str(tmp_path / f"out-{worker}"),
    ]  # fmt: skip


def worker_server_pids(study: str, worker: str) -> list[int]:
    """Processes started for ``study`` by ``worker`` (the launcher labels them in their environment)."""
    want = {f"TUNER_STUDY={study}".encode(), f"TUNER_WORKER={worker}".encode()}
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if want <= set((entry / "environ").read_bytes().split(b"\0")):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def start_workers(space: Path, url: str, tmp_path: Path, study: str) -> dict[str, subprocess.Popen[bytes]]:
    """Start workers a and b at once (their seed-trial enqueues race: nothing may be doubled)."""
    return {
        w: popen_study(worker_cmd(space, url, tmp_path, w, seed, study), tmp_path / f"{w}.log")
        for w, seed in (("a", 1), ("b", 2))
    }


def stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.postgres
def test_two_workers_share_one_study(pg_url: str, tmp_path: Path) -> None:
    space = small_space(tmp_path, num_requests=16)
    procs = start_workers(space, pg_url, tmp_path, "mw")
    try:
        codes = {w: p.wait(timeout=150) for w, p in procs.items()}
    finally:
        stop_all(procs)
    logs = {w: (tmp_path / f"{w}.log").read_text() for w in procs}
    assert codes == {"a": 0, "b": 0}, logs
    verdict = verify(pg_url, "mw", total=TRIALS, workers={"a": None, "b": None}, strict=True)
    assert verdict.ok, verdict.render()
    study = optuna.load_study(study_name="mw", storage=pg_url)
    trials = study.get_trials()
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == TRIALS
    assert TrialState.RUNNING not in {t.state for t in trials}
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    with TunerStore(pg_url) as store:
        workers = [store.read_provenance("mw", t.number).extra["worker"] for t in finished]  # type: ignore[union-attr]
    assert set(workers) == {"a", "b"}, workers
    assert not worker_server_pids("mw", "a") and not worker_server_pids("mw", "b")


@pytest.mark.postgres
def test_killed_worker_trial_is_retried_by_the_other(pg_url: str, tmp_path: Path) -> None:
    space = small_space(tmp_path, num_requests=24)
    procs = start_workers(space, pg_url, tmp_path, "mwk")
    log_a = tmp_path / "a.log"
    try:
        wait_for(lambda: "measuring" in log_a.read_text(), 120, "worker a's first trial to start measuring")
        assert worker_server_pids("mwk", "a"), "worker a has no server mid-trial"
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait()
        # The server dies with its tuner (PDEATHSIG on the process group leader), not at b's end.
        wait_for(lambda: not worker_server_pids("mwk", "a"), 10, "worker a's server to die with it")
        assert procs["b"].wait(timeout=150) == 0, (tmp_path / "b.log").read_text()
    finally:
        stop_all(procs)
    verdict = verify(pg_url, "mwk", total=TRIALS, workers={"a": None, "b": None}, killed=["a"], strict=True)
    assert verdict.ok, verdict.render()
    trials = optuna.load_study(study_name="mwk", storage=pg_url).get_trials()
    # the killed worker's trial; duplicate proposals (FAIL, never measured) are not stale
    failed = [t for t in trials if t.state is TrialState.FAIL and "duplicate_of" not in t.user_attrs]
    assert len(failed) == 1, [(t.number, t.state) for t in trials]
    retries = [t for t in trials if retry_of(t) == failed[0].number]
    assert len(retries) == 1 and retries[0].params == failed[0].params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    with TunerStore(pg_url) as store:
        by_worker = store.read_provenance("mwk", retries[0].number)
        assert by_worker is not None and by_worker.extra["worker"] == "b"
        assert store.read_provenance("mwk", failed[0].number) is None  # a died before recording it
    assert TrialState.RUNNING not in {t.state for t in trials}


def test_two_workers_on_sqlite_are_refused(tmp_path: Path) -> None:
    space = small_space(tmp_path)
    cmd = worker_cmd(space, f"sqlite:///{tmp_path}/t.db", tmp_path, "a", 1, "s")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--storage" in proc.stderr and "SQLite" in proc.stderr and "PostgreSQL" in proc.stderr
    assert "2 workers" in proc.stderr
    assert not (tmp_path / "t.db").exists()
