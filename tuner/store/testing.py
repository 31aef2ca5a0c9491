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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy

from tuner.records import RequestRecord

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
