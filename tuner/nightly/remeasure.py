"""Measure configurations again, outside Optuna: repeats, and interleaved rounds for A/B tests.

Each measurement is a fresh server (:meth:`tuner.trial.measure.ConfigRunner.measure`), so repeats
include start-up variation as a real deployment would. Interleaving alternates the order of
each round (A B C, then C B A, …): a linear drift of the machine during the validation then
adds the same amount to every configuration over two rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tuner.objective import constraints_for_metrics
from tuner.space.schema import SearchSpace
from tuner.trial.measure import ConfigRunner


@dataclass(frozen=True)
class Measurement:
    """One measurement of one configuration, reduced to what the decisions need."""

    label: str
    run_index: int
    round: int | None
    value: float | None  # the first objective; None when the server failed
    slo_ok: bool
    violated: list[str] = field(default_factory=list)
    failure: str | None = None  # "<kind>: <summary>" when the server failed
    failure_kind: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    log_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.value is not None


class Remeasurer:
    """Runs measurements through one :class:`ConfigRunner`, numbering them from ``first_index``."""

    def __init__(
        self,
        runner: ConfigRunner,
        space: SearchSpace,
        *,
        first_index: int = 0,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.runner = runner
        self.space = space
        self.echo = echo
        self.next_index = first_index
        self.all: list[Measurement] = []

    def measure(self, label: str, flags: Mapping[str, Any], *, round_: int | None = None) -> Measurement:
        """Measure ``flags`` once (a crash is recorded in the result, never raised)."""
        index = self.next_index
        self.next_index += 1
        outcome = self.runner.measure(flags, run_index=index)
        log = str(outcome.log_path) if outcome.log_path else None
        objective = self.space.objectives[0].metric
        if outcome.failure is not None:
            f = outcome.failure
            m = Measurement(
                label, index, round_, None, False, [], f"{f.kind.value}: {f.summary()[:300]}", f.kind.value,
                dict(outcome.metrics or {}), log,
            )  # fmt: skip
        else:
            metrics = dict(outcome.metrics or {})
            constraints = constraints_for_metrics(metrics, self.space.slos)
            m = Measurement(
                label, index, round_, float(metrics[objective]), constraints.feasible, constraints.violated(),
                None, None, metrics, log,
            )  # fmt: skip
        self.all.append(m)
        if self.echo is not None:
            shown = f"{objective} {m.value:.3f}" if m.value is not None else f"FAILED {m.failure}"
            where = f"round {round_} " if round_ is not None else ""
            self.echo(f"{where}{label}: {shown}" + ("" if m.slo_ok or not m.ok else " (SLO violated)"))
        return m

    def repeats(
        self, label: str, flags: Mapping[str, Any], n: int, *, stop_on_failure: bool = True
    ) -> list[Measurement]:
        """``n`` back-to-back measurements; stops at the first failure when ``stop_on_failure``."""
        out: list[Measurement] = []
        for _ in range(n):
            m = self.measure(label, flags)
            out.append(m)
            if stop_on_failure and not m.ok:
                break
        return out

    def interleaved(
        self, configs: Mapping[str, Mapping[str, Any]], rounds: int
    ) -> dict[str, list[Measurement]]:
        """``rounds`` rounds over ``configs`` (first = the reference), order reversed every other round.

        A configuration that failed is not measured again (its failure already decides).
        """
        out: dict[str, list[Measurement]] = {label: [] for label in configs}
        labels = list(configs)
        for r in range(rounds):
            order = labels if r % 2 == 0 else labels[::-1]
            for label in order:
                if any(not m.ok for m in out[label]):
                    continue
                out[label].append(self.measure(label, configs[label], round_=r))
        return out


def values(measurements: list[Measurement]) -> list[float]:
    """The objective values of the successful measurements."""
    return [m.value for m in measurements if m.value is not None]


def paired_values(
    reference: list[Measurement], candidate: list[Measurement]
) -> tuple[list[float], list[float]]:
    """Objective values of the rounds where both sides produced one, aligned by round."""
    ref = {m.round: m.value for m in reference if m.value is not None}
    cand = {m.round: m.value for m in candidate if m.value is not None}
    rounds = sorted(set(ref) & set(cand), key=lambda r: -1 if r is None else r)
    return [ref[r] for r in rounds], [cand[r] for r in rounds]  # type: ignore[misc]
