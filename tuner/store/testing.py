"""Helpers for tests that need a real PostgreSQL: scratch databases and control of a local cluster.

The base URL comes from env ``TUNER_TEST_PG_URL`` (``scripts/setup-postgres.sh`` prints it); tests
skip without it unless ``TUNER_REQUIRE_ALL=1``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy

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
    admin = sqlalchemy.create_engine(base_url, isolation_level="AUTOCOMMIT")
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
