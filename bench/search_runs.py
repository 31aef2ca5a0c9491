"""The runs of ``bench/search_efficiency.py``: one study per method and seed through the study CLI's own
loop (``open_study``, ``ConfigRunner``, ``TrialRunner``), the peer-style grids, and the re-measurement of
the best configurations; each trial flattened to a :class:`TrialRow`.
"""

import json
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bench.search_landscapes import (
    ABLATIONS,
    GUIDE_PARTS,
    GUIDED,
    Landscape,
)
from tuner.launch.process import ProcessLauncher
from tuner.objective.ranking import is_feasible
from tuner.report.learning import is_infeasible
from tuner.search.guide import SearchGuide
from tuner.space.sections import PruningSpec
from tuner.store.attrs import TrialAttr
from tuner.study.confirm import Candidate, rank
from tuner.study.options import StudyOptions
from tuner.study.session import open_study
from tuner.trial.measure import ConfigRunner
from tuner.trial.objective import DuplicateProposal, TrialRunner

PRUNING = PruningSpec(pruner="wilcoxon", warmup_windows=2, p_threshold=0.1, tolerance=0.05)


# --- one run ----------------------------------------------------------------------------------------
@dataclass
class TrialRow:
    """One trial of one run, flattened for the CSV."""

    landscape: str
    method: str
    seed: int
    number: int
    state: str
    launched: bool
    value: float | None
    failure_kind: str
    pruned_slow: bool
    windows: int
    duration_s: float
    bench_s: float
    params: str
    origin: str = "sampler"  # what proposed it: seed, repair, local, neighbour, sampler
    p_crash: float | None = None  # the feasibility model's crash probability before launch


def _row(land: str, method: str, seed: int, t: FrozenTrial) -> TrialRow:
    timings = t.user_attrs.get("timings", {})
    dur = (
        (t.datetime_complete - t.datetime_start).total_seconds()
        if t.datetime_complete and t.datetime_start
        else 0.0
    )
    if t.state is TrialState.FAIL:  # a duplicate proposal, not measured (tuner.search.guide)
        return TrialRow(land, method, seed, t.number, "FAIL", False, None, "duplicate", False, 0, dur, 0.0,
                        json.dumps(t.params, sort_keys=True, default=str))  # fmt: skip
    return TrialRow(
        land, method, seed, t.number, t.state.name, not is_infeasible(t),
        t.values[0] if t.state is TrialState.COMPLETE and t.values else None,
        t.user_attrs.get("failure_kind", ""), t.user_attrs.get("pruned_by") == "slow",
        len(t.intermediate_values), dur, float(timings.get("bench_s", 0.0)),
        json.dumps(t.user_attrs.get("flags", t.params), sort_keys=True, default=str),
        _origin(t), t.user_attrs.get(TrialAttr.PREDICTED_CRASH),
    )  # fmt: skip


def _origin(t: FrozenTrial) -> str:
    for attr, name in ((TrialAttr.SEED_NAME, "seed"), (TrialAttr.REPAIR, "repair"), (TrialAttr.NEAR, "local"),
                       (TrialAttr.NEIGHBOUR_OF, "neighbour"), (TrialAttr.RERUN_OF, "rerun")):  # fmt: skip
        if attr in t.user_attrs:
            return name
    return "sampler"


def _stop_after_launched(budget: int, max_trials: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    def callback(study: optuna.Study, _: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if sum(not is_infeasible(t) for t in trials) >= budget or len(trials) >= max_trials:
            study.stop()

    return callback


def run_one(land: Landscape, method: str, seed: int, work: Path) -> list[TrialRow]:
    """One study of ``method`` with ``seed`` on ``land``; its trials as rows.

    Opened as the study CLI opens one (``tuner.study.session.open_study``): the tuner methods with TPE,
    the space's seed trials and, but for ``random``, its warm-start tiers; ``tuner`` also prunes.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pruning = (
        PRUNING.model_copy(update={"tolerance": 0.0}) if ABLATIONS.get(method) == "tolerance" else PRUNING
    )
    space = land.space().model_copy(update={"pruning": pruning})
    name = f"{land.name}-{method}-{seed}"
    opts = StudyOptions(
        space=f"<landscape {land.name}>",
        storage=f"sqlite:///{work}/{name}.db",
        study=name,
        seed=seed,
        sampler="tpe" if method in (*GUIDED, "tpe") else "random",
        prune=method in ("tuner", "tpe", *ABLATIONS) and ABLATIONS.get(method) != "careful",
        # random search gets the same seed trials (TPE needs one feasible trial to anchor on), so the
        # comparison is of the sampler; the warm-start tiers are the tuner's own
        seed_trials=method in (*GUIDED, "tpe", "random"),
        warm_start=method != "random",
        cover_start=method in GUIDED and ABLATIONS.get(method) != "cover",
        careful_start=ABLATIONS.get(method) != "careful",
    )
    study = open_study(opts, space)
    (work / "logs").mkdir(exist_ok=True)
    runner = ConfigRunner(space, ProcessLauncher(), study=name, log_dir=work / "logs")
    budget = land.budget(method)
    guide = (
        SearchGuide(space, budget=budget, **{part: ABLATIONS.get(method) != part for part in GUIDE_PARTS})
        if method in GUIDED
        else None
    )
    objective = TrialRunner(runner, prune_on_windows=opts.prune, guide=guide, stop_slower=method in GUIDED)
    cap = land.max_trials if budget == land.launched_budget else max(land.max_trials, 3 * budget)
    stop = _stop_after_launched(budget, cap)
    if opts.seed_trials:
        study.optimize(objective, n_trials=cap, callbacks=[stop], catch=(DuplicateProposal,))
    elif method == "grid-sglang":
        _run_tiers(study, objective, land, stop)
    else:
        _run_vllm(study, objective, land)
    return [
        _row(land.name, method, seed, t)
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or "duplicate_of" in t.user_attrs
    ]


def _enqueue_run(study: optuna.Study, objective: TrialRunner, params: dict[str, Any]) -> FrozenTrial:
    study.enqueue_trial(params)
    study.optimize(objective, n_trials=1)
    return study.get_trials(deepcopy=False)[-1]


def _best(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    ok = [t for t in trials if t.state is TrialState.COMPLETE and is_feasible(t)]
    return max(ok, key=lambda t: t.values[0], default=None)


def _run_tiers(
    study: optuna.Study, objective: TrialRunner, land: Landscape, stop: Callable[..., None]
) -> None:
    """Tier by tier: the product grid of a tier around the best so far; the tier's best carries on."""
    current = dict(land.grid_base)
    for tier in land.grid_sglang:
        done = []
        for point in tier:
            done.append(_enqueue_run(study, objective, {**current, **point}))
            if _launched(study) >= land.launched_budget:
                return
        if (best := _best(done)) is not None:
            current = {**current, **{k: v for k, v in best.params.items()}}


def _run_vllm(study: optuna.Study, objective: TrialRunner, land: Landscape) -> None:
    """auto_tune.sh: per sweep point, step the memory fraction down until the server starts."""
    for point in land.grid_vllm:
        for mem in land.memory_steps or [None]:
            params = {**land.grid_base, **point}
            if land.memory_param is not None:
                params[land.memory_param] = mem
            t = _enqueue_run(study, objective, params)
            if _launched(study) >= land.launched_budget:
                return
            # a start-up failure (memory) -> next lower fraction; anything else -> next point
            if t.user_attrs.get("failure_kind") not in ("not_enough_memory", "cuda_oom"):
                break


def _launched(study: optuna.Study) -> int:
    return sum(not is_infeasible(t) for t in study.get_trials(deepcopy=False) if t.state.is_finished())


def run_task(task: tuple[Landscape, str, int, str]) -> list[TrialRow]:
    land, method, seed, work = task
    t0 = time.perf_counter()
    rows = run_one(land, method, seed, Path(work))
    print(
        f"  {land.name} {method} seed {seed}: {len(rows)} trials in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return rows


# --- confirmation of the best configurations ------------------------------------------------------
def _measure_task(task: tuple[Landscape, str, int, str]) -> tuple[str, int, float | None, str]:
    land, flags_json, repeat, work = task
    space = land.space()
    runner = ConfigRunner(space, ProcessLauncher(), study=f"{land.name}-confirm", log_dir=Path(work) / "logs")
    flags = json.loads(flags_json)
    index = 1_000_000 + repeat * 1000 + zlib.crc32(flags_json.encode()) % 1000
    outcome = runner.measure(flags, run_index=index)
    if outcome.failure is not None or outcome.metrics is None:
        return flags_json, repeat, None, outcome.failure.kind.value if outcome.failure else "no metrics"
    return flags_json, repeat, float(outcome.metrics[space.objectives[0].metric]), ""


def confirm_configs(
    land: Landscape, configs: list[str], repeats: int, work: Path, jobs: int
) -> dict[str, Candidate]:
    """Re-measure each configuration ``repeats`` times (parallel for the simulator)."""
    tasks = [(land, c, r, str(work)) for r in range(repeats) for c in configs]
    results = map_tasks(_measure_task, tasks, jobs if land.parallel else 1)
    cands = {c: Candidate(i, json.loads(c), float("nan"), [None] * repeats) for i, c in enumerate(configs)}
    for c, r, value, why in results:
        cands[c].values[r] = value
        if why:
            cands[c].failures.append(why)
    rank(list(cands.values()), maximize=True, confidence=0.95)
    return cands


def map_tasks(fn: Callable[[Any], Any], tasks: list[Any], jobs: int) -> list[Any]:
    if jobs <= 1:
        return [fn(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(fn, tasks))
