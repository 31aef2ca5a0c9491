"""What a nightly run is given and what it records: options, the run record, exit codes.

Imported by the job that fills the record and by the report that renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from optuna.trial import FrozenTrial

from tuner.core.cli import ExitCode
from tuner.nightly.decide import Verdict
from tuner.nightly.deployed import DeployedConfig
from tuner.nightly.remeasure import Measurement
from tuner.nightly.search import WarmStart
from tuner.space import SearchSpace
from tuner.store.urls import mask_url

NIGHTLY_WORKER = "nightly"


@dataclass(frozen=True)
class NightlyOptions:
    """Everything one run needs; the CLI fills it (``python -m tuner.nightly --help``)."""

    space: Path
    storage: str
    out: Path = Path("storage")
    study: str | None = None
    deployed: Path | None = None  # default: <out>/deployed/<study>.yaml
    lock: Path | None = None  # default: <out>/nightly/<study>.lock
    repeats: int = 5
    max_trials: int = 20
    budget_s: float = 3600.0
    known_top: int = 3
    candidates: int = 2
    rounds: int = 5
    margin: float = 0.02
    regression_margin: float = 0.02
    confidence: float = 0.95
    resamples: int = 4000
    seed: int = 0
    sampler_seed: int | None = None
    accept_current: bool = False


@dataclass
class NightlyRun:
    """What one run did and found: the report is rendered from this."""

    stamp: str
    options: NightlyOptions
    study: str = ""
    space: SearchSpace | None = None
    notes: list[str] = field(default_factory=list)
    deployed: DeployedConfig | None = None
    deployed_origin: str = ""
    deployed_rejected: str | None = None
    repeats: list[Measurement] = field(default_factory=list)
    reference: list[float] | None = None
    reference_desc: str = ""
    regression: Verdict | None = None
    warm_start: list[WarmStart] = field(default_factory=list)
    search_seconds: float = 0.0
    tonight: list[FrozenTrial] = field(default_factory=list)
    validation: dict[str, list[Measurement]] = field(default_factory=dict)
    candidate_trials: dict[str, FrozenTrial] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    promoted: str | None = None
    decision: str = "failed"
    exit_code: ExitCode = ExitCode.FAILED
    error: str | None = None
    report_path: Path | None = None

    @property
    def deployed_failures(self) -> list[Measurement]:
        ref = [m for m in self.repeats if not m.ok]
        ref += [m for m in self.validation.get("deployed", []) if not m.ok]
        return ref


def masked_storage(run: NightlyRun) -> str:
    """The storage URL with any password hidden (for the report)."""
    return mask_url(run.options.storage)
