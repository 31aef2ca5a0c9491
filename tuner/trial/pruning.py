"""Early stopping of clearly worse trials: the pruner a space file asks for, and what it is fed.

The benchmark closes a *window* every ``workload.window_requests`` measured requests; after each
window the runner reports one intermediate value to the trial and asks the pruner whether to stop.
Which value depends on the pruner:

* ``wilcoxon`` (the default) — :class:`optuna.pruners.WilcoxonPruner` gets the throughput of each
  window on its own, with the window index as the step. Every trial replays the same prompt stream
  (the workload's ``seed``), so window *k* of one trial and window *k* of the best trial served the
  same prompts: they are paired instances, which is exactly what the signed-rank test is made for.
  It prunes only when the trial is worse than the *best* trial on (nearly) every window so far, so
  it never stops a trial merely for being below average, and it needs no start-up trials: from the
  second complete trial on it can prune. A one-sided exact signed-rank test over *n* paired windows
  cannot go below ``2**-n``, so with ``p_threshold`` 0.1 a trial is pruned after 4 windows at the
  earliest (:func:`earliest_prune_window`). The paired windows share one server, so they say nothing
  about how much the *next* server start of the same configuration would differ: ``tolerance`` (5 % by
  default) makes the test blind to differences within it (:class:`TolerantWilcoxonPruner`), so a
  configuration as good as a best trial that drew high is measured to the end rather than stopped.
* ``median`` — :class:`optuna.pruners.MedianPruner` on the *running* value (all measured requests so
  far): prunes a trial below the median of earlier complete trials at the same window. Aggressive
  (half of all trials are below the median), unpaired, needs ``n_startup_trials`` complete trials.
* ``patient`` — :class:`optuna.pruners.PatientPruner` around the median pruner: only prunes after the
  running value stopped improving for ``patience`` windows. Made for learning curves; a serving
  benchmark's running throughput has no upward trend, so it mostly delays the median's decisions.
* ``none`` — never prune.

``bench/search_efficiency.py`` measures the time each saves and the final quality it keeps
(``docs/search.md``). Pruning needs a single objective: Optuna refuses ``trial.report`` otherwise.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable

import optuna

from tuner.core.errors import ConfigError
from tuner.loadgen.metrics import BenchResult
from tuner.space.sections import PrunerName, PruningSpec
from tuner.space.workload import WorkloadSpec

ShouldStop = Callable[[int, BenchResult], bool]


def earliest_prune_window(spec: PruningSpec) -> int | None:
    """How many windows a trial must have measured before ``spec``'s pruner can stop it.

    ``None`` for ``none``. Wilcoxon: the exact one-sided p-value of ``n`` all-worse paired windows is
    ``2**-n``, so ``n`` must reach ``log2(1 / p_threshold)``.

    >>> earliest_prune_window(PruningSpec())
    4
    """
    if spec.pruner == "none":
        return None
    if spec.pruner == "wilcoxon":
        return max(2, spec.warmup_windows, math.ceil(math.log2(1.0 / spec.p_threshold)))
    # Median: steps are 0-based and a step counts once it is > n_warmup_steps - 1
    return max(1, spec.warmup_windows + 1) + (spec.patience if spec.pruner == "patient" else 0)


class TolerantWilcoxonPruner(optuna.pruners.WilcoxonPruner):
    """Optuna's Wilcoxon pruner that counts a window as worse only when it is worse than the best trial's
    by more than ``tolerance`` (relative): a trial is stopped when it is *clearly* worse than the best one,
    not when it is as good and its server drew a few percent lower than the best's.

    The test is Optuna's, run on the trial's values moved by the tolerance (``v / (1 - tolerance)`` when
    maximising, ``v / (1 + tolerance)`` when minimising); the trial's stored values are not touched.
    Values <= 0 (no relative tolerance exists for them) are tested as they are.
    """

    def __init__(self, *, p_threshold: float, n_startup_steps: int, tolerance: float) -> None:
        super().__init__(p_threshold=p_threshold, n_startup_steps=n_startup_steps)
        self.tolerance = tolerance
        # Optuna imports scipy.stats at the first test, which runs inside a measured window (the
        # benchmark asks after each one): ~1 s of a blocked client in one trial's measurement. Now.
        import scipy.stats  # noqa: F401

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        values = trial.intermediate_values
        if self.tolerance > 0 and values and all(v > 0 for v in values.values()):
            maximise = study.direction == optuna.study.StudyDirection.MAXIMIZE
            scale = 1.0 / (1.0 - self.tolerance) if maximise else 1.0 / (1.0 + self.tolerance)
            trial = copy.copy(trial)
            trial.intermediate_values = {step: v * scale for step, v in values.items()}
        return super().prune(study, trial)


def build_pruner(spec: PruningSpec, *, n_objectives: int, source: str = "") -> optuna.pruners.BasePruner:
    """The Optuna pruner for ``spec``. Raises ConfigError for pruning a multi-objective study.

    >>> type(build_pruner(PruningSpec(), n_objectives=1)).__name__
    'TolerantWilcoxonPruner'
    """
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if n_objectives != 1:
        raise ConfigError(
            f"pruner {spec.pruner!r} needs a single objective, the space has {n_objectives}: "
            "set `pruning: {pruner: none}` or keep one objective",
            source=source,
            field="pruning.pruner",
        )
    if spec.pruner == "wilcoxon":
        with warnings.catch_warnings():  # "experimental" in Optuna 5.0; its behaviour is what we test
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return TolerantWilcoxonPruner(
                p_threshold=spec.p_threshold, n_startup_steps=spec.warmup_windows, tolerance=spec.tolerance
            )
    median = optuna.pruners.MedianPruner(
        n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.warmup_windows
    )
    if spec.pruner == "median":
        return median
    return optuna.pruners.PatientPruner(median, patience=spec.patience)


def check_windows(spec: PruningSpec, workload: WorkloadSpec, *, source: str = "") -> None:
    """Raise ConfigError when the workload has too few windows for the pruner ever to stop a trial.

    A duration-bound workload is not checked (its window count is unknown in advance).
    """
    first = earliest_prune_window(spec)
    if first is None or workload.num_requests is None:
        return
    windows = workload.num_requests // workload.window_requests
    # a decision after the last window saves nothing: at least one window must remain
    if windows <= first:
        raise ConfigError(
            f"pruner {spec.pruner!r} decides after {first} windows at the earliest, but "
            f"num_requests {workload.num_requests} / window_requests {workload.window_requests} gives "
            f"only {windows}: lower workload.window_requests (e.g. to {max(1, workload.num_requests // (first + 4))}) "
            "or set `pruning: {pruner: none}`",
            source=source,
            field="workload.window_requests",
        )


def intermediate_value(spec: PruningSpec, metric: str, partial: BenchResult) -> float | None:
    """The value to report after a window closes: the last window's, or the running one."""
    if spec.reports == "window":
        if not partial.windows:
            return None
        value = partial.windows[-1].get(metric)
    else:
        value = partial.flat().get(metric)
    if value is None or not math.isfinite(value):
        return None  # Optuna's pruners cannot rank inf/NaN: report nothing for this window
    return float(value)


def window_should_stop(trial: optuna.Trial, spec: PruningSpec, metric: str) -> ShouldStop:
    """The benchmark's ``should_stop`` hook: report the window's value, ask the pruner.

    For ``TrialRunner``: ``should_stop = window_should_stop(trial, space.pruning, objectives[0].metric)``,
    passed to ``ConfigRunner.measure``. The benchmark calls it as ``should_stop(window_index, partial)``
    with ``partial`` a :class:`BenchResult` over the requests measured so far.
    """

    def should_stop(window: int, partial: BenchResult) -> bool:
        value = intermediate_value(spec, metric, partial)
        if value is None:
            return False
        trial.report(value, window)
        return trial.should_prune()

    return should_stop


__all__ = [
    "PrunerName",
    "PruningSpec",
    "TolerantWilcoxonPruner",
    "build_pruner",
    "check_windows",
    "earliest_prune_window",
    "intermediate_value",
    "window_should_stop",
]
