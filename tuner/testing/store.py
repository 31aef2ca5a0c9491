"""Helpers for tests that need a real PostgreSQL: scratch databases and control of a local cluster.

The base URL comes from env ``TUNER_TEST_PG_URL`` (``scripts/setup-postgres.sh`` prints it); tests
skip without it unless ``TUNER_REQUIRE_ALL=1``, where they fail.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from tuner.core.records import RequestRecord
from tuner.store.attrs import StudyAttr
from tuner.store.store import TunerStore
from tuner.store.urls import make_optuna_storage

PG_ENV = "TUNER_TEST_PG_URL"


def postgres_url_or_skip() -> str:
    """The test PostgreSQL URL; pytest-skips (or fails under TUNER_REQUIRE_ALL=1) when unset."""
    import pytest

    url = os.environ.get(PG_ENV)
    if url:
        return url
    reason = f'{PG_ENV} is not set (run: eval "$(scripts/setup-postgres.sh --export)")'
    if os.environ.get("TUNER_REQUIRE_ALL") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def scratch_postgres_database(base_url: str) -> Iterator[str]:
    """Create a uniquely named database on the server of ``base_url``, yield its URL, drop it after."""
    name = f"tuner_test_{uuid.uuid4().hex[:12]}"
    # pre-ping: outage tests restart the server under this engine's pooled connection.
    admin = sqlalchemy.create_engine(base_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        yield sqlalchemy.engine.make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def local_cluster(url: str) -> tuple[str, str] | None:
    """The Debian cluster ``(version, name)`` serving ``url`` on this machine, or None.

    Used to stop and restart the server in outage tests; None when the server is remote or the
    Debian tools (``pg_lsclusters``) are absent.
    """
    u = sqlalchemy.engine.make_url(url)
    if u.host not in ("127.0.0.1", "localhost", "::1") or not shutil.which("pg_lsclusters"):
        return None
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        version, name, port = line.split()[:3]
        if int(port) == (u.port or 5432):
            return version, name
    return None


def pg_ctl(cluster: tuple[str, str], action: str) -> None:
    """Run ``pg_ctlcluster VERSION NAME action`` (``stop`` uses fast mode: aborts open transactions)."""
    extra = ["-m", "fast"] if action == "stop" else []
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action, *extra],
        check=True,
        capture_output=True,
        timeout=60,
    )


@contextmanager
def backend_database(kind: str, tmp_dir: Path) -> Iterator[str]:
    """A fresh, empty database URL of ``kind`` (``sqlite``: a file in ``tmp_dir``; ``postgres``: scratch)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_dir / 'study.db'}"
    else:
        with scratch_postgres_database(postgres_url_or_skip()) as url:
            yield url


def make_records(n: int, seed: int = 0, base_ns: int = 10**15) -> list[RequestRecord]:
    """Test data: request records shaped like the load generator's (streamed chunks, errors, warm-ups)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        sent = base_ns + i * 50_000_000
        if i % 17 == 5:
            out.append(
                RequestRecord(i, 128, 64, sent, status=503, error="HTTP 503: overloaded", window=i // 10)
            )
            continue
        first = sent + rng.randint(20_000_000, 400_000_000)
        chunks = [first + k * rng.randint(5_000_000, 30_000_000) for k in range(rng.randint(1, 40))]
        out.append(
            RequestRecord(
                index=i,
                prompt_tokens=rng.randint(16, 2048),
                max_new_tokens=64,
                sent_ns=sent,
                warmup=i < 2,
                first_token_ns=first,
                done_ns=chunks[-1] + 1_000,
                output_tokens=len(chunks),
                chunk_times_ns=chunks,
                chunk_tokens=[1] * len(chunks),
                ok=True,
                status=200,
                server_e2e_s=(chunks[-1] - sent) / 1e9,
                window=i // 10,
            )
        )
    return out


def populate_demo_study(
    url: str,
    name: str,
    *,
    metrics: Sequence[str] = ("output_throughput",),
    space: dict[str, Any] | None = None,
    image: str | None = None,
    seed: int = 0,
    artifact_dir: Path | None = None,
) -> optuna.Study:
    """Test data for reports and the dashboard: a study built through ``ask``/``tell`` as the runner does.

    Trials, in order: a ``baseline`` seed, six measured configurations (one violating the TTFT SLO),
    a CUDA OOM crash and a segfault (PRUNED, ``crash`` constraint 1, ``failure_kind``), and one FAIL
    (interrupted). Measured trials get request records in ``tuner_requests``; with ``artifact_dir``
    every trial gets a server log uploaded as an artifact, as the study runner does.
    """
    rng = random.Random(seed)
    storage = make_optuna_storage(url)
    directions = [
        optuna.study.StudyDirection.MAXIMIZE
        if m.endswith("throughput")
        else optuna.study.StudyDirection.MINIMIZE
        for m in metrics
    ]
    study = optuna.create_study(study_name=name, storage=storage, directions=directions)
    study.set_metric_names(list(metrics))
    if space is not None:
        study.set_user_attr("space", space)
    if image is not None:  # as a Docker study records the image its check inspected
        study.set_user_attr(StudyAttr.IMAGE, {"image": image, "engine": "sglang"})
    dists = {
        "quantization": optuna.distributions.CategoricalDistribution(["awq", "awq_marlin"]),
        "mem-fraction-static": optuna.distributions.FloatDistribution(0.70, 0.95, step=0.01),
        "chunked-prefill-size": optuna.distributions.CategoricalDistribution([None, 1024, 4096]),
        "schedule-policy": optuna.distributions.CategoricalDistribution(["fcfs", "lpm"]),
    }
    study.enqueue_trial(
        {
            "quantization": "awq",
            "mem-fraction-static": 0.85,
            "chunked-prefill-size": None,
            "schedule-policy": "fcfs",
        },
        user_attrs={"seed_name": "baseline"},
    )
    plan = ["ok"] * 7 + ["cuda_oom", "segfault", "interrupted"]
    with TunerStore(url) as store:
        for k, what in enumerate(plan):
            trial = study.ask(dists)
            flags = {k2: v for k2, v in trial.params.items() if v is not None}
            trial.set_user_attr("flags", flags)
            argv = ["python3", "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen3-32B-AWQ"]
            for flag, value in flags.items():
                argv += [f"--{flag}", str(value)]
            trial.set_user_attr("command", argv)
            if artifact_dir is not None:
                _upload_log(artifact_dir, trial, what)
            if what == "ok":
                tput = 20.0 + 30.0 * trial.params["mem-fraction-static"] + rng.uniform(0, 5) + k
                ttft = 3500.0 if k == 3 else 400.0 + rng.uniform(0, 900) - 20 * k
                values = {"output_throughput": tput, "ttft_p99_ms": ttft, "error_rate": 0.0,
                          "tpot_median_ms": 60.0 - 2 * k}  # fmt: skip
                trial.set_user_attr("metrics", values)
                trial.set_constraint("crash", 0.0)
                trial.set_constraint("slo_ttft_p99_ms", ttft / 3000.0 - 1.0)
                records = make_records(40, seed=seed * 100 + k)
                # Later trials are faster: shift first-token times so the distributions differ.
                for r in records:
                    if r.first_token_ns is not None:
                        r.first_token_ns -= int(k * 2_000_000)
                store.write_trial(name, trial.number, requests=records)
                study.tell(trial, [values[m] for m in metrics])
            elif what == "interrupted":
                trial.set_user_attr("interrupted", True)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                lines = {
                    "cuda_oom": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
                    "segfault": "Fatal Python error: Segmentation fault",
                }
                trial.set_user_attr("failure_kind", what)
                trial.set_user_attr(
                    "failure",
                    {"kind": what, "phase": "startup", "exit": {"code": None, "signal": 9},
                     "matched_lines": [lines[what]], "log_tail": lines[what], "detail": "", "extra": {}},
                )  # fmt: skip
                trial.set_constraint("crash", 1.0)
                trial.set_constraint("slo_ttft_p99_ms", 0.0)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return study


def _upload_log(artifact_dir: Path, trial: optuna.Trial, what: str) -> None:
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    artifact_dir.mkdir(parents=True, exist_ok=True)
    log = artifact_dir.parent / f"server-{trial.number}.log"
    lines = ["[2026-11-20 10:00:00] server_args=ServerArgs(...)", "Load weight end. mem usage=18.05 GB"]
    if what == "cuda_oom":
        lines.append("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    elif what == "segfault":
        lines.append("Fatal Python error: Segmentation fault")
    else:
        lines.append("The server is fired up and ready to roll!")
    log.write_text("\n".join(lines) + "\n")
    artifact_id = upload_artifact(
        artifact_store=FileSystemArtifactStore(str(artifact_dir)),
        file_path=str(log),
        study_or_trial=trial,
        mimetype="text/plain",
    )
    trial.set_user_attr("server_log_artifact", artifact_id)
