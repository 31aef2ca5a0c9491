"""Database URLs: masking, engines, Optuna's RDBStorage, and the one place SQL errors are translated.

Every SQLAlchemy or Optuna storage error that reaches the tuner passes through
:func:`storage_errors`, which turns it into :class:`tuner.core.errors.StorageError` with the URL
(password masked) and what to do.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tuner.core.errors import ConfigError, StorageError

DEFAULT_URL = "sqlite:///storage/tuner.db"
# SQLite: wait this long for another connection's write lock instead of failing at once
# ("database is locked"): the runner's Optuna storage and our tables share one file.
SQLITE_BUSY_TIMEOUT_S = (
    60.0  # how long to wait for another process's lock; TUNER_SQLITE_BUSY_TIMEOUT_S overrides
)
# Any fixed 64-bit number: identifies our lock among the database's advisory locks.
_PG_OPTUNA_LOCK_KEY = 0x7475_6E65_7201


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (safe for logs and error messages).

    >>> mask_url("postgresql+psycopg://tuner:secret@db:5432/tuner")
    'postgresql+psycopg://tuner:***@db:5432/tuner'
    """
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        # Unparsable URL: mask anything between "user:" and "@" by hand.
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def backend_name(url: str) -> str:
    """The SQL dialect of ``url`` (``sqlite``, ``postgresql`` …); StorageError if unparsable."""
    try:
        return sqlalchemy.engine.make_url(url).get_backend_name()
    except sqlalchemy.exc.ArgumentError as e:
        raise StorageError(
            f"{mask_url(url)!r} is not a database URL ({e}); use e.g. {DEFAULT_URL} or "
            "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
        ) from e


def is_sqlite(url: str) -> bool:
    """True for ``sqlite://`` URLs."""
    return backend_name(url) == "sqlite"


def check_multiworker_safe(url: str, workers: int) -> None:
    """Refuse SQLite when more than one worker (process, thread or host) writes the study.

    SQLite has no ``SELECT … FOR UPDATE`` and locks the whole file, so parallel Optuna workers
    see "database is locked" and may hand two workers the same enqueued trial; Optuna's FAQ never
    recommends it for parallel runs. We refuse rather than half-work.

    Raises ConfigError naming ``--storage`` and the PostgreSQL alternative.
    """
    if workers > 1 and is_sqlite(url):
        raise ConfigError(
            f"{workers} workers cannot share the SQLite database {mask_url(url)}: SQLite locks the whole "
            "file and has no row locks, so parallel workers fail with 'database is locked'. Use "
            "PostgreSQL (scripts/setup-postgres.sh prints a URL: "
            "postgresql+psycopg://tuner:tuner@127.0.0.1:5432/tuner) or run one worker",
            source="--storage",
        )


def sqlite_busy_timeout_s() -> float:
    """Seconds a SQLite statement waits for another process's lock before failing."""
    value = os.environ.get("TUNER_SQLITE_BUSY_TIMEOUT_S")
    try:
        return float(value) if value else SQLITE_BUSY_TIMEOUT_S
    except ValueError:
        raise ConfigError(
            f"{value!r} is not a number of seconds", source="TUNER_SQLITE_BUSY_TIMEOUT_S"
        ) from None


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy ``create_engine`` options we use for ``url`` (also handed to Optuna's RDBStorage).

    ``pool_pre_ping`` makes a pooled connection that died with a database restart be replaced
    instead of failing the next statement; SQLite gets a busy timeout.
    """
    if is_sqlite(url):
        return {"connect_args": {"timeout": sqlite_busy_timeout_s()}}
    return {"pool_pre_ping": True}


def make_engine(url: str) -> sqlalchemy.Engine:
    """Create (and test with one connection) a SQLAlchemy engine; StorageError if unreachable."""
    with storage_errors(url, "connecting to"):
        engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
        with engine.connect():
            pass
        return engine


class HeartbeatStorage(RDBStorage):
    """Optuna's RDBStorage whose stale trials also include those that never beat.

    Optuna fails a RUNNING trial whose last heartbeat is older than the grace period, but skips one
    with no heartbeat at all: a worker killed between creating its trial and its heartbeat thread's
    first beat (milliseconds, seen once in twenty SIGKILLs) leaves it RUNNING for good - counted as
    running by every later worker (its configuration "on another worker", never measured again; the
    study's total one short). Such a trial is stale once its start is older than the grace period
    (both times from the clocks of the workers that wrote them).
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        assert self.heartbeat_interval is not None
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        cutoff = datetime.now() - timedelta(seconds=grace)
        running = [
            t for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if t._trial_id not in stale and t.datetime_start is not None and t.datetime_start < cutoff
        ]  # fmt: skip
        if not running:
            return stale
        with self.engine.connect() as conn:
            beat = set(
                conn.execute(
                    sqlalchemy.text(
                        "SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids"
                    ).bindparams(sqlalchemy.bindparam("ids", expanding=True)),
                    {"ids": [t._trial_id for t in running]},
                ).scalars()
            )
        return stale + [t._trial_id for t in running if t._trial_id not in beat]


def make_optuna_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = 2,
) -> RDBStorage:
    """Optuna's RDBStorage on ``url``, with heartbeats when ``heartbeat_interval`` (seconds) is given.

    With heartbeats, a trial whose worker stopped beating for ``grace_period`` seconds (Optuna's
    default: 2 x interval), or never beat (:class:`HeartbeatStorage`), is failed by the next worker
    that starts a trial and re-queued up to
    ``max_retry`` times (``RetryHeartbeatStaleTrialCallback``, Optuna 5.0's name; ``None`` = no
    limit). Heartbeats only run inside ``study.optimize``.

    Raises StorageError (URL with password masked) when the database is unreachable, the driver is
    missing or Optuna's own schema is incompatible.

    >>> storage = make_optuna_storage("sqlite:///storage/tuner.db")  # doctest: +SKIP
    """
    with (
        storage_errors(url, "opening the Optuna storage at"),
        warnings.catch_warnings(),
        setup_lock(url),
    ):
        # Heartbeats are "experimental" in Optuna since 2.8; we rely on them on purpose.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retry) if heartbeat_interval else None
        try:
            return HeartbeatStorage(
                url,
                engine_kwargs=engine_kwargs(url),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=callback,
            )
        except ImportError as e:
            raise StorageError(
                f"no database driver for {mask_url(url)} ({e}); PostgreSQL URLs need "
                "'postgresql+psycopg://' with psycopg installed"
            ) from e
        except RuntimeError as e:
            # Optuna's own schema check: "The runtime optuna version … is no longer compatible …".
            raise StorageError(f"Optuna refuses the database {mask_url(url)}: {e}") from e


@contextmanager
def setup_lock(url: str) -> Iterator[None]:
    """On PostgreSQL, one process at a time runs the block (session advisory lock); elsewhere a no-op.

    Used where workers starting together would race: Optuna's ``RDBStorage`` runs ``create_all``
    on every open (otherwise "duplicate key … pg_type_typname_nsp_index"), and the study runner's
    check-then-enqueue of seed trials (otherwise each worker enqueues every seed). Do not nest it.
    """
    if backend_name(url) != "postgresql":
        yield
        return
    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_OPTUNA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_OPTUNA_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


@contextmanager
def storage_errors(url: str, doing: str) -> Iterator[None]:
    """Translate SQLAlchemy and Optuna storage errors raised inside the block into StorageError.

    ``doing`` completes the sentence "… failed while <doing> <url>".

    >>> with storage_errors("sqlite:///x.db", "writing trial 3 to"):  # doctest: +SKIP
    ...     store.write_trial(...)
    """
    try:
        yield
    except StorageError:
        raise
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        raise StorageError(_describe(url, doing, e)) from e


def _describe(url: str, doing: str, e: Exception) -> str:
    masked = mask_url(url)
    orig = getattr(e, "orig", None) or e.__cause__ or e
    detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    # Drivers echo the URL (with the password) in some messages: mask it there too.
    detail = detail.replace(url, masked)
    hint = "check the URL and that the database server is running (scripts/setup-postgres.sh)"
    if isinstance(e, sqlalchemy.exc.ArgumentError):
        hint = f"use e.g. {DEFAULT_URL} or postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
    elif "unable to open database file" in detail:
        hint = "the directory of the SQLite file must exist and be writable"
    elif "database is locked" in detail:
        hint = (f"another process held the SQLite file for {sqlite_busy_timeout_s():g} s "
                "(TUNER_SQLITE_BUSY_TIMEOUT_S); use PostgreSQL for several workers")  # fmt: skip
    elif "disk is full" in detail or "No space left" in detail:
        hint = ("the disk holding the database is full; free space and run the same command again: the study "
                "resumes (what was written so far stays readable)")  # fmt: skip
    return f"storage failed while {doing} {masked}: {detail}; {hint}"
