"""Typed rows of the tuner's own tables that have no record type elsewhere.

Request records and GPU samples are :mod:`tuner.core.records` types; these are the per-trial
provenance and the deployed-configuration history.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import socket
from dataclasses import dataclass, field
from typing import Any

import optuna

from tuner import __version__ as tuner_version


def fingerprint(data: Any) -> str:
    """A stable SHA-256 hex digest of JSON-able ``data`` (key order does not matter).

    Used for the workload fingerprint: two trials are comparable only when their workload
    specs (``WorkloadSpec.model_dump(mode="json")``) have the same fingerprint.

    >>> fingerprint({"b": 1, "a": [1, 2]}) == fingerprint({"a": [1, 2], "b": 1})
    True
    """
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Provenance:
    """What a trial ran on and with. The runner fills the engine/GPU fields from what it launched."""

    study_name: str
    trial_number: int
    engine: str
    engine_version: str | None = None
    image: str | None = None
    image_digest: str | None = None
    gpu_name: str | None = None
    gpu_driver: str | None = None
    gpu_memory_mib: float | None = None
    gpu_count: int | None = None
    workload_fingerprint: str | None = None
    host: str = field(default_factory=lambda: socket.gethostname() or platform.node())
    tuner_version: str = tuner_version
    optuna_version: str = optuna.__version__
    recorded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Deployment:
    """One configuration put into service: what, when and why (the nightly job's history).

    ``command`` is the launch argv, ``flags`` the engine flags (FlagVector as JSON), ``params`` the
    Optuna params of the trial it came from, ``metrics`` the flat metrics that justified it.
    """

    study_name: str
    command: list[str]
    flags: dict[str, Any]
    reason: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    trial_number: int | None = None
    image: str | None = None
    deployed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    id: int | None = None  # set by the store
