"""What a capacity search decides and returns: the pass/fail rule of one probe (:func:`judge`), the
probes, the result and why the search stopped. The search itself is in ``tuner/objective/capacity.py``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tuner.core.errors import ConfigError
from tuner.core.records import RequestRecord
from tuner.loadgen.metrics import BenchResult, tpot_s
from tuner.space.sections import CapacitySpec
from tuner.space.workload import SLOs

#: SLO field -> (metric name in BenchResult.flat(), per-request value in seconds)
_LATENCY_SLOS: Mapping[str, tuple[str, Callable[[RequestRecord], float | None]]] = {
    "ttft_p99_ms": ("ttft_p99_ms", lambda r: r.ttft_s),
    "tpot_p99_ms": ("tpot_p99_ms", tpot_s),
    "e2e_p99_ms": ("e2e_p99_ms", lambda r: r.e2e_s),
}


class ProbeVerdict(StrEnum):
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
    verdict: ProbeVerdict
    violations: tuple[str, ...]
    decided_early: bool
    wall_s: float
    metrics: Mapping[str, float]
    bench: BenchResult = field(repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.verdict is ProbeVerdict.PASS

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


def judge(
    metrics: Mapping[str, float], slos: SLOs, spec: CapacitySpec
) -> tuple[ProbeVerdict, tuple[str, ...]]:
    """Pass, fail or fail badly for one probe's flat metrics; the violations as readable strings.

    A NaN latency (no request completed) fails badly. Beyond the set SLOs, an error rate above
    ``spec.fail_badly_error_rate`` always fails badly.

    >>> spec = CapacitySpec(min_rate=1, max_rate=8)
    >>> judge({"ttft_p99_ms": 250.0, "error_rate": 0.0}, SLOs(ttft_p99_ms=200), spec)
    (<ProbeVerdict.FAIL: 'fail'>, ('ttft_p99_ms 250 > 200',))
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
        return ProbeVerdict.PASS, ()
    return (ProbeVerdict.FAIL_BADLY if badly else ProbeVerdict.FAIL), tuple(violations)


def _must_exceed(n: int) -> int:
    """Fewest values above a bound, out of ``n``, that force numpy's linear p99 above it.

    The p99 interpolates between sorted values ``floor(0.99 (n-1))`` and the next; once that
    lower one is above the bound, so is the p99.
    """
    return n - math.floor(0.99 * (n - 1))


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


def _json_float(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v
