"""Capacity search against a real single-server FIFO queue with a fixed service time.

The server (aiohttp, its own thread and event loop) serves one request at a time for
``service_s`` seconds, then streams the answer; a request whose client has gone is dropped
(as SGLang aborts a disconnected stream). Its TTFT is therefore ``wait + service_s``, and the
wait follows Lindley's recursion ``W[k+1] = max(0, W[k] + S - gap[k+1])`` over the arrival
gaps. Because every probe reuses the workload seed, its arrivals are one fixed pattern scaled
by 1/rate, so the rate at which the probe's p99 TTFT crosses the SLO can be computed exactly
from that recursion: an independent model the search must agree with. Saturation is 1/S.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from aiohttp import web

from tuner.core.errors import ConfigError
from tuner.core.metric_names import FLAT_METRICS
from tuner.loadgen import SLOs, WorkloadSpec
from tuner.loadgen.arrival import poisson_offsets
from tuner.objective.capacity import find_capacity, probe_workload
from tuner.objective.capacity_result import (
    CapacityResult,
    Probe,
    ProbeVerdict,
    StopReason,
    _must_exceed,
    judge,
)
from tuner.space.sections import CapacitySpec
from tuner.testing.threaded_app import ThreadedApp

SERVICE_S = 0.03  # saturation at 33.3 requests/s
SLO_TTFT_MS = 150.0
PROBE_N = 60


@dataclass
class QueueEngine:
    """One FIFO server. ``free_at`` is the virtual end of the last service, so a late timer
    wake-up delays that request's stream but never shifts the next one's start."""

    service_s: float = SERVICE_S
    fail_all: bool = False
    served: int = 0
    dropped: int = 0
    free_at: float = 0.0
    # (arrival, first token written) per served request, on the loop's clock (time.monotonic):
    # the queue's ground truth, whatever the load on the machine did to timers and arrivals.
    timings: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = asyncio.Lock()  # FIFO: asyncio wakes lock waiters in arrival order

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        if self.fail_all:
            return web.Response(status=503, text="overloaded")
        async with self.lock:
            if request.transport is None or request.transport.is_closing():
                self.dropped += 1
                return web.Response(status=499)
            start = max(arrived, self.free_at)
            self.free_at = start + self.service_s
            await asyncio.sleep(self.free_at - loop.time())
        self.served += 1
        out_len = body["sampling_params"]["max_new_tokens"]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await resp.prepare(request)
            first = True
            for k in range(1, out_len + 1):
                event = {"text": " ".join(["tok"] * k), "meta_info": {"completion_tokens": k}}
                await resp.write(f"data: {json.dumps(event)}\n\n".encode())
                if first:
                    self.timings.append((arrived, loop.time()))
                    first = False
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionResetError:
            pass
        return resp


class QueueServer(ThreadedApp):
    """The queue engine behind an aiohttp server on 127.0.0.1, in a daemon thread."""

    def __init__(self) -> None:
        self.engine: QueueEngine | None = None
        super().__init__()

    def reset(self, **kw: object) -> QueueEngine:
        async def make() -> QueueEngine:
            return QueueEngine(**kw)  # type: ignore[arg-type]  # its lock belongs to the server loop

        self.engine = asyncio.run_coroutine_threadsafe(make(), self.loop).result(5)
        return self.engine

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self.engine is not None
        return await self.engine.handle(request)


@pytest.fixture(scope="module")
def queue_server() -> Iterator[QueueServer]:
    yield QueueServer()


@pytest.fixture
def server(queue_server: QueueServer) -> QueueServer:
    queue_server.reset()
    return queue_server


WORKLOAD = WorkloadSpec(
    input_len=8,
    output_len=4,
    num_requests=1,
    warmup_requests=2,
    seed=0,
    stall_timeout_s=5,
    request_timeout_s=10,
)
SLO = SLOs(ttft_p99_ms=SLO_TTFT_MS, error_rate=0.05)


def spec(**kw: object) -> CapacitySpec:
    base: dict[str, object] = {
        "min_rate": 10.0,
        "max_rate": 200.0,
        "probe_requests": PROBE_N,
        "min_probe_requests": 20,
        "tolerance": 0.05,
        "time_budget_s": 60.0,
        "cooldown_s": 0.3,
    }
    return CapacitySpec(**(base | kw))  # type: ignore[arg-type]


def lindley_p99_ms(rate: float, n: int = PROBE_N, seed: int = 0, service_s: float = SERVICE_S) -> float:
    """The probe's p99 TTFT (ms) the queue should give at ``rate``: same arrivals, exact queue."""
    offsets = itertools.islice(poisson_offsets(rate, random.Random(f"arrival:{seed}")), n)
    free, ttfts = 0.0, []
    for t in offsets:
        free = max(t, free) + service_s
        ttfts.append((free - t) * 1000.0)
    return float(np.percentile(ttfts, 99))


def crossing_rate(slo_ms: float) -> float:
    """The rate where the modelled p99 crosses ``slo_ms`` (monotone in the rate: bisect it)."""
    lo, hi = 1.0, 1.0 / SERVICE_S * 3
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if lindley_p99_ms(mid) <= slo_ms else (lo, mid)
    return lo


class Truth:
    """The queue's own p99 TTFT for every probe of one search, to judge the search's verdicts by.

    Used as ``on_probe``: each call closes a probe at that moment (``time.monotonic``, the server
    loop's clock), so a served request belongs to the probe during which it arrived. The client's
    TTFT of a request is never below the server's (sent before it arrived, read after it was
    written), so a probe may pass only if the server's p99 is within the SLO; it may fail while
    the server's p99 is slightly within, by what the client adds on a busy machine.
    """

    CLIENT_SHARE = 0.15  # a failing probe's server-side p99 is at least 85 % of the SLO

    def __init__(self, engine: QueueEngine) -> None:
        self.engine = engine
        self.ends: list[float] = []
        self.seen: list[Probe] = []

    def __call__(self, probe: Probe) -> None:
        self.ends.append(time.monotonic())
        self.seen.append(probe)

    def p99_ms(self, index: int, warmup: int) -> tuple[float, int]:
        """Server-side p99 TTFT (ms) of probe ``index`` and how many of its requests were served."""
        start = self.ends[index - 1] if index else -math.inf
        ttfts = [(w - a) * 1000.0 for a, w in self.engine.timings if start < a <= self.ends[index]]
        ttfts = ttfts[warmup if index == 0 else 0 :]
        return (float(np.percentile(ttfts, 99)) if ttfts else math.nan), len(ttfts)

    def check(self, result: CapacityResult, slo_ms: float = SLO_TTFT_MS, warmup: int = 2) -> None:
        assert [p.index for p in self.seen] == list(range(len(result.probes)))
        for p in result.probes:
            truth, served = self.p99_ms(p.index, warmup)
            if p.decided_early:  # cut short once failing was certain: the queue agrees
                assert not p.passed and served and truth > (1 - self.CLIENT_SHARE) * slo_ms, (p, truth)
                continue
            assert served == p.requests, (p.index, served, p.requests)
            if p.passed:
                assert truth <= slo_ms, (p.rate, truth, p.metrics["ttft_p99_ms"])
            else:
                assert truth > (1 - self.CLIENT_SHARE) * slo_ms, (p.rate, truth, p.metrics["ttft_p99_ms"])


# -- pure logic --------------------------------------------------------------------------------


def test_must_exceed_is_the_exact_p99_threshold() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 10, 50, 99, 100, 101, 250, 1000):
        need = _must_exceed(n)
        for _ in range(20):
            # exactly `need` values above the bound 1.0 force p99 above it ...
            a = np.concatenate([rng.uniform(0, 1, n - need), rng.uniform(1.001, 5, need)])
            assert np.percentile(a, 99) > 1.0, (n, need)
        # ... and with one fewer, the lower neighbour of the p99 is no longer forced above it.
        a = np.sort(np.concatenate([np.full(n - need + 1, 1.0), np.full(need - 1, 5.0)]))
        assert a[math.floor(0.99 * (n - 1))] <= 1.0


def test_judge_pass_fail_and_fail_badly() -> None:
    s = spec()
    slos = SLOs(ttft_p99_ms=100, tpot_p99_ms=20, error_rate=0.05)
    ok = {"ttft_p99_ms": 90.0, "tpot_p99_ms": 19.0, "error_rate": 0.0}
    assert judge(ok, slos, s) == (ProbeVerdict.PASS, ())
    verdict, why = judge(ok | {"tpot_p99_ms": 25.0}, slos, s)
    assert verdict is ProbeVerdict.FAIL and why == ("tpot_p99_ms 25 > 20",)
    assert judge(ok | {"ttft_p99_ms": 301.0}, slos, s)[0] is ProbeVerdict.FAIL_BADLY
    assert judge(ok | {"error_rate": 0.1}, slos, s)[0] is ProbeVerdict.FAIL
    assert judge(ok | {"error_rate": 0.6}, slos, s)[0] is ProbeVerdict.FAIL_BADLY
    # nothing completed: latencies are NaN, which can never pass
    assert judge(ok | {"ttft_p99_ms": math.nan}, slos, s)[0] is ProbeVerdict.FAIL_BADLY
    # with no error-rate SLO, most requests failing still fails (badly)
    verdict, why = judge({"ttft_p99_ms": 10.0, "error_rate": 0.9}, SLOs(ttft_p99_ms=100), s)
    assert verdict is ProbeVerdict.FAIL_BADLY and why == ("error_rate 0.900 > 0.5",)


def test_spec_validation_and_probe_size() -> None:
    with pytest.raises(ValueError, match="min_rate"):
        CapacitySpec(min_rate=4, max_rate=2)
    with pytest.raises(ValueError, match="at most one"):
        CapacitySpec(min_rate=1, max_rate=2, probe_requests=100, probe_duration_s=10)
    with pytest.raises(ValueError, match="min_probe_requests"):
        CapacitySpec(min_rate=1, max_rate=2, probe_requests=10)
    with pytest.raises(ValueError, match="extra"):
        CapacitySpec(min_rate=1, max_rate=2, tolerence=0.1)  # type: ignore[call-arg]
    by_time = CapacitySpec(min_rate=1, max_rate=20, probe_duration_s=30, min_probe_requests=50)
    assert (by_time.requests_at(1.0), by_time.requests_at(10.0)) == (50, 300)
    assert CapacitySpec(min_rate=1, max_rate=2).requests_at(1.5) == 100


def test_probe_workload_overrides_only_arrival_and_size() -> None:
    w = WorkloadSpec.model_validate(
        WORKLOAD.model_dump() | {"arrival": {"kind": "closed", "clients": 8}, "warmup_requests": 3}
    )
    first = probe_workload(w, spec(), 12.5, first=True)
    later = probe_workload(w, spec(), 12.5, first=False)
    assert first.arrival.kind == "poisson" and first.arrival.rate == 12.5
    assert first.arrival.max_concurrency is None
    assert (first.num_requests, first.duration_s, first.warmup_requests) == (PROBE_N, None, 3)
    assert later.warmup_requests == 0
    assert first.window_requests == PROBE_N // 20
    assert (first.seed, first.input_len, first.output_len, first.api) == (
        w.seed,
        w.input_len,
        w.output_len,
        w.api,
    )


async def test_no_slo_is_a_config_error(server: QueueServer) -> None:
    with pytest.raises(ConfigError, match=r"capacity\.slos"):
        await find_capacity(server.url, WORKLOAD, SLOs(), spec())


# -- end to end against the queue ---------------------------------------------------------------


async def test_capacity_matches_the_queue_model_within_tolerance(server: QueueServer) -> None:
    expected = crossing_rate(SLO_TTFT_MS)
    assert 0.8 / SERVICE_S < expected < 1.0 / SERVICE_S  # below saturation, as it must be
    truth = Truth(server.engine)  # type: ignore[arg-type]
    result = await find_capacity(server.url, WORKLOAD, SLO, spec(), on_probe=truth)
    assert result.reason is StopReason.CONVERGED and not result.stopped_early
    assert result.upper_rps is not None and result.upper_rps / result.capacity_rps - 1 <= 0.05
    # Every verdict agrees with what the queue really did in this run (its arrivals and its
    # service as this machine's load let it run), so the final bracket holds the crossing.
    truth.check(result)
    assert result.capacity_rps < 1.0 / SERVICE_S
    # Ramp from 10/s by doubling to the first fail, then bisection: never above a failing rate.
    rates = [p.rate for p in result.probes]
    assert rates[:3] == [10.0, 20.0, 40.0]
    for k, p in enumerate(result.probes):
        failing_before = [q.rate for q in result.probes[:k] if not q.passed]
        assert all(p.rate < r for r in failing_before)
    assert len(result.probes) <= 9


async def test_records_are_complete_and_json_ready(server: QueueServer) -> None:
    result = await find_capacity(server.url, WORKLOAD, SLO, spec(min_rate=20.0, tolerance=0.2))
    best = result.best
    assert best is not None and best.passed and best.rate == result.capacity_rps
    flat = result.flat()
    assert flat["capacity_rps"] == result.capacity_rps
    assert set(FLAT_METRICS) <= set(flat)
    assert flat["ttft_p99_ms"] == best.metrics["ttft_p99_ms"] <= SLO_TTFT_MS
    for p in result.probes:
        assert set(FLAT_METRICS) <= set(p.metrics)
        assert p.wall_s > 0 and p.requests == PROBE_N
        if not p.decided_early:
            assert p.metrics["completed"] + p.metrics["failed"] == PROBE_N
        assert p.passed == (p.verdict is ProbeVerdict.PASS) and p.passed == (not p.violations)
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert doc["reason"] == "converged" and len(doc["probes"]) == len(result.probes)
    point = doc["probes"][0]
    for key in (
        "rate",
        "passed",
        "ttft_median_ms",
        "ttft_p99_ms",
        "tpot_median_ms",
        "tpot_p99_ms",
        "goodput",
    ):
        assert key in point
    curve = result.curve()
    assert [c["rate"] for c in curve] == sorted(p.rate for p in result.probes)
    # latency rises with load along the curve: passing below the capacity, failing above it
    # (an early-decided probe's partial p99 is already above the bound: the decision is exact)
    assert curve[0]["ttft_p99_ms"] <= SLO_TTFT_MS < curve[-1]["ttft_p99_ms"]


async def test_incumbent_out_of_reach_stops_after_one_probe(server: QueueServer) -> None:
    result = await find_capacity(server.url, WORKLOAD, SLO, spec(), incumbent_rps=45.0)
    assert result.reason is StopReason.CANNOT_BEAT_INCUMBENT and result.stopped_early
    assert [p.rate for p in result.probes] == [45.0] and not result.probes[0].passed
    assert result.capacity_rps == 0.0 and result.upper_rps == 45.0
    # the failure was certain before all 60 requests came back
    assert result.probes[0].decided_early
    # no probe passed: flat() carries the failing probe's metrics, so SLO constraints are violated
    assert result.flat()["ttft_p99_ms"] > SLO_TTFT_MS


async def test_incumbent_within_reach_saves_the_ramp(server: QueueServer) -> None:
    truth = Truth(server.engine)  # type: ignore[arg-type]
    result = await find_capacity(server.url, WORKLOAD, SLO, spec(), incumbent_rps=20.0, on_probe=truth)
    assert result.probes[0].rate == 20.0 and result.probes[0].passed
    assert result.reason is StopReason.CONVERGED
    assert result.upper_rps is not None and result.upper_rps / result.capacity_rps - 1 <= 0.05
    truth.check(result)
    assert all(p.rate >= 20.0 for p in result.probes)


async def test_failing_badly_at_the_first_rate_stops(server: QueueServer) -> None:
    server.reset(service_s=0.05)  # TTFT >= 50 ms against a 10 ms SLO: more than 3x over
    result = await find_capacity(server.url, WORKLOAD, SLOs(ttft_p99_ms=10.0), spec(min_rate=2.0))
    assert result.reason is StopReason.FAILED_BADLY and result.stopped_early
    assert len(result.probes) == 1 and result.probes[0].verdict is ProbeVerdict.FAIL_BADLY
    assert result.probes[0].decided_early


async def test_mild_failure_at_min_rate_is_below_range(server: QueueServer) -> None:
    server.reset(service_s=0.05)
    result = await find_capacity(server.url, WORKLOAD, SLOs(ttft_p99_ms=45.0), spec(min_rate=2.0))
    assert result.reason is StopReason.BELOW_MIN_RATE and not result.stopped_early
    assert result.probes[0].verdict is ProbeVerdict.FAIL and result.capacity_rps == 0.0


async def test_errors_fail_badly(server: QueueServer) -> None:
    server.reset(fail_all=True)
    result = await find_capacity(server.url, WORKLOAD, SLO, spec(min_rate=2.0))
    assert result.reason is StopReason.FAILED_BADLY
    assert result.probes[0].metrics["error_rate"] == 1.0 or result.probes[0].decided_early


async def test_passing_the_whole_range(server: QueueServer) -> None:
    result = await find_capacity(
        server.url, WORKLOAD, SLO, spec(min_rate=10.0, max_rate=20.0, probe_requests=30)
    )
    assert result.reason is StopReason.REACHED_MAX_RATE
    assert [p.rate for p in result.probes] == [10.0, 20.0] and result.capacity_rps == 20.0


async def test_time_budget_and_max_probes_bound_the_search(server: QueueServer) -> None:
    # 60 requests at 5/s take ~12 s: a 5 s budget does not even start the first probe ...
    result = await find_capacity(server.url, WORKLOAD, SLO, spec(min_rate=5.0, time_budget_s=5.0))
    assert result.reason is StopReason.TIME_BUDGET and result.probes == ()
    # ... and max_probes cuts the ramp (the bracket is then wider than the tolerance).
    result = await find_capacity(server.url, WORKLOAD, SLO, spec(min_rate=20.0, max_probes=2))
    assert result.reason is StopReason.MAX_PROBES and len(result.probes) == 2
