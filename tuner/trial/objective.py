"""The Optuna objective: one trial = sample parameters, measure them, record the outcome on the trial.

:class:`TrialRunner` is what ``optuna.Study.optimize`` calls. A failed server becomes a PRUNED trial
with the ``crash`` constraint violated and the failure kind and evidence in user attributes, so TPE
learns to avoid it (a FAIL trial would be invisible to it: shared/facts/optuna.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import optuna

from tuner.loadgen.metrics import BenchResult
from tuner.objective import constraints_for_crash, constraints_for_metrics, objective_values
from tuner.objective.ranking import feasible_complete
from tuner.space.sample import params_to_flags, sample_params
from tuner.store.attrs import TrialAttr
from tuner.trial.measure import ConfigRunner, Outcome
from tuner.trial.pruning import window_should_stop


class TrialRunner:
    """The Optuna objective: sample, measure, and record the outcome on the trial."""

    def __init__(
        self,
        config_runner: ConfigRunner,
        *,
        on_outcome: Callable[[optuna.Trial, Outcome], None] | None = None,
        prune_on_windows: bool = False,
    ) -> None:
        self.runner = config_runner
        self.space = config_runner.space
        self.on_outcome = on_outcome
        self.prune_on_windows = prune_on_windows

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        params = sample_params(self.space, trial)
        flags = dict(params_to_flags(self.space, params))
        trial.set_user_attr(TrialAttr.WORKER, self.runner.worker)  # known even if this worker dies mid-trial
        progress = self.runner.progress
        if progress is not None:
            progress.start_trial(trial.number, str(trial.user_attrs.get(TrialAttr.SEED_NAME, "")))
        should_stop = (
            window_should_stop(trial, self.space.pruning, self.space.objectives[0].metric)
            if self.prune_on_windows
            else None
        )
        try:
            outcome = self.runner.measure(
                flags,
                run_index=trial.number,
                should_stop=should_stop,
                incumbent_rps=self._incumbent_rps(trial),
            )
        except KeyboardInterrupt:
            trial.set_user_attr(TrialAttr.INTERRUPTED, True)
            raise
        return self.record(trial, outcome)

    def _incumbent_rps(self, trial: optuna.Trial) -> float | None:
        """The best feasible capacity so far: a capacity search that cannot beat it stops early."""
        if self.space.capacity is None or len(self.space.objectives) != 1:
            return None
        feasible = [t.values[0] for t in feasible_complete(trial.study)]
        return max(feasible) if feasible else None

    def record(self, trial: optuna.Trial, outcome: Outcome) -> float | list[float]:
        """Write the outcome onto ``trial``; raise TrialPruned for a failed or pruned configuration."""
        trial.set_user_attr(TrialAttr.FLAGS, outcome.flags)
        trial.set_user_attr(TrialAttr.COMMAND, outcome.argv)
        if outcome.docker_command is not None:
            trial.set_user_attr(TrialAttr.DOCKER_COMMAND, outcome.docker_command)
        trial.set_user_attr(TrialAttr.TIMINGS, {k: round(v, 3) for k, v in outcome.timings.items()})
        if outcome.metrics is not None:
            trial.set_user_attr(TrialAttr.METRICS, {k: _json_float(v) for k, v in outcome.metrics.items()})
        if outcome.capacity is not None:
            trial.set_user_attr(TrialAttr.CAPACITY, outcome.capacity)
        if errors := request_errors(outcome.bench):
            trial.set_user_attr(TrialAttr.REQUEST_ERRORS, errors)
        if self.on_outcome is not None:
            self.on_outcome(trial, outcome)
        if outcome.failure is not None:
            failure = outcome.failure
            trial.set_user_attr(TrialAttr.FAILURE_KIND, failure.kind.value)
            trial.set_user_attr(TrialAttr.FAILURE, failure.to_attrs())
            for key, value in constraints_for_crash(self.space.slos).values.items():
                trial.set_constraint(key, value)
            self._end(f"PRUNED {failure.kind.value}: {failure.summary()[:120]}")
            raise optuna.TrialPruned(f"{failure.kind.value}: {failure.summary()}")
        assert outcome.metrics is not None
        constraints = constraints_for_metrics(outcome.metrics, self.space.slos)
        for key, value in constraints.values.items():
            trial.set_constraint(key, value)
        if outcome.stopped_early:
            trial.set_user_attr(TrialAttr.PRUNED_BY, outcome.stop_reason)
            self._end(f"PRUNED ({outcome.stop_reason}: cannot beat the trials before it)")
            raise optuna.TrialPruned(
                f"stopped early ({outcome.stop_reason}): clearly worse than earlier trials"
            )
        values = objective_values(outcome.metrics, self.space.objectives)
        shown = ", ".join(f"{o.metric} {v:.2f}" for o, v in zip(self.space.objectives, values, strict=True))
        slo = "" if constraints.feasible else f"  SLO violated: {', '.join(constraints.violated())}"
        self._end(f"COMPLETE {shown}{slo}", best=values[0] if constraints.feasible else None)
        return values[0] if len(values) == 1 else values

    def _end(self, text: str, best: float | None = None) -> None:
        progress = self.runner.progress
        if progress is None:
            return
        if best is not None and len(self.space.objectives) == 1:
            better = max if self.space.objectives[0].direction == "maximize" else min
            progress.best = best if progress.best is None else better(progress.best, best)
        progress.end_trial(text)


def request_errors(bench: BenchResult | None, limit: int = 5) -> dict[str, int]:
    """The measured requests that failed, by error (the ``limit`` most common): why an error-rate SLO failed."""
    if bench is None:
        return {}
    counts = Counter(
        (r.error or f"HTTP {r.status}")[:300] for r in bench.records if not r.ok and not r.warmup
    )
    return dict(counts.most_common(limit))


def _json_float(v: float) -> float | None:
    return None if v != v or v in (float("inf"), float("-inf")) else float(v)
