"""Schema versioning of the ``tuner_`` tables: a version table and ordered migrations in code.

* A database without any ``tuner_`` table is created at the current layout and stamped with
  :data:`SCHEMA_VERSION`.
* An older database is upgraded by running, in order and in one transaction, every migration
  whose ``to_version`` is above its version (or refused when ``upgrade=False``).
* A database stamped with a NEWER version is refused with StorageError naming both versions:
  never read a layout we do not know.
* ``tuner_`` tables without a version row are refused (unknown layout).

On PostgreSQL the check runs under an advisory lock so workers starting together on an empty
database do not race to create the tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy
from sqlalchemy import Connection

from tuner import __version__ as tuner_version
from tuner.core.errors import StorageError
from tuner.store import schema
from tuner.store.urls import mask_url, storage_errors

# Any fixed 64-bit number: identifies our lock among the database's advisory locks.
_PG_LOCK_KEY = 0x7475_6E65_7200  # "tuner\0"


@dataclass(frozen=True)
class Migration:
    """One step of the schema: brings a database from ``to_version - 1`` to ``to_version``."""

    to_version: int
    description: str
    apply: Callable[[Connection], None]


# Ordered; append one per SCHEMA_VERSION bump. Version 1 is the initial layout (created by
# ``metadata.create_all`` on an empty database), so there is nothing to migrate yet.
MIGRATIONS: tuple[Migration, ...] = ()


def database_version(conn: Connection) -> int | None:
    """The database's tuner schema version; None when it has no ``tuner_`` table at all.

    Raises StorageError when ``tuner_`` tables exist without a version row.
    """
    names = set(sqlalchemy.inspect(conn).get_table_names())
    ours = sorted(n for n in names if n.startswith(schema.PREFIX))
    if schema.schema_version.name not in names:
        if ours:
            raise StorageError(
                f"tables {', '.join(ours)} exist but {schema.schema_version.name} does not: the database "
                "was not written by sglang-tuner (or was damaged); refusing to read it. Use another "
                "database or drop those tables"
            )
        return None
    version = conn.execute(sqlalchemy.select(sqlalchemy.func.max(schema.schema_version.c.version))).scalar()
    if version is None:
        raise StorageError(f"{schema.schema_version.name} is empty: the database's tuner schema is unknown")
    return int(version)


def ensure_schema(
    engine: sqlalchemy.Engine,
    *,
    upgrade: bool = True,
    current: int = schema.SCHEMA_VERSION,
    migrations: Sequence[Migration] = MIGRATIONS,
    metadata: sqlalchemy.MetaData = schema.metadata,
) -> int:
    """Create, check or upgrade the ``tuner_`` tables on ``engine``; return the version now in place.

    ``current``/``migrations``/``metadata`` default to this tuner's layout (tests pass others to
    exercise an upgrade). Raises StorageError for a newer, unknown or (with ``upgrade=False``)
    older database.
    """
    url = engine.url.render_as_string(hide_password=False)
    with storage_errors(url, "checking the tuner schema of"), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        found = database_version(conn)
        if found is None:
            metadata.create_all(conn)
            _stamp(conn, current, "initial layout")
            return current
        if found > current:
            raise StorageError(
                f"database {mask_url(url)} was written by tuner schema version {found}, this sglang-tuner "
                f"({tuner_version}) knows versions up to {current}: upgrade sglang-tuner to read it, or "
                "use another database. Nothing was read or written"
            )
        if found < current:
            if not upgrade:
                raise StorageError(
                    f"database {mask_url(url)} has tuner schema version {found}, this sglang-tuner needs "
                    f"{current}: upgrade it with `python -m tuner.store upgrade --storage URL` "
                    "(back it up first)"
                )
            steps = [m for m in sorted(migrations, key=lambda m: m.to_version) if m.to_version > found]
            if [m.to_version for m in steps] != list(range(found + 1, current + 1)):
                raise StorageError(
                    f"no migration path from tuner schema version {found} to {current} "
                    f"(have steps {[m.to_version for m in steps]})"
                )
            for step in steps:
                step.apply(conn)
                _stamp(conn, step.to_version, step.description)
        return current


def _stamp(conn: Connection, version: int, description: str) -> None:
    conn.execute(
        schema.schema_version.insert().values(
            version=version,
            description=description,
            tuner_version=tuner_version,
            applied_at=dt.datetime.now(dt.UTC),
        )
    )
