"""The store contract, run against every backend: SQLite (a temp file) and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from tuner.core.errors import StorageError
from tuner.core.records import GpuSample
from tuner.store import SCHEMA_VERSION, Deployment, Provenance, TunerStore, fingerprint, make_optuna_storage
from tuner.testing.store import backend_database, make_records


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with backend_database(request.param, tmp_path) as u:
        yield u


def test_fresh_database_gets_current_schema(url: str) -> None:
    with TunerStore(url) as store:
        assert store.schema_version == SCHEMA_VERSION
        names = set(sqlalchemy.inspect(store.engine).get_table_names())
    assert {
        "tuner_schema_version",
        "tuner_requests",
        "tuner_gpu_samples",
        "tuner_provenance",
        "tuner_deployments",
    } <= names
    # Reopening an up-to-date database is a no-op.
    with TunerStore(url, upgrade=False) as store:
        assert store.schema_version == SCHEMA_VERSION


def test_trial_round_trip(url: str) -> None:
    records = make_records(60)
    samples = [
        GpuSample(
            t_s=0.5 * k,
            gpu_index=0,
            memory_used_mib=1000.0 + k,
            memory_total_mib=24564.0,
            utilization_pct=None if k == 0 else 87.5,
            source="simulator",
        )
        for k in range(20)
    ]
    prov = Provenance(
        study_name="s",
        trial_number=3,
        engine="sglang",
        engine_version="0.5.5",
        image="lmsysorg/sglang:v0.5.5",
        image_digest="sha256:" + "ab" * 32,
        gpu_name="NVIDIA GeForce RTX 5090",
        gpu_driver="580.95",
        gpu_memory_mib=32607.0,
        gpu_count=1,
        workload_fingerprint=fingerprint({"api": "generate"}),
        extra={"cuda": "12.8"},
    )
    with TunerStore(url) as store:
        store.write_trial("s", 3, requests=records, gpu_samples=samples, provenance=prov)
        store.write_trial("other", 3, requests=records[:5])
        assert store.read_requests("s", 3) == records
        assert store.read_gpu_samples("s", 3) == samples
        assert store.read_provenance("s", 3) == prov
        assert store.read_provenance("s", 4) is None
        frame = store.requests_frame("s")
        assert len(frame) == 60 and set(frame.trial_number) == {3}
        ok = frame[frame.ok]
        expected = [r.ttft_s for r in records if r.ok]
        assert ok.ttft_s.tolist() == pytest.approx(expected)
        assert frame.e2e_s.isna().sum() == sum(1 for r in records if not r.ok)
        # A repeated write replaces the trial's rows instead of duplicating them.
        store.write_trial("s", 3, requests=records[:10], provenance=prov)
        assert store.read_requests("s", 3) == records[:10]
        assert store.read_gpu_samples("s", 3) == []
        assert len(store.read_requests("other", 3)) == 5


def test_mismatched_provenance_is_refused_before_writing(url: str) -> None:
    with TunerStore(url) as store:
        with pytest.raises(ValueError, match="passed for"):
            store.write_trial(
                "s", 1, requests=make_records(3), provenance=Provenance("s", 2, engine="sglang")
            )
        assert store.read_requests("s", 1) == []


def test_deployment_history(url: str) -> None:
    t0 = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)
    with TunerStore(url) as store:
        assert store.last_deployment("s") is None
        for day, reason in enumerate(["initial", "nightly: +12% goodput", "rollback: SLO breach"]):
            store.record_deployment(
                Deployment(
                    study_name="s",
                    command=["python3", "-m", "sglang.launch_server", "--port", "30000"],
                    flags={"mem-fraction-static": [0.8, 0.85, 0.82][day], "enable-torch-compile": day == 1},
                    params={"mem_fraction_static": [0.8, 0.85, 0.82][day]},
                    metrics={"goodput": 10.0 + day},
                    trial_number=day,
                    reason=reason,
                    image="lmsysorg/sglang:v0.5.5",
                    deployed_at=t0 + dt.timedelta(days=day),
                )
            )
        history = store.deployments("s")
        assert [d.reason for d in history] == ["initial", "nightly: +12% goodput", "rollback: SLO breach"]
        last = store.last_deployment("s")
        assert last is not None and last.deployed_at == t0 + dt.timedelta(days=2)
        assert last.flags == {"mem-fraction-static": 0.82, "enable-torch-compile": False}
        assert last.id is not None and store.deployments("nope") == []


def test_optuna_tables_live_beside_ours(url: str) -> None:
    storage = make_optuna_storage(url)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.set_user_attr("failure_kind", "cuda_oom")
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    with TunerStore(url) as store:
        store.write_trial("s", trial.number, requests=make_records(4))
        assert len(store.read_requests("s", trial.number)) == 4
    reloaded = optuna.load_study(study_name="s", storage=make_optuna_storage(url))
    assert reloaded.trials[0].user_attrs["failure_kind"] == "cuda_oom"
    storage.engine.dispose()


def test_newer_schema_is_refused(url: str) -> None:
    with TunerStore(url) as store:
        store.write_requests("s", 0, make_records(3))
        with store.engine.begin() as conn:
            conn.execute(
                sqlalchemy.text(
                    "INSERT INTO tuner_schema_version (version, description, tuner_version, applied_at) "
                    "VALUES (99, 'from the future', '9.9.9', CURRENT_TIMESTAMP)"
                )
            )
    with pytest.raises(StorageError, match=rf"schema version 99.*up to {SCHEMA_VERSION}"):
        TunerStore(url)
