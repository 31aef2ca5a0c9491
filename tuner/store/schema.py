"""The tuner's own tables, beside Optuna's on the same database, all prefixed ``tuner_``.

Rows are keyed by ``(study_name, trial_number)`` rather than by a foreign key into Optuna's
``trials`` table: Optuna migrates its own schema (Alembic) and we must not depend on its layout.

Changing a table here means bumping ``SCHEMA_VERSION`` and appending a migration to
``tuner/store/migrate.py`` (see docs/storage.md).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

# The layout these tables describe. Bump with a migration in migrate.py.
SCHEMA_VERSION = 1
PREFIX = "tuner_"
NAME_LEN = 512  # Optuna's study_name length

metadata = MetaData()

# One row per applied schema version (history kept); the database's version is the maximum.
schema_version = Table(
    "tuner_schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("tuner_version", String(64), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# tuner.core.records.RequestRecord, one row per benchmark request (warm-up included, flagged).
requests = Table(
    "tuner_requests",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("study_name", String(NAME_LEN), nullable=False),
    Column("trial_number", Integer, nullable=False),
    Column("request_index", Integer, nullable=False),
    Column("warmup", Boolean, nullable=False),
    Column("window", Integer, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("max_new_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("status", Integer),
    Column("error", Text),
    Column("sent_ns", BigInteger, nullable=False),
    Column("first_token_ns", BigInteger),
    Column("done_ns", BigInteger),
    # Derived, stored so reports can query latencies without decoding chunk lists.
    Column("ttft_s", Float),
    Column("e2e_s", Float),
    Column("server_e2e_s", Float),
    # Chunk arrival times as offsets from sent_ns (half the digits of absolute perf_counter_ns).
    Column("chunk_offsets_ns", JSON, nullable=False),
    Column("chunk_tokens", JSON, nullable=False),
    Index("ix_tuner_requests_trial", "study_name", "trial_number"),
)

# tuner.core.records.GpuSample, one row per NVML (or simulator) reading during a trial.
gpu_samples = Table(
    "tuner_gpu_samples",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("study_name", String(NAME_LEN), nullable=False),
    Column("trial_number", Integer, nullable=False),
    Column("t_s", Float, nullable=False),
    Column("gpu_index", Integer, nullable=False),
    Column("memory_used_mib", Float, nullable=False),
    Column("memory_total_mib", Float, nullable=False),
    Column("utilization_pct", Float),
    Column("source", String(32), nullable=False),
    Index("ix_tuner_gpu_samples_trial", "study_name", "trial_number"),
)

# Where and with what a trial ran: enough to tell whether two trials are comparable.
provenance = Table(
    "tuner_provenance",
    metadata,
    Column("study_name", String(NAME_LEN), primary_key=True),
    Column("trial_number", Integer, primary_key=True, autoincrement=False),
    Column("engine", String(64), nullable=False),
    Column("engine_version", String(64)),
    Column("image", String(512)),
    Column("image_digest", String(128)),
    Column("gpu_name", String(256)),
    Column("gpu_driver", String(64)),
    Column("gpu_memory_mib", Float),
    Column("gpu_count", Integer),
    Column("host", String(256), nullable=False),
    Column("tuner_version", String(64), nullable=False),
    Column("optuna_version", String(64), nullable=False),
    Column("workload_fingerprint", String(64)),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("extra", JSON, nullable=False),
)

# Every configuration the nightly job (or a person) deployed, newest last.
deployments = Table(
    "tuner_deployments",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("study_name", String(NAME_LEN), nullable=False, index=True),
    Column("trial_number", Integer),
    Column("params", JSON, nullable=False),
    Column("flags", JSON, nullable=False),
    Column("command", JSON, nullable=False),
    Column("image", String(512)),
    Column("metrics", JSON, nullable=False),
    Column("deployed_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
)

TABLES = (schema_version, requests, gpu_samples, provenance, deployments)
