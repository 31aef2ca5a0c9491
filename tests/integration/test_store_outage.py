"""The database going away mid-study: a clear StorageError, and every acknowledged write intact after.

Stops the local PostgreSQL cluster (fast mode: open transactions are aborted) while a writer
thread is writing trials, then starts it again.
"""

from __future__ import annotations

import threading
import time

import optuna
import pytest

from tuner.core.errors import StorageError
from tuner.store import TunerStore, make_optuna_storage, storage_errors
from tuner.testing.require import missing
from tuner.testing.store import (
    local_cluster,
    make_records,
    pg_ctl,
    postgres_url_or_skip,
    scratch_postgres_database,
)

N = 3000  # requests per trial: big enough that a write is in flight when the server stops


def _wait_for_store(url: str, timeout_s: float = 30.0) -> TunerStore:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return TunerStore(url)
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.postgres
@pytest.mark.exclusive("postgres")  # stops the server
def test_postgres_stopping_mid_write_keeps_records_intact() -> None:
    base = postgres_url_or_skip()
    cluster = local_cluster(base)
    if cluster is None:
        reason = "the PostgreSQL server of TUNER_TEST_PG_URL is not a local Debian cluster: cannot stop it"
        missing(reason)
    with scratch_postgres_database(base) as url:
        store = TunerStore(url)
        storage = make_optuna_storage(url)
        study = optuna.create_study(study_name="outage", storage=storage)
        first = study.ask()
        first.set_user_attr("command", ["python3", "-m", "sglang.launch_server"])
        study.tell(first, 123.0)
        store.write_trial("outage", 0, requests=make_records(N, seed=0))

        acked: list[int] = []
        failed: list[tuple[int, StorageError]] = []

        def writer() -> None:
            n = 1
            while n < 1000:
                try:
                    store.write_trial("outage", n, requests=make_records(N, seed=n))
                except StorageError as e:
                    failed.append((n, e))
                    return
                acked.append(n)
                n += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            while not acked and thread.is_alive():
                time.sleep(0.01)
            pg_ctl(cluster, "stop")
            thread.join(60)
            assert not thread.is_alive()
            assert failed, "a write while the server was down must raise StorageError"
            lost, err = failed[0]
            msg = str(err)
            assert "postgresql+psycopg://tuner:***@" in msg and "tuner:tuner@" not in msg
            assert f"writing trial {lost} of study 'outage'" in msg
            with pytest.raises(StorageError, match="server is running"), storage_errors(url, "asking on"):
                study.ask()
        finally:
            pg_ctl(cluster, "start")

        store.close()
        store = _wait_for_store(url)
        for n in [0, *acked]:
            assert store.read_requests("outage", n) == make_records(N, seed=n), f"trial {n} damaged"
        # The interrupted write is all or nothing, and can simply be repeated.
        assert len(store.read_requests("outage", lost)) in (0, N)
        store.write_trial("outage", lost, requests=make_records(N, seed=lost))
        assert store.read_requests("outage", lost) == make_records(N, seed=lost)
        store.close()

        # Optuna's tables survived too, and the study carries on with a fresh storage object.
        storage.engine.dispose()
        storage = make_optuna_storage(url)
        again = optuna.load_study(study_name="outage", storage=storage)
        assert again.trials[0].value == 123.0
        assert again.trials[0].user_attrs["command"] == ["python3", "-m", "sglang.launch_server"]
        trial = again.ask()
        again.tell(trial, 7.0)
        assert [t.value for t in again.trials] == [123.0, 7.0]
        storage.engine.dispose()
