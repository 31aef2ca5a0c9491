"""Capacity under SLO: the highest Poisson request rate at which every SLO still holds.

An operator deploys the configuration that serves the most traffic within its latency targets,
not the one with the best tok/s at a fixed client count. :func:`find_capacity` measures that
number for one running server with a sequence of *probes*, each a :func:`run_benchmark` at one
Poisson rate:

1. With an incumbent (the best capacity so far in the study) the first probe runs at the
   incumbent's rate. A failure there ends the search: this configuration cannot beat it
   (``cannot beat incumbent``). Otherwise the first probe runs at ``min_rate``; a failure there
   means the capacity is below the range (``below min_rate``, or ``failed badly``).
2. A geometric ramp (``rate × ramp_factor``) up to the first failing rate or ``max_rate``.
3. Bisection, at the geometric midpoint, between the highest passing and the lowest failing
   rate until they are within ``tolerance`` of each other (relative).

A rate above a failing one is never probed (latency only grows with load), so a probe that
fails badly (p99 beyond ``fail_badly_factor`` × its SLO, or more than ``fail_badly_error_rate``
of requests failing) bounds the search from above at once, and one at the first rate stops it.
A probe ends as soon as its failure is certain — enough of its requests already broke a bound
that the final p99 must break it too — so overloaded probes do not wait for their queue to drain.

Every probe uses the workload's seed, so each probe's arrivals are the same random pattern
scaled to its rate (common random numbers): pass/fail is then monotone in the rate up to the
server's own noise, which is what bisection needs. See docs/capacity.md for the trade-offs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from tuner.loadgen.benchmark import OnProgress, run_benchmark
from tuner.loadgen.metrics import BenchResult
from tuner.objective.capacity_result import (
    _LATENCY_SLOS,
    EARLY_STOPS,
    CapacityResult,
    Probe,
    ProbeVerdict,
    StopReason,
    _must_exceed,
    effective_slos,
    judge,
)
from tuner.space.sections import CapacitySpec
from tuner.space.workload import PoissonArrival, SLOs, WorkloadSpec

# How many requests a probe reports on between checks for a certain failure.
_DECISION_CHECKS = 20


OnProbe = Callable[[Probe], None]


def probe_workload(workload: WorkloadSpec, spec: CapacitySpec, rate: float, *, first: bool) -> WorkloadSpec:
    """The workload of one probe: the space's workload at Poisson ``rate``, uncapped.

    Overrides ``arrival`` (Poisson at ``rate``, no ``max_concurrency``: a client-side cap would
    hide the server's queue from TTFT), ``num_requests`` (``spec.requests_at(rate)``),
    ``duration_s`` (None), ``warmup_requests`` (kept for the first probe only: the server needs
    warming once) and ``window_requests`` (small, so a certain failure is seen quickly). Lengths,
    API, prompts, seed and timeouts are the workload's.
    """
    n = spec.requests_at(rate)
    return workload.model_copy(
        update={
            "arrival": PoissonArrival(kind="poisson", rate=rate),
            "num_requests": n,
            "duration_s": None,
            "warmup_requests": workload.warmup_requests if first else 0,
            "window_requests": max(1, n // _DECISION_CHECKS),
        }
    )


class _FailureWatch:
    """``should_stop`` for one probe: stop once the final verdict can only be a failure."""

    def __init__(self, slos: SLOs, spec: CapacitySpec, planned: int) -> None:
        self.slos = slos
        self.spec = spec
        self.planned = planned
        self.decided: ProbeVerdict | None = None
        self.reasons: tuple[str, ...] = ()

    def __call__(self, _window: int, partial: BenchResult) -> bool:
        records = [r for r in partial.records if not r.warmup]
        failed = sum(1 for r in records if not r.ok)
        done = [r for r in records if r.ok]
        # The final p99 is over at most this many completed requests; _must_exceed grows with n,
        # so using the largest possible n keeps the decision certain.
        need = _must_exceed(max(1, self.planned - failed))
        badly: list[str] = []
        plain: list[str] = []
        for slo_field, (metric, value_of) in _LATENCY_SLOS.items():
            bound = getattr(self.slos, slo_field)
            if bound is None:
                continue
            values = [v * 1000.0 for r in done if (v := value_of(r)) is not None]
            if sum(v > self.spec.fail_badly_factor * bound for v in values) >= need:
                badly.append(f"{metric}: {need} requests above {self.spec.fail_badly_factor:g}× {bound:g}")
            elif sum(v > bound for v in values) >= need:
                plain.append(f"{metric}: {need} requests above {bound:g}")
        if failed > self.spec.fail_badly_error_rate * self.planned:
            badly.append(f"error_rate: {failed} of {self.planned} requests failed")
        elif self.slos.error_rate is not None and failed > self.slos.error_rate * self.planned:
            plain.append(f"error_rate: {failed} of {self.planned} requests failed")
        if badly or plain:
            self.decided = ProbeVerdict.FAIL_BADLY if badly else ProbeVerdict.FAIL
            self.reasons = tuple(badly + plain)
            return True
        return False


class _Search:
    """State of one capacity search; lives only inside :func:`find_capacity`."""

    def __init__(
        self,
        base_url: str,
        workload: WorkloadSpec,
        slos: SLOs,
        spec: CapacitySpec,
        model: str | None,
        on_probe: OnProbe | None,
        on_progress: OnProgress | None,
    ) -> None:
        self.base_url = base_url
        self.workload = workload
        self.slos = slos
        self.spec = spec
        self.model = model
        self.on_probe = on_probe
        self.on_progress = on_progress
        self.probes: list[Probe] = []
        self.lo: float | None = None  # highest passing rate
        self.hi: float | None = None  # lowest failing rate
        self.t0 = time.perf_counter()
        self.stalled = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def fits(self, rate: float) -> bool:
        """Whether a probe at ``rate`` is expected to end within the time budget."""
        # A passing probe lasts about n/rate plus one request's latency; 1.2 covers the tail.
        expected = self.spec.requests_at(rate) / rate * 1.2
        if self.workload.warmup_requests and not self.probes:
            expected += self.workload.warmup_requests * 1.0
        return self.elapsed() + expected <= self.spec.time_budget_s

    async def probe(self, rate: float) -> Probe:
        if self.probes and self.probes[-1].decided_early and self.spec.cooldown_s:
            # Requests cut off by an early decision may still be finishing on the server.
            await asyncio.sleep(self.spec.cooldown_s)
        load = probe_workload(self.workload, self.spec, rate, first=not self.probes)
        assert load.num_requests is not None
        watch = _FailureWatch(self.slos, self.spec, load.num_requests) if self.spec.decide_early else None
        t0 = time.perf_counter()
        bench = await run_benchmark(
            self.base_url,
            load,
            slos=self.slos,
            model=self.model,
            should_stop=watch,
            on_progress=self.on_progress,
        )
        wall = time.perf_counter() - t0
        metrics = bench.flat()
        verdict, violations = judge(metrics, self.slos, self.spec)
        early = watch is not None and watch.decided is not None
        if watch is not None and watch.decided is not None:
            # The decision is certain; the partial metrics may show it is worse (fails badly).
            badly = ProbeVerdict.FAIL_BADLY in (verdict, watch.decided)
            verdict, violations = (ProbeVerdict.FAIL_BADLY if badly else ProbeVerdict.FAIL), watch.reasons
        self.stalled = bench.stalled
        probe = Probe(
            len(self.probes), rate, load.num_requests, verdict, violations, early, wall, metrics, bench
        )
        self.probes.append(probe)
        if probe.passed:
            self.lo = rate if self.lo is None else max(self.lo, rate)
        else:
            self.hi = rate if self.hi is None else min(self.hi, rate)
        if self.on_probe is not None:
            self.on_probe(probe)
        return probe

    def can_probe(self, rate: float) -> StopReason | None:
        """Why no further probe may run (None: it may)."""
        if len(self.probes) >= self.spec.max_probes:
            return StopReason.MAX_PROBES
        if not self.fits(rate):
            return StopReason.TIME_BUDGET
        return None

    async def run(self, incumbent_rps: float | None) -> StopReason:
        spec = self.spec
        if incumbent_rps is not None:
            first = min(max(incumbent_rps, spec.min_rate), spec.max_rate)
            if (stop := self.can_probe(first)) is not None:
                return stop
            if not (await self.probe(first)).passed:
                return StopReason.STALLED if self.stalled else StopReason.CANNOT_BEAT_INCUMBENT
        else:
            if (stop := self.can_probe(spec.min_rate)) is not None:
                return stop
            p = await self.probe(spec.min_rate)
            if self.stalled:
                return StopReason.STALLED
            if not p.passed:
                return (
                    StopReason.FAILED_BADLY
                    if p.verdict is ProbeVerdict.FAIL_BADLY
                    else StopReason.BELOW_MIN_RATE
                )
        # Ramp: geometric steps up to the first failure or the top of the range.
        while self.hi is None:
            assert self.lo is not None
            if self.lo >= spec.max_rate:
                return StopReason.REACHED_MAX_RATE
            rate = min(self.lo * spec.ramp_factor, spec.max_rate)
            if (stop := self.can_probe(rate)) is not None:
                return stop
            await self.probe(rate)
            if self.stalled:
                return StopReason.STALLED
        # Bisection at the geometric midpoint: the tolerance is relative.
        while self.lo is not None and self.hi / self.lo - 1 > spec.tolerance:
            rate = math.sqrt(self.lo * self.hi)
            if (stop := self.can_probe(rate)) is not None:
                return stop
            await self.probe(rate)
            if self.stalled:
                return StopReason.STALLED
        return StopReason.CONVERGED


async def find_capacity(
    base_url: str,
    workload: WorkloadSpec,
    slos: SLOs | None,
    spec: CapacitySpec,
    *,
    incumbent_rps: float | None = None,
    on_probe: OnProbe | None = None,
    on_progress: OnProgress | None = None,
    model: str | None = None,
) -> CapacityResult:
    """Find the highest Poisson request rate at which the server at ``base_url`` meets every SLO.

    ``workload`` gives lengths, API, prompts, seed and timeouts; each probe overrides its arrival
    and size (:func:`probe_workload`). ``slos`` are the space's SLOs, used unless ``spec.slos`` is
    set. ``incumbent_rps``: the best capacity so far; the first probe runs there and a failure
    ends the search (``cannot beat incumbent``). ``on_probe(probe)`` is called after each probe,
    ``on_progress`` is passed to every probe's :func:`run_benchmark`. Never raises for a server
    failure: a stalled probe ends the search with reason ``stalled``. Raises ConfigError when no
    SLO is set.

    >>> # result = await find_capacity(url, space.workload, space.slos, space.capacity)
    >>> # result.capacity_rps, result.reason.value, len(result.probes)
    """
    bound = effective_slos(spec, slos)
    search = _Search(base_url, workload, bound, spec, model, on_probe, on_progress)
    reason = await search.run(incumbent_rps)
    return CapacityResult(
        capacity_rps=search.lo or 0.0,
        upper_rps=search.hi,
        probes=tuple(search.probes),
        reason=reason,
        wall_s=search.elapsed(),
        incumbent_rps=incumbent_rps,
    )


__all__ = [
    "EARLY_STOPS",
    "CapacityResult",
    "CapacitySpec",
    "OnProbe",
    "Probe",
    "ProbeVerdict",
    "StopReason",
    "effective_slos",
    "find_capacity",
    "judge",
    "probe_workload",
]
