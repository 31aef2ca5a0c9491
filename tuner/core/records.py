"""Typed records that cross stage boundaries: one request's timings, one trial's metrics.

Plain dicts only at the JSON/HTTP/SQL edges: these dataclasses are what the load generator
hands to the metrics stage and what the storage stage writes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    """One benchmark request, timed as SGLang's bench_serving does.

    Times are ``time.perf_counter_ns()`` values; ``chunk_times_ns`` holds the arrival time of
    every streamed chunk that carried text, ``chunk_tokens`` how many output tokens each carried.
    Errors are recorded, not raised: ``ok`` False and ``error`` set.
    """

    index: int
    prompt_tokens: int
    max_new_tokens: int
    sent_ns: int
    warmup: bool = False
    first_token_ns: int | None = None
    done_ns: int | None = None
    output_tokens: int = 0
    chunk_times_ns: list[int] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)
    ok: bool = False
    status: int | None = None
    error: str | None = None
    server_e2e_s: float | None = None  # meta_info.e2e_latency when the server reports it
    window: int = 0  # index of the measurement window (for intermediate values)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_ns is None else (self.first_token_ns - self.sent_ns) / 1e9

    @property
    def e2e_s(self) -> float | None:
        return None if self.done_ns is None else (self.done_ns - self.sent_ns) / 1e9

    def to_row(self) -> dict[str, Any]:
        d = asdict(self)
        d["ttft_s"] = self.ttft_s
        d["e2e_s"] = self.e2e_s
        return d


@dataclass(frozen=True)
class Stats:
    """Summary of one latency metric in milliseconds, as bench_serving prints it."""

    mean: float
    median: float
    std: float
    p90: float
    p95: float
    p99: float
    n: int


@dataclass(frozen=True)
class GpuSample:
    """One NVML reading (or the simulator's figure). ``source``: 'nvml' or 'simulator'."""

    t_s: float
    gpu_index: int
    memory_used_mib: float
    memory_total_mib: float
    utilization_pct: float | None
    source: str = "nvml"
