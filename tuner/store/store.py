"""TunerStore: read and write the ``tuner_`` tables of a study database.

Every write of a trial is one transaction (all of its rows or none), replaces what an earlier
attempt wrote for the same ``(study_name, trial_number)`` so a retried write after a database
outage does not duplicate rows, and raises StorageError (never a SQLAlchemy error).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

import sqlalchemy
from sqlalchemy import Connection, Table

if TYPE_CHECKING:
    import pandas as pd

from tuner.core.records import GpuSample, RequestRecord
from tuner.store import schema
from tuner.store.migrate import ensure_schema
from tuner.store.models import Deployment, Provenance
from tuner.store.urls import make_engine, mask_url, storage_errors


class TunerStore:
    """The tuner's tables on ``url`` (the same URL as the Optuna study).

    Opening checks the schema version: an empty database gets the tables, an older one is
    upgraded (or refused with ``upgrade=False``), a newer one is refused with StorageError.

    >>> store = TunerStore("sqlite:///storage/tuner.db")  # doctest: +SKIP
    >>> store.write_trial("s", 3, requests=records, gpu_samples=samples, provenance=prov)  # doctest: +SKIP
    """

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.schema_version = ensure_schema(self.engine, upgrade=upgrade)

    def __repr__(self) -> str:
        return f"TunerStore({mask_url(self.url)!r}, schema_version={self.schema_version})"

    def close(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> TunerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _begin(self, doing: str) -> Iterator[Connection]:
        """A transaction; SQL errors inside become StorageError (and the transaction rolls back)."""
        with storage_errors(self.url, doing), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _connect(self, doing: str) -> Iterator[Connection]:
        with storage_errors(self.url, doing), self.engine.connect() as conn:
            yield conn

    # -- writes -------------------------------------------------------------------------------

    def write_trial(
        self,
        study_name: str,
        trial_number: int,
        *,
        requests: Iterable[RequestRecord] = (),
        gpu_samples: Iterable[GpuSample] = (),
        provenance: Provenance | None = None,
    ) -> None:
        """Write one trial's request records, GPU samples and provenance in ONE transaction.

        Replaces rows an earlier call wrote for the same trial. Raises StorageError; then nothing
        of this call is in the database and the call can be repeated once it is back.
        """
        req_rows = [_request_row(study_name, trial_number, r) for r in requests]
        gpu_rows = [_gpu_row(study_name, trial_number, s) for s in gpu_samples]
        if provenance is not None and (provenance.study_name, provenance.trial_number) != (
            study_name,
            trial_number,
        ):
            raise ValueError(
                f"provenance of {provenance.study_name!r}/{provenance.trial_number} passed for "
                f"{study_name!r}/{trial_number}"
            )
        with self._begin(f"writing trial {trial_number} of study {study_name!r} to") as conn:
            _replace(conn, schema.requests, study_name, trial_number, req_rows)
            _replace(conn, schema.gpu_samples, study_name, trial_number, gpu_rows)
            if provenance is not None:
                _replace(conn, schema.provenance, study_name, trial_number, [asdict(provenance)])

    def write_requests(self, study_name: str, trial_number: int, records: Iterable[RequestRecord]) -> None:
        """Replace a trial's request records (one transaction)."""
        self._replace_only(
            schema.requests,
            study_name,
            trial_number,
            [_request_row(study_name, trial_number, r) for r in records],
        )

    def write_gpu_samples(self, study_name: str, trial_number: int, samples: Iterable[GpuSample]) -> None:
        """Replace a trial's GPU samples (one transaction)."""
        self._replace_only(
            schema.gpu_samples,
            study_name,
            trial_number,
            [_gpu_row(study_name, trial_number, s) for s in samples],
        )

    def write_provenance(self, provenance: Provenance) -> None:
        """Record (or replace) a trial's provenance."""
        self._replace_only(
            schema.provenance, provenance.study_name, provenance.trial_number, [asdict(provenance)]
        )

    def record_deployment(self, deployment: Deployment) -> int:
        """Append a deployed configuration to the study's history; returns its id."""
        row = asdict(deployment)
        row.pop("id")
        with self._begin(f"recording a deployment of study {deployment.study_name!r} in") as conn:
            stmt = schema.deployments.insert().values(**row).returning(schema.deployments.c.id)
            return int(conn.execute(stmt).scalar_one())

    def _replace_only(self, table: Table, study_name: str, trial_number: int, rows: list[dict]) -> None:
        with self._begin(f"writing {table.name} of trial {trial_number} ({study_name!r}) to") as conn:
            _replace(conn, table, study_name, trial_number, rows)

    # -- reads --------------------------------------------------------------------------------

    def read_requests(self, study_name: str, trial_number: int) -> list[RequestRecord]:
        """A trial's request records, in request order, exactly as written."""
        rows = self._select(schema.requests, study_name, [trial_number], order="request_index")
        return [_request_record(r) for r in rows]

    def requests_frame(self, study_name: str, trial_numbers: Sequence[int] | None = None) -> pd.DataFrame:
        """Request rows as a frame (no chunk lists): one row per request, ``ttft_s``/``e2e_s`` included."""
        cols = [c for c in schema.requests.c if c.name not in ("id", "chunk_offsets_ns", "chunk_tokens")]
        stmt = sqlalchemy.select(*cols).where(schema.requests.c.study_name == study_name)
        if trial_numbers is not None:
            stmt = stmt.where(schema.requests.c.trial_number.in_(list(trial_numbers)))
        stmt = stmt.order_by(schema.requests.c.trial_number, schema.requests.c.request_index)
        with self._connect(f"reading requests of study {study_name!r} from") as conn:
            rows = conn.execute(stmt).mappings().all()
        import pandas as pd  # reports only: the study's hot path (and GPU hosts) need no pandas

        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in cols])

    def read_gpu_samples(self, study_name: str, trial_number: int) -> list[GpuSample]:
        """A trial's GPU samples in time order."""
        rows = self._select(schema.gpu_samples, study_name, [trial_number], order="t_s")
        names = {f.name for f in fields(GpuSample)}
        return [GpuSample(**{k: v for k, v in r.items() if k in names}) for r in rows]

    def read_provenance(self, study_name: str, trial_number: int) -> Provenance | None:
        """A trial's provenance, or None when none was recorded."""
        rows = self._select(schema.provenance, study_name, [trial_number])
        if not rows:
            return None
        row = dict(rows[0])
        row["recorded_at"] = _utc(row["recorded_at"])
        return Provenance(**row)

    def deployments(self, study_name: str) -> list[Deployment]:
        """The study's deployment history, oldest first."""
        stmt = (
            sqlalchemy.select(schema.deployments)
            .where(schema.deployments.c.study_name == study_name)
            .order_by(schema.deployments.c.deployed_at, schema.deployments.c.id)
        )
        with self._connect(f"reading deployments of study {study_name!r} from") as conn:
            rows = conn.execute(stmt).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            d["deployed_at"] = _utc(d["deployed_at"])
            out.append(Deployment(**d))
        return out

    def last_deployment(self, study_name: str) -> Deployment | None:
        """The configuration deployed most recently for the study, or None."""
        history = self.deployments(study_name)
        return history[-1] if history else None

    def _select(
        self, table: Table, study_name: str, trial_numbers: list[int], order: str | None = None
    ) -> list:
        stmt = sqlalchemy.select(table).where(
            table.c.study_name == study_name, table.c.trial_number.in_(trial_numbers)
        )
        if order:
            stmt = stmt.order_by(table.c[order])
        with self._connect(f"reading {table.name} of study {study_name!r} from") as conn:
            return [dict(r) for r in conn.execute(stmt).mappings().all()]


def _replace(conn: Connection, table: Table, study_name: str, trial_number: int, rows: list[dict]) -> None:
    conn.execute(table.delete().where(table.c.study_name == study_name, table.c.trial_number == trial_number))
    if rows:
        conn.execute(table.insert(), rows)


def _request_row(study_name: str, trial_number: int, r: RequestRecord) -> dict[str, Any]:
    return {
        "study_name": study_name,
        "trial_number": trial_number,
        "request_index": r.index,
        "warmup": r.warmup,
        "window": r.window,
        "prompt_tokens": r.prompt_tokens,
        "max_new_tokens": r.max_new_tokens,
        "output_tokens": r.output_tokens,
        "ok": r.ok,
        "status": r.status,
        "error": r.error,
        "sent_ns": r.sent_ns,
        "first_token_ns": r.first_token_ns,
        "done_ns": r.done_ns,
        "ttft_s": r.ttft_s,
        "e2e_s": r.e2e_s,
        "server_e2e_s": r.server_e2e_s,
        "chunk_offsets_ns": [t - r.sent_ns for t in r.chunk_times_ns],
        "chunk_tokens": list(r.chunk_tokens),
    }


def _request_record(row: dict[str, Any]) -> RequestRecord:
    return RequestRecord(
        index=row["request_index"],
        prompt_tokens=row["prompt_tokens"],
        max_new_tokens=row["max_new_tokens"],
        sent_ns=row["sent_ns"],
        warmup=row["warmup"],
        first_token_ns=row["first_token_ns"],
        done_ns=row["done_ns"],
        output_tokens=row["output_tokens"],
        chunk_times_ns=[row["sent_ns"] + o for o in row["chunk_offsets_ns"]],
        chunk_tokens=list(row["chunk_tokens"]),
        ok=row["ok"],
        status=row["status"],
        error=row["error"],
        server_e2e_s=row["server_e2e_s"],
        window=row["window"],
    )


def _gpu_row(study_name: str, trial_number: int, s: GpuSample) -> dict[str, Any]:
    return {"study_name": study_name, "trial_number": trial_number, **asdict(s)}


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes for DateTime(timezone=True); we only ever write UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
