"""Prometheus text for ``/metrics`` with SGLang's metric names (``shared/facts/sglang.md``)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from tuner.sim.engine import Engine

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    25.0,
    30.0,
)
ITL_BUCKETS = (
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.035,
    0.04,
    0.06,
    0.08,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.0,
)
E2E_BUCKETS = (
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    90.0,
    120.0,
    150.0,
    180.0,
    240.0,
    300.0,
)


def _histogram(
    lines: list[str], name: str, help_: str, label: str, samples: Sequence[float], buckets: Sequence[float]
) -> None:
    lines += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
    for b in buckets:
        count = sum(1 for s in samples if s <= b)
        lines.append(f'{name}_bucket{{{label},le="{b}"}} {count}')
    lines.append(f'{name}_bucket{{{label},le="+Inf"}} {len(samples)}')
    lines.append(f"{name}_sum{{{label}}} {sum(samples)}")
    lines.append(f"{name}_count{{{label}}} {len(samples)}")


def render(engine: Engine, model_name: str) -> str:
    """The exposition text for the current engine state."""
    label = f'model_name="{model_name}"'
    c = engine.counters
    now = time.monotonic()
    recent = [n for t, n in c.recent_tokens if t > now - 5.0]
    total_prompt = c.prompt_tokens + c.cached_tokens
    gauges = {
        "sglang:num_running_reqs": ("The number of running requests.", len(engine.running)),
        "sglang:num_queue_reqs": ("The number of requests in the waiting queue.", len(engine.waiting)),
        "sglang:token_usage": ("The token usage of the KV pool.", round(engine.token_usage(), 4)),
        "sglang:gen_throughput": ("The generation throughput (token/s).", round(sum(recent) / 5.0, 2)),
        "sglang:cache_hit_rate": (
            "The prefix cache hit rate.",
            round(c.cached_tokens / total_prompt, 4) if total_prompt else 0.0,
        ),
    }
    lines: list[str] = []
    for name, (help_, value) in gauges.items():
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name}{{{label}}} {value}"]
    counters = {
        "sglang:prompt_tokens_total": (
            "Number of prefill tokens processed.",
            c.prompt_tokens + c.cached_tokens,
        ),
        "sglang:generation_tokens_total": ("Number of generation tokens processed.", c.generation_tokens),
        "sglang:num_requests_total": ("Number of requests processed.", c.requests),
    }
    for name, (help_, value) in counters.items():
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name}{{{label}}} {value}"]
    _histogram(
        lines,
        "sglang:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        label,
        c.ttft,
        TTFT_BUCKETS,
    )
    _histogram(
        lines,
        "sglang:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        label,
        c.itl,
        ITL_BUCKETS,
    )
    _histogram(
        lines,
        "sglang:e2e_request_latency_seconds",
        "Histogram of End-to-end request latency in seconds",
        label,
        c.e2e,
        E2E_BUCKETS,
    )
    return "\n".join(lines) + "\n"
