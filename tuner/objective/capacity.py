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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tuner.core.errors import ConfigError
from tuner.core.records import RequestRecord
from tuner.loadgen.benchmark import OnProgress, run_benchmark
from tuner.loadgen.metrics import BenchResult, tpot_s
from tuner.space.sections import CapacitySpec
from tuner.space.workload import PoissonArrival, SLOs, WorkloadSpec

#: SLO field -> (metric name in BenchResult.flat(), per-request value in seconds)
_LATENCY_SLOS: Mapping[str, tuple[str, Callable[[RequestRecord], float | None]]] = {
    "ttft_p99_ms": ("ttft_p99_ms", lambda r: r.ttft_s),
    "tpot_p99_ms": ("tpot_p99_ms", tpot_s),
    "e2e_p99_ms": ("e2e_p99_ms", lambda r: r.e2e_s),
}

# How many requests a probe reports on between checks for a certain failure.
_DECISION_CHECKS = 20


class Verdict(StrEnum):
    """How a probe ended against the SLOs."""

    PASS = "pass"
    FAIL = "fail"
    FAIL_BADLY = "fail_badly"


class StopReason(StrEnum):
    """Why the search ended."""

    CONVERGED = "converged"  # highest pass and lowest fail within tolerance
    REACHED_MAX_RATE = "reached max_rate"  # passes at the top of the range: capacity >= max_rate
    BELOW_MIN_RATE = "below min_rate"  # fails at min_rate: capacity < min_rate
    FAILED_BADLY = "failed badly"  # fails badly at the first rate: far from serving the range
    CANNOT_BEAT_INCUMBENT = "cannot beat incumbent"  # fails at the incumbent's capacity
    MAX_PROBES = "max probes"  # bracket wider than tolerance when max_probes ran out
    TIME_BUDGET = "time budget"  # the next probe would not fit in time_budget_s
    STALLED = "stalled"  # the server stopped producing tokens (a hang, not overload)


#: Reasons that end a trial before its capacity is known: the runner records it as stopped.
EARLY_STOPS = frozenset({StopReason.CANNOT_BEAT_INCUMBENT, StopReason.FAILED_BADLY})


@dataclass(frozen=True)
class Probe:
    """One benchmark at one Poisson rate and its verdict.

    ``metrics`` is the probe's ``BenchResult.flat()``. ``decided_early``: the probe stopped as
    soon as its failure was certain, so its metrics cover only the requests finished by then
    (an underestimate of the full probe's latencies). ``wall_s``: the probe's wall-clock time.
    """

    index: int
    rate: float
    requests: int
    verdict: Verdict
    violations: tuple[str, ...]
    decided_early: bool
    wall_s: float
    metrics: Mapping[str, float]
    bench: BenchResult = field(repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the latency-vs-load curve's point plus every flat metric)."""
        m = self.metrics
        return {
            "index": self.index,
            "rate": self.rate,
            "requests": self.requests,
            "passed": self.passed,
            "verdict": self.verdict.value,
            "violations": list(self.violations),
            "decided_early": self.decided_early,
            "wall_s": round(self.wall_s, 3),
            **{k: _json_float(m.get(k, math.nan)) for k in _CURVE_KEYS},
            "metrics": {k: _json_float(v) for k, v in m.items()},
        }


_CURVE_KEYS = (
    "ttft_median_ms",
    "ttft_p99_ms",
    "tpot_median_ms",
    "tpot_p99_ms",
    "e2e_p99_ms",
    "goodput",
    "request_throughput",
    "error_rate",
    "duration_s",
)


@dataclass(frozen=True)
class CapacityResult:
    """The outcome of :func:`find_capacity`.

    ``capacity_rps`` is the highest passing rate (0.0 when none passed); ``upper_rps`` the
    lowest failing rate (None when none failed). ``probes`` are in the order they ran.
    """

    capacity_rps: float
    upper_rps: float | None
    probes: tuple[Probe, ...]
    reason: StopReason
    wall_s: float
    incumbent_rps: float | None = None

    @property
    def stopped_early(self) -> bool:
        """True when the search was cut short on purpose (cannot beat the incumbent, failed badly)."""
        return self.reason in EARLY_STOPS

    @property
    def best(self) -> Probe | None:
        """The passing probe at the highest rate, if any."""
        passing = [p for p in self.probes if p.passed]
        return max(passing, key=lambda p: p.rate) if passing else None

    @property
    def bench(self) -> BenchResult | None:
        """The BenchResult behind :meth:`flat`: the best passing probe's, else the lowest-rate probe's."""
        probe = self.best or (min(self.probes, key=lambda p: p.rate) if self.probes else None)
        return probe.bench if probe is not None else None

    def flat(self) -> dict[str, float]:
        """``capacity_rps`` plus the metrics of the best passing probe.

        When no probe passed, the lowest-rate probe's metrics are given instead, so SLO
        constraints computed from them come out violated (the trial is infeasible).
        """
        bench = self.bench
        out = dict(bench.flat()) if bench is not None else {}
        out["capacity_rps"] = self.capacity_rps
        return out

    def curve(self) -> list[dict[str, Any]]:
        """The probes sorted by rate: the latency-vs-load curve a report draws."""
        return [p.to_dict() for p in sorted(self.probes, key=lambda p: p.rate)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record of the whole search (for a trial's user attributes)."""
        return {
            "capacity_rps": self.capacity_rps,
            "upper_rps": self.upper_rps,
            "reason": self.reason.value,
            "stopped_early": self.stopped_early,
            "incumbent_rps": self.incumbent_rps,
            "wall_s": round(self.wall_s, 3),
            "probes": [p.to_dict() for p in self.probes],
        }


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


def judge(metrics: Mapping[str, float], slos: SLOs, spec: CapacitySpec) -> tuple[Verdict, tuple[str, ...]]:
    """Pass, fail or fail badly for one probe's flat metrics; the violations as readable strings.

    A NaN latency (no request completed) fails badly. Beyond the set SLOs, an error rate above
    ``spec.fail_badly_error_rate`` always fails badly.

    >>> spec = CapacitySpec(min_rate=1, max_rate=8)
    >>> judge({"ttft_p99_ms": 250.0, "error_rate": 0.0}, SLOs(ttft_p99_ms=200), spec)
    (<Verdict.FAIL: 'fail'>, ('ttft_p99_ms 250 > 200',))
    """
    violations: list[str] = []
    badly = False
    for slo_field, (metric, _) in _LATENCY_SLOS.items():
        bound = getattr(slos, slo_field)
        if bound is None:
            continue
        value = float(metrics.get(metric, math.nan))
        if math.isnan(value) or value > bound:
            violations.append(f"{metric} {value:.0f} > {bound:g}")
            badly = badly or math.isnan(value) or value > spec.fail_badly_factor * bound
    error_rate = float(metrics.get("error_rate", math.nan))
    if slos.error_rate is not None and not error_rate <= slos.error_rate:
        violations.append(f"error_rate {error_rate:.3f} > {slos.error_rate:g}")
    if not error_rate <= spec.fail_badly_error_rate:
        badly = True
        if slos.error_rate is None:
            violations.append(f"error_rate {error_rate:.3f} > {spec.fail_badly_error_rate:g}")
    if not violations:
        return Verdict.PASS, ()
    return (Verdict.FAIL_BADLY if badly else Verdict.FAIL), tuple(violations)


def _must_exceed(n: int) -> int:
    """Fewest values above a bound, out of ``n``, that force numpy's linear p99 above it.

    The p99 interpolates between sorted values ``floor(0.99 (n-1))`` and the next; once that
    lower one is above the bound, so is the p99.
    """
    return n - math.floor(0.99 * (n - 1))


class _FailureWatch:
    """``should_stop`` for one probe: stop once the final verdict can only be a failure."""

    def __init__(self, slos: SLOs, spec: CapacitySpec, planned: int) -> None:
        self.slos = slos
        self.spec = spec
        self.planned = planned
        self.decided: Verdict | None = None
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
            self.decided = Verdict.FAIL_BADLY if badly else Verdict.FAIL
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
            badly = Verdict.FAIL_BADLY in (verdict, watch.decided)
            verdict, violations = (Verdict.FAIL_BADLY if badly else Verdict.FAIL), watch.reasons
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
                    StopReason.FAILED_BADLY if p.verdict is Verdict.FAIL_BADLY else StopReason.BELOW_MIN_RATE
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


def effective_slos(spec: CapacitySpec, space_slos: SLOs | None) -> SLOs:
    """The SLOs that define pass/fail: the spec's own, else the space's. ConfigError when none bound anything."""
    slos = spec.slos if spec.slos is not None else space_slos
    if slos is None or all(getattr(slos, f) is None for f in (*_LATENCY_SLOS, "error_rate")):
        raise ConfigError(
            "capacity search needs at least one SLO (ttft_p99_ms, tpot_p99_ms, e2e_p99_ms or error_rate) "
            "to define pass/fail: set `slos:` or `capacity.slos:`",
            field="capacity.slos",
        )
    return slos


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


def _json_float(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


__all__ = [
    "EARLY_STOPS",
    "CapacityResult",
    "CapacitySpec",
    "OnProbe",
    "Probe",
    "StopReason",
    "Verdict",
    "effective_slos",
    "find_capacity",
    "judge",
    "probe_workload",
]
