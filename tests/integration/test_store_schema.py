"""Schema versioning: an older database is upgraded (or refused), a newer or unknown one refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from tuner.core.errors import StorageError
from tuner.store import SCHEMA_VERSION, Migration, TunerStore, database_version, ensure_schema, make_engine
from tuner.testing.store import backend_database, make_records


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with backend_database(request.param, tmp_path) as u:
        yield u


def _add_column(conn: sqlalchemy.Connection) -> None:
    conn.execute(sqlalchemy.text("ALTER TABLE tuner_requests ADD COLUMN queue_ms FLOAT"))


NEXT = SCHEMA_VERSION + 1
STEP = Migration(NEXT, "add tuner_requests.queue_ms", _add_column)


def test_older_database_is_upgraded_with_rows_intact(url: str) -> None:
    records = make_records(25)
    with TunerStore(url) as store:
        store.write_requests("s", 0, records)
    engine = make_engine(url)
    assert ensure_schema(engine, current=NEXT, migrations=[STEP]) == NEXT
    with engine.connect() as conn:
        assert database_version(conn) == NEXT
        cols = {c["name"] for c in sqlalchemy.inspect(conn).get_columns("tuner_requests")}
        history = conn.execute(
            sqlalchemy.text("SELECT version, description FROM tuner_schema_version ORDER BY version")
        ).all()
    assert "queue_ms" in cols
    assert [tuple(h) for h in history] == [(SCHEMA_VERSION, "initial layout"), (NEXT, STEP.description)]
    engine.dispose()
    # The upgraded database is "newer" for this tuner: refused, never misread.
    with pytest.raises(StorageError, match=rf"version {NEXT}, this sglang-tuner .* up to {SCHEMA_VERSION}"):
        TunerStore(url)


def test_older_database_is_refused_without_upgrade(url: str) -> None:
    TunerStore(url).close()
    engine = make_engine(url)
    with pytest.raises(StorageError, match=rf"has tuner schema version {SCHEMA_VERSION}, .* needs {NEXT}"):
        ensure_schema(engine, upgrade=False, current=NEXT, migrations=[STEP])
    with engine.connect() as conn:
        assert database_version(conn) == SCHEMA_VERSION  # untouched
    engine.dispose()


def test_missing_migration_step_is_refused(url: str) -> None:
    TunerStore(url).close()
    engine = make_engine(url)
    with pytest.raises(StorageError, match="no migration path"):
        ensure_schema(engine, current=NEXT + 1, migrations=[STEP])
    engine.dispose()


def test_failed_migration_rolls_back(url: str) -> None:
    TunerStore(url).close()
    engine = make_engine(url)

    def broken(conn: sqlalchemy.Connection) -> None:
        _add_column(conn)
        conn.execute(sqlalchemy.text("ALTER TABLE no_such_table ADD COLUMN x INT"))

    with pytest.raises(StorageError, match="no_such_table"):
        ensure_schema(engine, current=NEXT, migrations=[Migration(NEXT, "broken", broken)])
    with engine.connect() as conn:
        assert database_version(conn) == SCHEMA_VERSION
    engine.dispose()


def test_unknown_tuner_tables_are_refused(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE tuner_requests (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(StorageError, match="tuner_requests exist but tuner_schema_version does not"):
        TunerStore(url)


def test_cli_reports_and_refuses(url: str) -> None:
    TunerStore(url).close()
    run = [sys.executable, "-m", "tuner.store"]
    out = subprocess.run([*run, "version", "--storage", url], capture_output=True, text=True, check=True)
    assert f"tuner schema version {SCHEMA_VERSION}" in out.stdout
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO tuner_schema_version (version, description, tuner_version, "
                "applied_at) VALUES (7, 'x', '9', CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()
    bad = subprocess.run([*run, "upgrade", "--storage", url], capture_output=True, text=True)
    assert bad.returncode == 3 and "schema version 7" in bad.stderr  # ExitCode.STORAGE
