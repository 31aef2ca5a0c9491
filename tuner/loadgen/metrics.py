"""Request records -> benchmark metrics, with SGLang's bench_serving definitions.

- TTFT: send -> first chunk with non-empty text.  E2E: send -> end of stream.
- TPOT: (E2E - TTFT) / (output_tokens - 1), only for requests with more than one output token.
- ITL: the gap before each chunk after the first, divided evenly over the tokens it carries.
- Throughputs over ``duration_s`` (which starts after warm-up): completed requests, output
  tokens, input + output tokens. Concurrency: sum of completed requests' E2E / duration.
- Goodput: completed requests whose own TTFT, TPOT and E2E meet the SLO bounds, per second.
  With no latency SLO every completed request counts (goodput = request throughput).
- Stats: mean, median, std (population), p90, p95, p99 in milliseconds (numpy's linear
  percentiles, as bench_serving); NaN when no request contributes a value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tuner.core.metric_names import LATENCIES, STAT_FIELDS
from tuner.core.records import RequestRecord, Stats
from tuner.space.workload import SLOs


def stats_ms(values_s: Sequence[float]) -> Stats:
    """Summarise latencies given in seconds as a :class:`Stats` in milliseconds.

    >>> stats_ms([0.1, 0.2, 0.3]).median
    200.0
    """
    if len(values_s) == 0:
        nan = math.nan
        return Stats(nan, nan, nan, nan, nan, nan, 0)
    a = np.asarray(values_s, dtype=float) * 1000.0
    p90, p95, p99 = np.percentile(a, [90, 95, 99])
    return Stats(
        mean=float(a.mean()),
        median=float(np.median(a)),
        std=float(a.std()),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
        n=int(a.size),
    )


def tpot_s(record: RequestRecord) -> float | None:
    """Time per output token after the first, or None when it is undefined."""
    ttft, e2e = record.ttft_s, record.e2e_s
    if ttft is None or e2e is None or record.output_tokens <= 1:
        return None
    return (e2e - ttft) / (record.output_tokens - 1)


def itl_s(record: RequestRecord) -> list[float]:
    """Inter-token latencies: each gap between timed chunks spread evenly over its tokens."""
    out: list[float] = []
    times, tokens = record.chunk_times_ns, record.chunk_tokens
    for k in range(1, len(times)):
        n = tokens[k]
        if n > 0:
            out.extend([(times[k] - times[k - 1]) / 1e9 / n] * n)
    return out


def meets_slos(record: RequestRecord, slos: SLOs) -> bool:
    """Whether one completed request meets every per-request latency bound (SGLang's --goodput)."""
    checks = (
        (slos.ttft_p99_ms, record.ttft_s),
        (slos.tpot_p99_ms, tpot_s(record)),
        (slos.e2e_p99_ms, record.e2e_s),
    )
    # An undefined value (TPOT of a one-token answer) cannot break its bound.
    return all(bound is None or value is None or value * 1000.0 <= bound for bound, value in checks)


@dataclass(frozen=True)
class BenchResult:
    """One benchmark's outcome: summary metrics, the raw records, and how the run ended.

    ``records`` holds every request sent, warm-up ones included (flagged); metrics use only
    measured ones. ``stalled``: no in-flight request got a chunk for ``stall_timeout_s`` (the
    runner's HANG). ``stopped_early``: ``should_stop`` asked to stop; requests still in flight
    were cancelled and are not in ``records``. ``windows``: flat metrics of each window of
    ``window_requests`` completed-or-failed requests, in order.
    """

    completed: int
    failed: int
    duration_s: float
    input_tokens: int
    output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    goodput: float
    error_rate: float
    concurrency: float
    per_request_tok_s: float
    ttft: Stats
    tpot: Stats
    itl: Stats
    e2e: Stats
    records: tuple[RequestRecord, ...] = ()
    stalled: bool = False
    stopped_early: bool = False
    over_deadline: bool = False  # stopped early because the measured phase outlasted its deadline
    windows: tuple[dict[str, float], ...] = ()
    # the server's prompt token counts over the intended lengths (median over measured requests): 1.0
    # when it counts what was meant; words on a real tokenizer drift from it (workload.tokenizer fixes that)
    prompt_len_ratio: float = math.nan

    def flat(self) -> dict[str, float]:
        """The metrics under the names used everywhere (objectives, constraints, storage)."""
        out: dict[str, float] = {
            "output_throughput": self.output_throughput,
            "request_throughput": self.request_throughput,
            "total_token_throughput": self.total_token_throughput,
            "goodput": self.goodput,
            "error_rate": self.error_rate,
            "concurrency": self.concurrency,
            "per_request_tok_s": self.per_request_tok_s,
        }
        for name in LATENCIES:
            stats: Stats = getattr(self, name)
            for field in STAT_FIELDS:
                out[f"{name}_{field}_ms"] = getattr(stats, field)
        out["completed"] = self.completed
        out["failed"] = self.failed
        out["duration_s"] = self.duration_s
        out["prompt_len_ratio"] = self.prompt_len_ratio
        return out

    def errors(self) -> dict[str, int]:
        """Failed measured requests counted by error message (first 80 characters)."""
        counts: dict[str, int] = {}
        for r in self.records:
            if not r.warmup and not r.ok:
                key = (r.error or "unknown")[:80]
                counts[key] = counts.get(key, 0) + 1
        return counts


def compute_metrics(
    records: Iterable[RequestRecord], duration_s: float, slos: SLOs | None = None
) -> BenchResult:
    """Compute a :class:`BenchResult` from request records (warm-up records are ignored).

    Pure: no clock, no I/O. ``duration_s`` is the measured span (after warm-up); the result has
    ``stalled``/``stopped_early`` False and no windows: the benchmark driver sets those.
    """
    all_records = tuple(records)
    measured = [r for r in all_records if not r.warmup]
    done = [r for r in measured if r.ok]
    failed = len(measured) - len(done)
    dur = duration_s if duration_s > 0 else math.nan

    ttfts = [r.ttft_s for r in done if r.ttft_s is not None]
    e2es = [r.e2e_s for r in done if r.e2e_s is not None]
    tpots = [t for t in (tpot_s(r) for r in done) if t is not None]
    itls = [gap for r in done for gap in itl_s(r)]
    input_tokens = sum(r.prompt_tokens for r in done)
    output_tokens = sum(r.output_tokens for r in done)
    good = sum(1 for r in done if meets_slos(r, slos)) if slos is not None else len(done)
    per_request = [r.output_tokens / e for r, e in ((r, r.e2e_s) for r in done) if e]

    return BenchResult(
        completed=len(done),
        failed=failed,
        duration_s=duration_s,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        request_throughput=len(done) / dur,
        output_throughput=output_tokens / dur,
        total_token_throughput=(input_tokens + output_tokens) / dur,
        goodput=good / dur,
        error_rate=failed / len(measured) if measured else math.nan,
        concurrency=sum(e2es) / dur,
        per_request_tok_s=float(np.mean(per_request)) if per_request else math.nan,
        ttft=stats_ms(ttfts),
        tpot=stats_ms(tpots),
        itl=stats_ms(itls),
        e2e=stats_ms(e2es),
        records=all_records,
    )
