"""The Optuna objective: one trial = sample parameters, measure them, record the outcome on the trial.

:class:`TrialRunner` is what ``optuna.Study.optimize`` calls. A failed server becomes a PRUNED trial
with the ``crash`` constraint violated and the failure kind and evidence in user attributes, so TPE
learns to avoid it (a FAIL trial would be invisible to it: shared/facts/optuna.md).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import optuna

from tuner.core.errors import TunerError
from tuner.core.failures import Failure, FailureKind, Phase
from tuner.loadgen.metrics import BenchResult
from tuner.objective import constraints_for_crash, constraints_for_metrics, objective_values
from tuner.objective.quality import QualityVerdict, compare
from tuner.objective.ranking import feasible_complete
from tuner.search.guide import SearchGuide
from tuner.space.sample import params_to_flags, sample_params
from tuner.space.workload import max_output_len
from tuner.store.attrs import TrialAttr
from tuner.trial.measure import ConfigRunner, Outcome
from tuner.trial.pruning import window_should_stop

THROUGHPUTS = ("output_throughput", "request_throughput", "total_token_throughput")
SLOWER_BY = 1.25  # a benchmark this much longer than the best trial's stops: it cannot win


def shorten(text: str, width: int) -> str:
    """``text`` cut at a word boundary with an ellipsis when longer than ``width``.

    >>> shorten("GPU 0 has a total capacity of 31.40 GiB", 25)
    'GPU 0 has a total…'
    """
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:") + "…"


class DuplicateProposal(Exception):
    """The sampler proposed a configuration the study already has: the trial ends FAIL, unmeasured.

    ``study.optimize`` is called with ``catch=(DuplicateProposal,)``; the trial does not count towards
    the study's total and the sampler does not learn from it (Optuna ignores FAIL trials).
    """

    def __init__(self, number: int, duplicate_of: int) -> None:
        super().__init__(f"trial {number} repeats trial {duplicate_of}'s configuration: not measured")


class _OptimizeLogFilter(logging.Filter):
    """Optuna logs an objective's exception with its traceback: a duplicate proposal was already said
    by the progress display, and our own errors end the study with a message of their own."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, DuplicateProposal | KeyboardInterrupt | optuna.exceptions.StorageInternalError):
            return False  # the tuner says it in its own words (one line; storage: exit 3)
        if record.getMessage().endswith("failed with value None."):
            return False  # follows every interrupted or duplicate trial; the progress line says more
        if isinstance(error, TunerError):
            record.exc_info = None
        return True


_FILTER = _OptimizeLogFilter()


def quiet_optuna_logs() -> None:
    """Optuna's warnings only, and no traceback for what the tuner reports itself (the CLIs call this)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # a LaunchError mid-trial (Docker daemon gone) fails the trial and ends the study with exit 4
    logging.getLogger("optuna.study._optimize").addFilter(_FILTER)


class TrialRunner:
    """The Optuna objective: sample, screen, measure, and record the outcome on the trial.

    With a :class:`~tuner.search.guide.SearchGuide` (the study's default) duplicates are replaced,
    learned constraints prune before launch and crashes queue their repaired neighbour.
    """

    def __init__(
        self,
        config_runner: ConfigRunner,
        *,
        on_outcome: Callable[[optuna.Trial, Outcome], None] | None = None,
        prune_on_windows: bool = False,
        guide: SearchGuide | None = None,
        stop_slower: bool = False,
    ) -> None:
        self.runner = config_runner
        self.space = config_runner.space
        self.on_outcome = on_outcome
        self.prune_on_windows = prune_on_windows
        self.guide = guide
        self.stop_slower = stop_slower

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        params = sample_params(self.space, trial)
        flags = dict(params_to_flags(self.space, params))
        trial.set_user_attr(TrialAttr.WORKER, self.runner.worker)  # known even if this worker dies mid-trial
        progress = self.runner.progress
        screened = self.guide.screen(trial, params) if self.guide is not None else None
        if screened is not None and screened.duplicate_of is not None:
            trial.set_user_attr(TrialAttr.DUPLICATE_OF, screened.duplicate_of)
            if progress is not None and screened.queued:
                progress.note(f"           trial {trial.number} ({_label(trial)}): trial "
                              f"{screened.duplicate_of} has measured this configuration; not measured again")  # fmt: skip
            elif progress is not None:
                instead = (
                    "a neighbour is queued instead" if screened.neighbour else "no unmeasured neighbour left"
                )
                progress.note(f"           trial {trial.number}: the sampler repeated trial "
                              f"{screened.duplicate_of}'s configuration; not measured, {instead}")  # fmt: skip
            raise DuplicateProposal(trial.number, screened.duplicate_of)
        if self.guide is not None and self.guide.last_crash_probability is not None:
            # recorded on launched proposals too: how well the model predicts is measurable
            trial.set_user_attr(TrialAttr.PREDICTED_CRASH, round(self.guide.last_crash_probability, 4))
        if progress is not None:
            progress.start_trial(trial.number, _label(trial))
        if screened is not None:  # a learned constraint or the feasibility model: no server started
            if screened.learned is not None:
                trial.set_user_attr(TrialAttr.LEARNED, screened.learned.describe())
            failure = Failure(FailureKind.INFEASIBLE, Phase.PRECHECK, detail=screened.reason())
            return self.record(trial, Outcome(flags, [], None, failure=failure))
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
                deadline_s=self._deadline(trial) if self.stop_slower else None,
            )
        except KeyboardInterrupt:
            trial.set_user_attr(TrialAttr.INTERRUPTED, True)
            raise
        return self.record(trial, outcome)

    def _deadline(self, trial: optuna.Trial) -> float | None:
        """How long this trial's benchmark may run before it provably cannot come within ``SLOWER_BY``
        of the best trial (``None``: no such bound, measured to the end).

        * ``request_throughput``: every trial serves the same number of requests, so one still running
          after ``SLOWER_BY`` times the best trial's duration is slower by more than that;
        * ``output_throughput``: the same prompts ask for the same ``max_tokens``; a trial can produce
          at most their sum, so after ``SLOWER_BY`` x that sum / the best throughput it cannot reach
          the best / ``SLOWER_BY``, whether or not the server stops at an end-of-sequence token
          (with ``ignore_eos`` the sum is what the best trial produced: its duration);
        * ``total_token_throughput``: as the former, with exact lengths (``ignore_eos``) only.

        Only for one maximised throughput objective over a fixed number of requests.
        """
        objectives = self.space.objectives
        workload = self.space.workload
        metric = objectives[0].metric
        if (
            len(objectives) != 1
            or objectives[0].direction != "maximize"
            or metric not in THROUGHPUTS
            or workload.num_requests is None
            or self.space.capacity is not None
        ):
            return None
        best = max(feasible_complete(trial.study), key=lambda t: t.values[0], default=None)
        duration = (best.user_attrs.get(TrialAttr.METRICS) or {}).get("duration_s") if best else None
        if best is None or not duration:
            return None
        if metric == "request_throughput" or workload.ignore_eos:
            return SLOWER_BY * float(duration)
        most = max_output_len(workload)
        if metric != "output_throughput" or most is None or best.values[0] <= 0:
            return None
        return SLOWER_BY * workload.num_requests * most / best.values[0]

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
            self._check_lengths(trial, outcome.metrics.get("prompt_len_ratio"))
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
            if self.space.quality is not None:
                trial.set_constraint("quality", 0.0)  # every trial carries the same constraint keys
            self._end(f"PRUNED {failure.kind.value}: {shorten(failure.summary(), 160)}")
            if self.guide is not None and failure.phase is not Phase.PRECHECK:
                repair = self.guide.after_crash(trial, trial.params, failure)
                if repair is not None and self.runner.progress is not None:
                    self.runner.progress.note(f"           repair queued: {repair.describe()}")
            raise optuna.TrialPruned(f"{failure.kind.value}: {failure.summary()}")
        assert outcome.metrics is not None
        constraints = constraints_for_metrics(outcome.metrics, self.space.slos)
        for key, value in constraints.values.items():
            trial.set_constraint(key, value)
        verdict = self._quality(trial, outcome.probe_answers)
        if outcome.stopped_early:
            self._queue_local(trial)
            trial.set_user_attr(TrialAttr.PRUNED_BY, outcome.stop_reason)
            self._end(f"PRUNED ({outcome.stop_reason}: cannot beat the trials before it)")
            raise optuna.TrialPruned(
                f"stopped early ({outcome.stop_reason}): clearly worse than earlier trials"
            )
        edge = self.guide.edge_probe(trial) if self.guide is not None else None
        if edge is not None and self.runner.progress is not None:
            self.runner.progress.note(
                f"           edge probe queued: {edge[0]} {edge[1]} -> {edge[2]} (towards the crash)"
            )
        values = objective_values(outcome.metrics, self.space.objectives)
        shown = ", ".join(f"{o.metric} {v:.2f}" for o, v in zip(self.space.objectives, values, strict=True))
        slo = "" if constraints.feasible else f"  SLO violated: {', '.join(constraints.violated())}"
        gate = self.space.quality
        changed = (
            verdict if verdict is not None and gate is not None and verdict.constraint(gate) > 0 else None
        )
        if changed is not None:
            slo += f"  QUALITY: {changed.describe()}"
        feasible = constraints.feasible and changed is None
        self._queue_local(trial, values[0] if feasible else None)
        self._end(f"COMPLETE {shown}{slo}", best=values[0] if feasible else None)
        return values[0] if len(values) == 1 else values

    def _quality(self, trial: optuna.Trial, answers: list[str | None] | None) -> QualityVerdict | None:
        """With ``quality:`` in the space: this trial's answers against the reference seed's, as the
        ``quality`` constraint (0 while there is no reference yet); the verdict, or None."""
        spec = self.space.quality
        if spec is None:
            return None
        verdict = None
        if answers is not None:
            trial.set_user_attr(TrialAttr.PROBE_ANSWERS, answers)
            reference = answers if trial.user_attrs.get(TrialAttr.SEED_NAME) == spec.reference else next(
                (t.user_attrs[TrialAttr.PROBE_ANSWERS] for t in trial.study.get_trials(deepcopy=False)
                 if t.user_attrs.get(TrialAttr.SEED_NAME) == spec.reference and TrialAttr.PROBE_ANSWERS in t.user_attrs),
                None,
            )  # fmt: skip
            if reference is not None:
                verdict = compare(reference, answers)
                trial.set_user_attr(TrialAttr.QUALITY, verdict.to_attrs())
        trial.set_constraint("quality", verdict.constraint(spec) if verdict is not None else 0.0)
        return verdict

    def _check_lengths(self, trial: optuna.Trial, ratio: float | None) -> None:
        """Record (and say once a study) that the server counts the prompts' tokens otherwise than meant."""
        if ratio is None or ratio != ratio or abs(ratio - 1) <= LENGTH_TOLERANCE:
            return
        trial.set_user_attr(TrialAttr.PROMPT_LENGTHS, round(ratio, 3))
        earlier = any(TrialAttr.PROMPT_LENGTHS in t.user_attrs for t in trial.study.get_trials(deepcopy=False)
                      if t.number != trial.number)  # fmt: skip
        if not earlier and self.runner.progress is not None:
            fix = "" if self.space.workload.tokenizer else "; set workload.tokenizer for exact lengths"
            self.runner.progress.note(
                f"           the server counted {ratio:.2f}x the intended prompt tokens (median){fix}"
            )

    def _queue_local(self, trial: optuna.Trial, value: float | None = None) -> None:
        """After a trial that ran (``value``: its own, when feasible): the guide's local move from a top
        trial, when it is its turn."""
        if self.guide is None or len(self.space.objectives) != 1:
            return
        sign = 1 if self.space.objectives[0].direction == "maximize" else -1
        ranked = sorted(feasible_complete(trial.study), key=lambda t: -sign * t.values[0])
        near = self.guide.after_run(trial, ranked, value)
        if near is not None and self.runner.progress is not None:
            self.runner.progress.note(f"           local move queued: a neighbour of #{near}")

    def _end(self, text: str, best: float | None = None) -> None:
        progress = self.runner.progress
        if progress is None:
            return
        if best is not None and len(self.space.objectives) == 1:
            better = max if self.space.objectives[0].direction == "maximize" else min
            progress.best = best if progress.best is None else better(progress.best, best)
        progress.end_trial(text)


LENGTH_TOLERANCE = 0.1  # server-counted prompt tokens this far off the intended length are reported


def _label(trial: optuna.Trial) -> str:
    """What put this configuration in the queue: a seed's name, a repair, a duplicate's neighbour."""
    attrs = trial.user_attrs
    if TrialAttr.SEED_NAME in attrs:
        return str(attrs[TrialAttr.SEED_NAME])
    if isinstance(repair := attrs.get(TrialAttr.REPAIR), dict):
        return f"repair of #{repair.get('of')}"
    if TrialAttr.NEAR in attrs:
        return f"near #{attrs[TrialAttr.NEAR]}"
    if TrialAttr.NEIGHBOUR_OF in attrs:
        return f"neighbour of #{attrs[TrialAttr.NEIGHBOUR_OF]}"
    if TrialAttr.RERUN_OF in attrs:
        return f"re-run of #{attrs[TrialAttr.RERUN_OF]}"
    return ""


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
