"""One benchmark run: warm-up, measured phase, windows, hang detection, early stop.

Pipeline: prompts (``prompts.py``) -> arrival driver (``arrival.py``) -> one HTTP request each
(``client.py``) -> records -> metrics (``metrics.py``). This module only orchestrates: it owns
the clock of the run, the in-flight set the hang detector watches, and the hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import aiohttp

from tuner.core.records import RequestRecord
from tuner.loadgen.arrival import ClosedArrival, drive
from tuner.loadgen.client import send_request
from tuner.loadgen.metrics import BenchResult, compute_metrics
from tuner.loadgen.prompts import Prompt, make_prompts
from tuner.space.workload import SLOs, WorkloadSpec

ShouldStop = Callable[[int, BenchResult], bool]
OnProgress = Callable[[int, "int | None", dict[str, float]], None]

PROGRESS_EVERY_S = 1.0


class _Stop(Enum):
    STALLED = "stalled"
    EARLY = "stopped_early"
    DEADLINE = "over_deadline"  # the measured phase outlasted ``deadline_s``: an early stop too


@dataclass
class _Job:
    index: int
    prompt: Prompt
    warmup: bool


class _Run:
    """Mutable state of one run; lives only inside :func:`run_benchmark`."""

    def __init__(
        self,
        base_url: str,
        workload: WorkloadSpec,
        slos: SLOs | None,
        model: str | None,
        should_stop: ShouldStop | None,
        on_progress: OnProgress | None,
        deadline_s: float | None = None,
    ) -> None:
        self.base_url = base_url
        self.deadline_ns = int(deadline_s * 1e9) if deadline_s is not None else None
        self.workload = workload
        self.slos = slos
        self.model = model
        self.should_stop = should_stop
        self.on_progress = on_progress
        self.prompts: Iterator[Prompt] = make_prompts(workload)
        self.next_index = 0
        self.intended: dict[int, int] = {}  # request index -> the prompt length it was built to have
        self.started: list[RequestRecord] = []
        self.finished: list[RequestRecord] = []  # measured requests only, in completion order
        self.in_flight: set[int] = set()
        self.last_progress_ns = time.perf_counter_ns()
        self.stop_reason: _Stop | None = None
        self.stop_event = asyncio.Event()
        self.t0_ns: int | None = None
        self.window = 0
        self.window_start_ns = 0
        self.windows: list[dict[str, float]] = []
        self.last_report_ns = 0
        self.session: aiohttp.ClientSession | None = None

    # -- jobs -------------------------------------------------------------------------------
    def claimer(self, warmup: bool) -> Callable[[], _Job | None]:
        """A ``claim()`` for one phase: the next job, or None when the phase is over."""
        w = self.workload
        limit = w.warmup_requests if warmup else w.num_requests
        claimed = 0
        deadline_ns = None

        def claim() -> _Job | None:
            nonlocal claimed, deadline_ns
            if self.stop_reason is not None or (limit is not None and claimed >= limit):
                return None
            if not warmup and w.duration_s is not None:
                assert self.t0_ns is not None
                deadline_ns = deadline_ns or self.t0_ns + int(w.duration_s * 1e9)
                if time.perf_counter_ns() >= deadline_ns:
                    return None
            claimed += 1
            job = _Job(self.next_index, next(self.prompts), warmup)
            self.next_index += 1
            return job

        return claim

    async def execute(self, job: _Job) -> None:
        """Send one request, keeping the in-flight set and progress clock current."""
        assert self.session is not None
        self.intended[job.index] = job.prompt.prompt_tokens
        record = RequestRecord(
            index=job.index,
            prompt_tokens=job.prompt.prompt_tokens,
            max_new_tokens=job.prompt.output_len,
            sent_ns=time.perf_counter_ns(),
            warmup=job.warmup,
        )
        self.started.append(record)
        if not self.in_flight:
            # The hang clock starts with the first request in flight, not at the last chunk
            # of an idle period (an open-loop pause is not a hang).
            self.last_progress_ns = time.perf_counter_ns()
        self.in_flight.add(job.index)
        try:
            await send_request(
                self.session,
                self.base_url,
                self.workload.api,
                job.prompt,
                record,
                model=self.model,
                timeout_s=self.workload.request_timeout_s,
                ignore_eos=self.workload.ignore_eos,
                on_chunk=self._on_chunk,
            )
        finally:
            self.in_flight.discard(job.index)
        self.last_progress_ns = time.perf_counter_ns()
        # After an early stop the measured span is over: a late completion is not part of it.
        if not job.warmup and self.stop_reason is not _Stop.EARLY:
            self._measured_done(record)

    def _on_chunk(self, t_ns: int) -> None:
        self.last_progress_ns = t_ns

    # -- windows, hooks -----------------------------------------------------------------------
    def _measured_done(self, record: RequestRecord) -> None:
        record.window = self.window
        self.finished.append(record)
        now = time.perf_counter_ns()
        n = len(self.finished)
        if n % self.workload.window_requests == 0:
            self._close_window(now)
            if self.should_stop is None and self.on_progress is None:
                return  # nobody looks at the cumulative result: do not compute it
            partial = self.partial(now)
            if self.should_stop is not None and self.should_stop(self.window - 1, partial):
                self.stop(_Stop.EARLY)
            self._report(n, partial.flat(), now)
        elif self.on_progress is not None and now - self.last_report_ns >= PROGRESS_EVERY_S * 1e9:
            self._report(n, self.partial(now).flat(), now)

    def _close_window(self, now_ns: int) -> None:
        records = [r for r in self.finished if r.window == self.window]
        if records:
            dur = (now_ns - self.window_start_ns) / 1e9
            self.windows.append(compute_metrics(records, dur, self.slos).flat())
        self.window += 1
        self.window_start_ns = now_ns

    def partial(self, now_ns: int) -> BenchResult:
        """Metrics over the measured requests finished so far."""
        assert self.t0_ns is not None
        result = compute_metrics(self.finished, (now_ns - self.t0_ns) / 1e9, self.slos)
        return replace(result, windows=tuple(self.windows))

    def _report(self, done: int, flat: dict[str, float], now_ns: int) -> None:
        if self.on_progress is not None:
            self.last_report_ns = now_ns
            self.on_progress(done, self.workload.num_requests, flat)

    def stop(self, reason: _Stop) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop_event.set()

    # -- phases -------------------------------------------------------------------------------
    async def watch_for_stall(self) -> None:
        """Stop the run when requests are in flight and none got a chunk for stall_timeout_s, or when
        the measured phase outlasts the deadline."""
        limit_ns = int(self.workload.stall_timeout_s * 1e9)
        interval = min(0.5, self.workload.stall_timeout_s / 5)
        while True:
            await asyncio.sleep(interval)
            now = time.perf_counter_ns()
            if self.in_flight and now - self.last_progress_ns > limit_ns:
                self.stop(_Stop.STALLED)
                return
            if (
                self.deadline_ns is not None
                and self.t0_ns is not None
                and now - self.t0_ns > self.deadline_ns
            ):
                self.stop(_Stop.DEADLINE)
                return

    async def phase(self, warmup: bool) -> None:
        """Run one phase's arrival process until it ends or the run is stopped."""
        arrival = self.workload.arrival
        if warmup:
            # Warm-up requests go out together, capped like the measured phase.
            cap = getattr(arrival, "clients", None) or getattr(arrival, "max_concurrency", None)
            n = self.workload.warmup_requests
            arrival = ClosedArrival(clients=min(cap or n, n))
        driver = asyncio.create_task(
            drive(
                arrival,
                self.workload.seed,
                self.claimer(warmup),
                self.execute,
                offset_of=_trace_time,
                session_of=_session,
            )
        )
        stopper = asyncio.create_task(self.stop_event.wait())
        try:
            await asyncio.wait({driver, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (driver, stopper):
                task.cancel()
            await asyncio.gather(driver, stopper, return_exceptions=True)
        if driver.done() and not driver.cancelled() and driver.exception() is not None:
            raise driver.exception()  # type: ignore[misc]  # a hook raised: the caller's bug


async def run_benchmark(
    base_url: str,
    workload: WorkloadSpec,
    *,
    slos: SLOs | None = None,
    model: str | None = None,
    should_stop: ShouldStop | None = None,
    on_progress: OnProgress | None = None,
    deadline_s: float | None = None,
) -> BenchResult:
    """Benchmark the server at ``base_url`` with ``workload``; never raises for server errors.

    Warm-up requests run first (same prompts stream, same concurrency cap) and are excluded
    from metrics; the measured duration starts when they are done. After each window of
    ``workload.window_requests`` measured requests, ``should_stop(window_index, partial)`` may
    end the run (``stopped_early``; requests in flight are cancelled and dropped). If requests
    are in flight and none receives a chunk for ``stall_timeout_s``, the run ends ``stalled``
    (in-flight requests count as failed). ``on_progress(done, total, flat)`` is called after
    each window and at most once a second otherwise; ``total`` is None for a duration run.
    ``deadline_s`` ends the measured phase after that long (``stopped_early`` and ``over_deadline``):
    a configuration slower than one already measured on the same requests need not finish to lose.

    Raises ConfigError for a bad prompts file, before any request is sent.

    >>> # result = await run_benchmark("http://127.0.0.1:30000", WorkloadSpec(num_requests=64))
    >>> # result.flat()["output_throughput"]
    """
    run = _Run(base_url, workload, slos, model, should_stop, on_progress, deadline_s)
    first = next(run.prompts)  # a bad prompts file fails here, before the server sees anything
    run.prompts = _prepend(first, run.prompts)
    # Our own per-request timeout (asyncio.timeout) replaces aiohttp's 5-minute default.
    # A fresh connection per request, as SGLang's bench_serving (a session per request) does:
    # servers such as llama-server close streamed connections, and reusing them fails requests.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    watchdog: asyncio.Task[None] | None = None
    no_timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=no_timeout) as session:
        run.session = session
        watchdog = asyncio.create_task(run.watch_for_stall())
        try:
            if workload.warmup_requests:
                await run.phase(warmup=True)
            run.t0_ns = run.window_start_ns = time.perf_counter_ns()
            if run.stop_reason is None:
                await run.phase(warmup=False)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
    end_ns = time.perf_counter_ns()
    return _finish(run, end_ns)


def _finish(run: _Run, end_ns: int) -> BenchResult:
    """Settle cancelled requests, close the last window, and compute the final result."""
    records: list[RequestRecord] = []
    kept = {id(r) for r in run.finished}
    for r in run.started:
        cancelled = not r.ok and r.error is None
        if run.stop_reason in (_Stop.EARLY, _Stop.DEADLINE) and not r.warmup and id(r) not in kept:
            continue  # cut off (or finished late) after our own early stop: not a measurement
        if cancelled:
            limit = run.workload.stall_timeout_s
            r.error = f"stalled: no chunk from any request for stall_timeout_s={limit:g}"
            if not r.warmup:
                r.window = run.window
                run.finished.append(r)
        records.append(r)
    if any(r.window == run.window for r in run.finished):
        run._close_window(end_ns)
    assert run.t0_ns is not None
    duration = (end_ns - run.t0_ns) / 1e9
    result = compute_metrics(sorted(records, key=lambda r: r.index), duration, run.slos)
    result = replace(
        result,
        stalled=run.stop_reason is _Stop.STALLED,
        stopped_early=run.stop_reason in (_Stop.EARLY, _Stop.DEADLINE),
        over_deadline=run.stop_reason is _Stop.DEADLINE,
        windows=tuple(run.windows),
        prompt_len_ratio=_length_ratio(records, run.intended),
    )
    if run.on_progress is not None:
        run.on_progress(result.completed + result.failed, run.workload.num_requests, result.flat())
    return result


def _length_ratio(records: list[RequestRecord], intended: dict[int, int]) -> float:
    """Median of server-counted / intended prompt tokens over the measured requests that succeeded."""
    ratios = [
        r.prompt_tokens / intended[r.index]
        for r in records
        if r.ok and not r.warmup and intended.get(r.index)
    ]
    return float(statistics.median(ratios)) if ratios else math.nan


def _trace_time(job: _Job) -> float:
    return job.prompt.at_s or 0.0


def _session(job: _Job) -> int | None:
    return job.prompt.session


def _prepend(first: Prompt, rest: Iterator[Prompt]) -> Iterator[Prompt]:
    yield first
    yield from rest


def run_benchmark_sync(base_url: str, workload: WorkloadSpec, **options: Any) -> BenchResult:
    """:func:`run_benchmark` (same keyword options) for callers without an event loop (a fresh loop per call)."""
    return asyncio.run(run_benchmark(base_url, workload, **options))


__all__ = ["BenchResult", "OnProgress", "ShouldStop", "run_benchmark", "run_benchmark_sync"]
