"""The metric vocabulary: what a benchmark reports and what objectives, SLOs and storage may name."""

from __future__ import annotations

LATENCIES = ("ttft", "tpot", "itl", "e2e")
STAT_FIELDS = ("mean", "median", "std", "p90", "p95", "p99")

#: Every key of ``BenchResult.flat()`` (tuner/loadgen/metrics.py), in order.
FLAT_METRICS: tuple[str, ...] = (
    "output_throughput",
    "request_throughput",
    "total_token_throughput",
    "goodput",
    "error_rate",
    "concurrency",
    "per_request_tok_s",
    *(f"{m}_{s}_ms" for m in LATENCIES for s in STAT_FIELDS),
    "completed",
    "failed",
    "duration_s",
    "prompt_len_ratio",
)

#: A benchmark's metrics, a capacity search's result, and the GPU figures the trial runner adds.
METRIC_NAMES: frozenset[str] = frozenset(
    {*FLAT_METRICS, "capacity_rps", "gpu_peak_memory_mib", "gpu_mean_utilization_pct"}
)
