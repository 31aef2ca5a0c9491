"""Storage: Optuna's RDBStorage plus the tuner's own ``tuner_`` tables on the same database URL.

Public surface (see docs/storage.md):

* :class:`TunerStore` — request records, GPU samples, provenance, deployment history.
* :func:`make_optuna_storage`, :func:`check_multiworker_safe`, :func:`storage_errors`,
  :func:`mask_url` — URLs, Optuna storage with heartbeats, error translation.
* :data:`SCHEMA_VERSION`, :func:`ensure_schema`, :class:`Migration` — schema versioning.
"""

from tuner.store.migrate import MIGRATIONS, Migration, database_version, ensure_schema
from tuner.store.models import Deployment, Provenance, fingerprint
from tuner.store.schema import SCHEMA_VERSION
from tuner.store.store import TunerStore
from tuner.store.urls import (
    DEFAULT_URL,
    check_multiworker_safe,
    is_sqlite,
    make_engine,
    make_optuna_storage,
    mask_url,
    storage_errors,
)

__all__ = [
    "DEFAULT_URL",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Deployment",
    "Migration",
    "Provenance",
    "TunerStore",
    "check_multiworker_safe",
    "database_version",
    "ensure_schema",
    "fingerprint",
    "is_sqlite",
    "make_engine",
    "make_optuna_storage",
    "mask_url",
    "storage_errors",
]
