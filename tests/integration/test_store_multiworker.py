"""Several workers (processes, as on several hosts) on one PostgreSQL study, starting at the same moment."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import sqlalchemy

from tuner.store import SCHEMA_VERSION, TunerStore, make_optuna_storage
from tuner.testing.store import postgres_url_or_skip, scratch_postgres_database

WORKER = """
import sys, optuna
from tuner.store import TunerStore, make_optuna_storage, check_multiworker_safe
from tuner.testing.store import make_records
url, worker = sys.argv[1], sys.argv[2]
check_multiworker_safe(url, 3)
store = TunerStore(url)  # all three race to create the tables (Optuna's and ours) on an empty database
study = optuna.create_study(study_name="shared", storage=make_optuna_storage(url, heartbeat_interval=5),
                            direction="maximize", load_if_exists=True)
def objective(trial):
    x = trial.suggest_int("x", 1, 64)
    trial.set_user_attr("worker", worker)
    store.write_trial("shared", trial.number, requests=make_records(30, seed=trial.number))
    return float(x)
study.optimize(objective, n_trials=5)
"""


@pytest.mark.postgres
def test_three_workers_share_one_study() -> None:
    with scratch_postgres_database(postgres_url_or_skip()) as url:
        procs = [
            subprocess.Popen([sys.executable, "-c", WORKER, url, str(w)], stderr=subprocess.PIPE, text=True)
            for w in range(3)
        ]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        study = optuna.load_study(study_name="shared", storage=make_optuna_storage(url))
        numbers = sorted(t.number for t in study.trials)
        assert numbers == list(range(15))
        assert {t.user_attrs["worker"] for t in study.trials} == {"0", "1", "2"}
        with TunerStore(url) as store:
            frame = store.requests_frame("shared")
            assert frame.groupby("trial_number").size().to_dict() == dict.fromkeys(range(15), 30)
            with store.engine.connect() as conn:
                versions = conn.execute(sqlalchemy.text("SELECT version FROM tuner_schema_version")).all()
        assert [v[0] for v in versions] == [SCHEMA_VERSION]  # stamped once despite the race
