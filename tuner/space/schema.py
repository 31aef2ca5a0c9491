"""The search-space file, as typed models. One YAML file describes one tuning problem.

Top-level fields: ``name``, ``engine``, ``engine_version``, ``model``, ``target`` (where servers run),
``fixed_flags``, ``parameters`` (what Optuna samples, with ``when`` conditions), ``workload``,
``objectives``, ``slos``, ``failure`` thresholds, ``seed_trials`` (enqueued first) and ``constraints``
(combinations known to fail, pruned before launch). See ``search_spaces/README.md``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuner.core.net import host_problem
from tuner.space.sections import CapacitySpec, ConfirmSpec, PruningSpec, QualitySpec
from tuner.space.targets import Target
from tuner.space.workload import SLOs, WorkloadSpec

ChoiceValue = str | int | float | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def flag_name(text: str) -> str:
    """A flag as the space may write it (``--mem-fraction-static``) in the flag tables' form."""
    name = text.strip().removeprefix("--")
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"{text!r} is not a flag name such as mem-fraction-static")
    return name


class _ParamBase(_Strict):
    flag: str | None = None  # defaults to the parameter's name
    when: dict[str, ChoiceValue | list[ChoiceValue]] | None = None
    help: str = ""

    @field_validator("flag", mode="after")
    @classmethod
    def _flag(cls, flag: str | None) -> str | None:
        return None if flag is None else flag_name(flag)


class CategoricalParam(_ParamBase):
    type: Literal["categorical"]
    choices: list[ChoiceValue] = Field(min_length=1)


MAX_GRID_POINTS = 1_000_000  # a stepped range this fine is a mistake (and Optuna's step arithmetic fails)


class IntParam(_ParamBase):
    type: Literal["int"]
    low: int = Field(ge=-(2**53), le=2**53)
    high: int = Field(ge=-(2**53), le=2**53)
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log scale needs low >= 1 and step 1")
        return self


class FloatParam(_ParamBase):
    type: Literal["float"]
    low: float = Field(ge=-1e15, le=1e15)
    high: float = Field(ge=-1e15, le=1e15)
    step: float | None = Field(default=None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.step is not None and (self.high - self.low) / self.step > MAX_GRID_POINTS:
            raise ValueError(
                f"step {self.step:g} cuts [{self.low:g}, {self.high:g}] into more than {MAX_GRID_POINTS:,} points"
            )
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log scale needs low > 0 and no step")
        return self


class BoolParam(_ParamBase):
    type: Literal["bool"]


Param = Annotated[CategoricalParam | IntParam | FloatParam | BoolParam, Field(discriminator="type")]


class Launch(_Strict):
    """How servers are started, common to every target."""

    host: str = "127.0.0.1"  # IPv4, IPv6 (``::1``; brackets are taken off) or a host name
    startup_timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    stop_timeout_s: float = Field(default=15.0, gt=0, le=3_600)
    gpu_ids: list[Annotated[int, Field(ge=0, le=1023)]] | None = Field(
        default=None, min_length=1, max_length=64
    )

    @field_validator("host", mode="after")
    @classmethod
    def _host(cls, host: str) -> str:
        host = host.strip()
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if problem := host_problem(host):
            raise ValueError(problem)
        return host


class Objective(_Strict):
    metric: str
    direction: Literal["maximize", "minimize"]


class FailurePolicy(_Strict):
    """When a live server counts as failed."""

    error_rate_threshold: float = Field(default=0.5, ge=0, le=1)  # above this: healthy-but-failing


class SeedTrial(_Strict):
    """A configuration enqueued before sampling starts (e.g. the field report's hand-made ones)."""

    name: str
    params: dict[str, ChoiceValue]
    note: str = ""


class KnownConstraint(_Strict):
    """A combination known to fail: ``when`` holds -> the trial is pruned before launch."""

    name: str
    when: dict[str, ChoiceValue | list[ChoiceValue]] | None = None
    expr: str | None = None  # a formula over parameters and profile values, see tuner/space/constraints.py
    reason: str = ""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a study (it is stored, printed and - slugged - a file name), or ``None``."""
    if not name.strip():
        return "must not be empty"
    if len(name) > 200:
        return f"{len(name)} characters; at most 200"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "must not contain control characters (NUL, newline, tab, ...)"
    return None


class SearchSpace(_Strict):
    """A whole search-space file."""

    name: str
    description: str = ""
    engine: str = "sglang"
    engine_version: str
    model: str
    target: Target
    launch: Launch = Launch()
    fixed_flags: dict[str, Any] = {}
    parameters: dict[str, Param]
    workload: WorkloadSpec
    objectives: list[Objective] = Field(min_length=1, max_length=3)
    slos: SLOs = SLOs()
    failure: FailurePolicy = FailurePolicy()
    seed_trials: list[SeedTrial] = []
    # Tiers enqueued after the seeds: each the product of a few values of a few parameters (the rest as
    # in the first seed), a coarse map of the space for TPE to refine, as SGLang's tiered autotune starts.
    warm_start: list[dict[str, list[ChoiceValue]]] = []
    constraints: list[KnownConstraint] = []
    hardware: dict[str, float] = {}  # named figures constraint expressions may use (gpu_memory_gb, …)
    # with objective capacity_rps: each trial searches the highest rate under the SLOs
    capacity: CapacitySpec | None = None
    pruning: PruningSpec = PruningSpec()  # used with --prune: stop clearly worse trials between windows
    confirm: ConfirmSpec | None = None  # re-measure the final top candidates with repeats (intervals)
    quality: QualitySpec | None = None  # probes answered by every trial, compared with a reference seed's

    @field_validator("fixed_flags", mode="after")
    @classmethod
    def _fixed_flags(cls, flags: dict[str, Any]) -> dict[str, Any]:
        return {flag_name(k): v for k, v in flags.items()}

    @field_validator("parameters", mode="after")
    @classmethod
    def _parameter_names(cls, params: dict[str, Any]) -> dict[str, Any]:
        for name in params:
            if name.startswith("-") or name != name.strip() or not name:
                raise ValueError(
                    f"parameter {name!r}: name it as the flag without dashes (mem-fraction-static)"
                )
        return params

    @field_validator("name", mode="after")
    @classmethod
    def _name(cls, name: str) -> str:
        if problem := name_problem(name):
            raise ValueError(problem)
        return name

    @model_validator(mode="after")
    def _capacity_objective(self) -> SearchSpace:
        wants = any(o.metric == "capacity_rps" for o in self.objectives)
        if wants and self.capacity is None:
            raise ValueError("objective capacity_rps needs a capacity: section (rate range, probe length)")
        if self.capacity is not None and not wants:
            raise ValueError(
                "a capacity: section needs the objective {metric: capacity_rps, direction: maximize}"
            )
        return self

    def flag_of(self, param: str) -> str:
        """The engine flag a parameter sets."""
        return self.parameters[param].flag or param
