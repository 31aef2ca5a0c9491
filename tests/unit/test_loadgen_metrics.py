"""compute_metrics on hand-built records: SGLang's bench_serving definitions, exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.core.metric_names import FLAT_METRICS
from tuner.core.records import RequestRecord
from tuner.loadgen import SLOs, compute_metrics
from tuner.loadgen.metrics import stats_ms

MS = 1_000_000  # ns


def rec(index: int, chunks_ms: list[float], tokens: list[int], *, prompt: int = 10, **kw) -> RequestRecord:
    """A completed request sent at t=0 whose chunks arrived at ``chunks_ms``."""
    times = [int(t * MS) for t in chunks_ms]
    return RequestRecord(
        index=index,
        prompt_tokens=prompt,
        max_new_tokens=sum(tokens),
        sent_ns=0,
        first_token_ns=times[0],
        done_ns=times[-1],
        output_tokens=sum(tokens),
        chunk_times_ns=times,
        chunk_tokens=tokens,
        ok=True,
        status=200,
        **kw,
    )


def test_definitions_on_known_records() -> None:
    a = rec(0, [100, 120, 160], [1, 2, 1])  # 4 tokens
    b = rec(1, [200, 300], [1, 1])  # 2 tokens
    one = rec(2, [50], [1])  # a single token: no TPOT, no ITL
    failed = RequestRecord(
        index=3, prompt_tokens=10, max_new_tokens=4, sent_ns=0, status=500, error="HTTP 500"
    )
    warm = rec(4, [1, 2], [1, 1], warmup=True)
    r = compute_metrics([a, b, one, failed, warm], duration_s=2.0)

    assert (r.completed, r.failed) == (3, 1)
    assert r.error_rate == pytest.approx(0.25)
    assert r.ttft.mean == pytest.approx((100 + 200 + 50) / 3)
    # TPOT: a (160-100)/3 = 20, b (300-200)/1 = 100; `one` has none.
    assert r.tpot.n == 2 and r.tpot.mean == pytest.approx(60)
    # ITL: a: 20 ms over 2 tokens -> 10, 10; then 40 over 1 -> 40. b: 100.
    assert r.itl.mean == pytest.approx(40)
    assert r.itl.n == 4 and r.itl.median == pytest.approx(25)
    assert r.e2e.median == pytest.approx(160)
    assert r.output_throughput == pytest.approx(7 / 2)
    assert r.request_throughput == pytest.approx(1.5)
    assert r.total_token_throughput == pytest.approx((30 + 7) / 2)
    assert r.concurrency == pytest.approx((0.16 + 0.3 + 0.05) / 2)
    assert r.per_request_tok_s == pytest.approx(np.mean([4 / 0.16, 2 / 0.3, 1 / 0.05]))
    assert r.goodput == pytest.approx(r.request_throughput)  # no SLOs: every completed request


def test_stats_match_numpy() -> None:
    values = [0.01 * i for i in range(1, 101)]
    s = stats_ms(values)
    a = np.array(values) * 1000
    assert (s.mean, s.median, s.std) == pytest.approx((a.mean(), np.median(a), a.std()))
    assert (s.p90, s.p95, s.p99) == pytest.approx(tuple(np.percentile(a, [90, 95, 99])))
    assert s.n == 100
    empty = stats_ms([])
    assert empty.n == 0 and math.isnan(empty.p99)


def test_goodput_is_per_request() -> None:
    fast = rec(0, [50, 60, 70], [1, 1, 1])  # TTFT 50, TPOT 10, E2E 70
    slow_ttft = rec(1, [500, 510], [1, 1])
    slow_tpot = rec(2, [50, 250], [1, 1])  # TPOT 200
    r = compute_metrics([fast, slow_ttft, slow_tpot], 1.0, SLOs(ttft_p99_ms=100, tpot_p99_ms=50))
    assert r.goodput == pytest.approx(1.0)
    r = compute_metrics([fast, slow_ttft, slow_tpot], 1.0, SLOs(e2e_p99_ms=300))
    assert r.goodput == pytest.approx(2.0)
    # The error-rate SLO is a run-level bound: it does not filter requests.
    assert compute_metrics([fast], 0.5, SLOs(error_rate=0.0)).goodput == pytest.approx(2.0)


def test_flat_names_and_empty_run() -> None:
    failed = RequestRecord(index=0, prompt_tokens=1, max_new_tokens=1, sent_ns=0, error="boom")
    flat = compute_metrics([failed], 1.0).flat()
    assert tuple(flat) == FLAT_METRICS and len(FLAT_METRICS) == 35
    assert flat["completed"] == 0 and flat["failed"] == 1 and flat["error_rate"] == 1.0
    assert math.isnan(flat["prompt_len_ratio"])  # set by the benchmark, which knows the intended lengths
    assert flat["output_throughput"] == 0 and math.isnan(flat["ttft_p99_ms"])


def test_request_errors_counts_the_measured_failures_by_error() -> None:
    from tuner.trial.objective import request_errors

    def failed(i: int, *, error: str | None = None, status: int | None = None, warmup: bool = False):
        return RequestRecord(
            index=i, prompt_tokens=10, max_new_tokens=4, sent_ns=0, status=status, error=error, warmup=warmup
        )

    records = [
        rec(0, [10], [1]),
        failed(1, error="ClientOSError: reset"),
        failed(2, error="ClientOSError: reset"),
        failed(3, status=503),
        failed(4, error="from warm-up", warmup=True),
    ]
    bench = compute_metrics(records, duration_s=1.0)
    assert request_errors(bench) == {"ClientOSError: reset": 2, "HTTP 503": 1}
    assert request_errors(bench, limit=1) == {"ClientOSError: reset": 2}
    assert request_errors(compute_metrics(records[:1], duration_s=1.0)) == {}
    assert request_errors(None) == {}
