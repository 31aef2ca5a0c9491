"""URLs and the Optuna storage: wrong URLs give clear StorageErrors, SQLite refuses many workers."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest

from tuner.core.errors import ConfigError, StorageError
from tuner.core.net import free_port
from tuner.store import TunerStore, check_multiworker_safe, make_optuna_storage, mask_url
from tuner.testing.store import postgres_url_or_skip


def test_mask_url_hides_password() -> None:
    assert (
        mask_url("postgresql+psycopg://tuner:s3cret@db:5432/t") == "postgresql+psycopg://tuner:***@db:5432/t"
    )
    assert mask_url("sqlite:///storage/tuner.db") == "sqlite:///storage/tuner.db"
    assert "s3cret" not in mask_url("not a url://u:s3cret@h")


def test_unreachable_postgres_is_a_clear_storage_error() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://tuner:s3cret@127.0.0.1:{port}/tuner"
    for opener in (make_optuna_storage, TunerStore):
        with pytest.raises(StorageError) as err:
            opener(url)
        msg = str(err.value)
        assert f"postgresql+psycopg://tuner:***@127.0.0.1:{port}/tuner" in msg
        assert "s3cret" not in msg and "server is running" in msg


@pytest.mark.postgres
def test_wrong_password_is_a_clear_storage_error() -> None:
    good = postgres_url_or_skip()
    bad = good.replace("tuner:tuner@", "tuner:wrong-pw@")
    with pytest.raises(StorageError, match="password authentication failed") as err:
        TunerStore(bad)
    assert "wrong-pw" not in str(err.value)


@pytest.mark.parametrize("url", ["nosuchdb://x/y", "sqlite:////nonexistent-dir/sub/x.db", "just words"])
def test_malformed_or_unopenable_urls(url: str) -> None:
    with pytest.raises(StorageError, match=r"storage failed|not a database URL|no database driver"):
        make_optuna_storage(url)


def test_sqlite_missing_directory_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="directory of the SQLite file must exist"):
        TunerStore(f"sqlite:///{tmp_path}/missing/x.db")


def test_sqlite_refuses_several_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    check_multiworker_safe(url, 1)
    with pytest.raises(ConfigError, match=r"--storage: 3 workers cannot share the SQLite database"):
        check_multiworker_safe(url, 3)
    check_multiworker_safe("postgresql+psycopg://u:p@h/d", 8)


def test_a_trial_that_never_beat_is_stale_after_the_grace_period(tmp_path: Path) -> None:
    """A worker killed between creating its trial and its first heartbeat: Optuna alone leaves that
    trial RUNNING for good (no heartbeat to age); ours fails it after the grace period and re-queues it,
    and leaves alone a trial that has just started."""
    url = f"sqlite:///{tmp_path}/hb.db"
    storage = make_optuna_storage(url, heartbeat_interval=1, grace_period=1, max_retry=1)
    study = optuna.create_study(study_name="hb", storage=storage)
    dead = study.ask({"x": optuna.distributions.IntDistribution(1, 8)})  # no heartbeat recorded
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state is optuna.trial.TrialState.RUNNING  # just started: not stale yet
    time.sleep(2.2)
    study.optimize(lambda t: float(t.suggest_int("x", 1, 8)), n_trials=1)
    assert study.trials[0].state is optuna.trial.TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].params == dead.params
    storage.engine.dispose()


def test_heartbeat_retries_a_stale_trial(tmp_path: Path) -> None:
    """A worker that died mid-trial (no heartbeat) gets its trial failed and re-queued once."""
    url = f"sqlite:///{tmp_path}/hb.db"
    storage = make_optuna_storage(url, heartbeat_interval=1, grace_period=1, max_retry=1)
    study = optuna.create_study(study_name="hb", storage=storage)
    dead = study.ask({"x": optuna.distributions.IntDistribution(1, 8)})
    storage.record_heartbeat(dead._trial_id)  # the worker beat once, then died
    time.sleep(2.2)
    study.optimize(lambda t: float(t.suggest_int("x", 1, 8)), n_trials=1)
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].params == dead.params
    storage.engine.dispose()
