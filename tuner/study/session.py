"""A study session: open or resume a study from :class:`StudyOptions`, run its trials, confirm, summarise.

The one way to run a study: ``python -m tuner.study`` (``tuner/study/__main__.py``) turns its command
line into options and calls :func:`run_study`; the nightly job and the benchmarks call :func:`open_study`
and the recorder directly with their own options.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import FrozenTrial, TrialState

from tuner.core import interrupts
from tuner.core.cli import ExitCode
from tuner.core.errors import ConfigError
from tuner.engines import get_engine
from tuner.launch.base import Launcher
from tuner.launch.factory import make_launcher
from tuner.loadgen.telemetry import describe_gpus, gpu_count
from tuner.objective.ranking import feasible_complete
from tuner.report.summary import write_summary
from tuner.search.guide import SearchGuide
from tuner.search.neighbours import configuration_key, configurations, whole_params
from tuner.search.startup import STARTUP, CoveringStart
from tuner.space import SearchSpace, load_space
from tuner.space.repair import hazard_choices
from tuner.space.sample import is_complete, seeds_to_enqueue, warm_start_points
from tuner.space.sections import PruningSpec
from tuner.space.targets import DockerTarget, SimulatorTarget
from tuner.store.attrs import StudyAttr, TrialAttr
from tuner.store.models import Provenance
from tuner.store.store import TunerStore
from tuner.store.urls import check_multiworker_safe, make_optuna_storage, setup_lock, storage_errors
from tuner.study.confirm import confirm_top, record_confirmation
from tuner.study.options import StudyOptions
from tuner.trial.measure import ConfigRunner, Outcome
from tuner.trial.objective import DuplicateProposal, TrialRunner
from tuner.trial.progress import Progress
from tuner.trial.pruning import build_pruner, check_windows

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class StudyContext:
    """What a running study holds on to (closed at the end)."""

    space: SearchSpace
    study: optuna.Study
    store: TunerStore
    launcher: Launcher
    out: Path
    worker: str
    gpu: dict[str, Any] | None = None  # NVML's description of this worker's GPUs, None without one


@contextlib.contextmanager
def interrupts_stop_the_trial() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt, so the running trial is recorded and its server stopped;
    a second one while that happens exits at once (the next run stops what was left running).

    SIGINT is set explicitly: a process started in the background by a non-interactive shell
    (``tuner ... &`` in a script, a CI step) inherits SIGINT *ignored*, Python then leaves it ignored, and
    a Ctrl-C or ``kill -INT`` would be lost while the study ran on to its end.
    """
    seen: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if seen:
            print("interrupted again: exiting now (the next run stops any server left running)",
                  file=sys.stderr, flush=True)  # fmt: skip
            os._exit(ExitCode.INTERRUPTED)
        seen.append(signum)
        interrupts.mark()  # if the raise below lands where Python ignores exceptions, the trial runner acts on it
        raise KeyboardInterrupt

    interrupts.clear()
    previous: dict[int, Any] = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        interrupts.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def open_study(opts: StudyOptions, space: SearchSpace) -> optuna.Study:
    """Create or load the study, set metric names, record the target, enqueue seed trials."""
    check_multiworker_safe(opts.storage, opts.workers)
    storage = make_optuna_storage(opts.storage, heartbeat_interval=opts.heartbeat)
    if opts.sampler == "random":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=opts.sampler_seed())
    else:
        sampler = optuna.samplers.TPESampler(seed=opts.sampler_seed(), n_startup_trials=STARTUP)
        if opts.cover_start:
            sampler = CoveringStart(
                sampler,
                n_startup=STARTUP,
                seed=opts.sampler_seed(),
                hazards=hazard_choices(space, get_engine(space.engine).repairs)
                if opts.careful_start
                else None,
                gaps=opts.careful_start,
            )
    pruning = space.pruning if opts.prune else PruningSpec(pruner="none")
    if opts.prune:
        check_windows(pruning, space.workload, source=opts.space)
    pruner = build_pruner(pruning, n_objectives=len(space.objectives), source=opts.space)
    study = optuna.create_study(
        study_name=opts.study or space.name,
        storage=storage,
        directions=[o.direction for o in space.objectives],
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.metric for o in space.objectives])
    study.set_user_attr(StudyAttr.SPACE_FILE, str(opts.space))
    study.set_user_attr(StudyAttr.SPACE, space.model_dump(mode="json"))
    study.set_user_attr(StudyAttr.ENGINE, f"{space.engine} {space.engine_version}")
    if opts.seed_trials or space.quality is not None:
        # Workers starting together would each see no seed enqueued yet and enqueue all of them.
        with setup_lock(opts.storage):
            seeded = {t.user_attrs.get(TrialAttr.SEED_NAME) for t in study.get_trials(deepcopy=False)}
            for seed in seeds_to_enqueue(space, all_seeds=opts.seed_trials):
                if seed.name not in seeded:
                    study.enqueue_trial(
                        dict(seed.params),
                        user_attrs={TrialAttr.SEED_NAME: seed.name, TrialAttr.SEED_NOTE: seed.note},
                        skip_if_exists=True,
                    )
            for name, params in warm_start_points(space) if opts.warm_start and opts.seed_trials else ():
                if name not in seeded:
                    study.enqueue_trial(params, user_attrs={TrialAttr.SEED_NAME: name}, skip_if_exists=True)
    return study


def fail_stale(study: optuna.Study) -> None:
    """Fail the RUNNING trials of workers whose heartbeat stopped (and run the retry callback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def requeue_interrupted(study: optuna.Study, space: SearchSpace, storage_url: str) -> list[int]:
    """Queue again, with the same parameters, each configuration a trial started but never finished
    (Ctrl-C, SIGTERM, a killed tuner or a lost worker: the trial is FAIL), unless the study has measured,
    is running or has queued that configuration since. Returns the interrupted trials' numbers.

    An interruption is not the configuration's fault, so it does not count against any retry budget;
    a configuration interrupted again is queued again on the next resume, until it is measured.
    """
    fail_stale(study)  # a dead worker's RUNNING trial becomes FAIL now
    with setup_lock(storage_url):  # two workers resuming together queue each configuration once
        trials = study.get_trials(deepcopy=False)
        covered = set(configurations(space, trials))
        out = []
        for t in trials:
            if t.state is not TrialState.FAIL or TrialAttr.DUPLICATE_OF in t.user_attrs:
                continue
            params = whole_params(t)
            if not is_complete(space, params):
                continue  # cut while the sampler chose: nothing was decided, let alone measured
            k = configuration_key(space, params)
            if k in covered:
                continue
            covered.add(k)
            attrs: dict[str, Any] = {
                str(a): t.user_attrs[a] for a in (TrialAttr.SEED_NAME, TrialAttr.REPAIR) if a in t.user_attrs
            }
            study.enqueue_trial(params, user_attrs={**attrs, TrialAttr.RERUN_OF: t.number})
            out.append(t.number)
    return out


def stop_at_total(total: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """A ``study.optimize`` callback: stop once finished plus running trials (other workers) reach ``total``.

    Optuna's ``MaxTrialsCallback`` counts finished trials only, so every worker still inside a trial
    when the total is reached adds one more (two workers: 9 of 8). Trials of dead workers are
    failed first (heartbeat check), so they do not count as running.
    """

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        fail_stale(study)
        counted = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        if len(counted) >= total:
            study.stop()

    return callback


EXHAUSTED_AFTER = 20  # consecutive duplicate proposals with no unmeasured neighbour: the space is done


def stop_when_exhausted(progress: Progress) -> Callable[[optuna.Study, FrozenTrial], None]:
    """A ``study.optimize`` callback: stop when the last proposals all repeated measured configurations
    and no unmeasured neighbour was left to queue (a small space measured completely)."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)[-EXHAUSTED_AFTER:]
        repeats = len(trials) == EXHAUSTED_AFTER and all(
            TrialAttr.DUPLICATE_OF in t.user_attrs for t in trials
        )
        if repeats and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            progress.note(f"the last {EXHAUSTED_AFTER} proposals repeated measured configurations and no "
                          "unmeasured neighbour is left: the space is measured out")  # fmt: skip
            study.stop()

    return callback


def provenance_for(ctx: StudyContext, trial_number: int, outcome: Outcome) -> Provenance:
    space = ctx.space
    target = space.target
    image = target.image if isinstance(target, DockerTarget) else None
    gpu = ctx.gpu or {}
    if isinstance(target, SimulatorTarget):
        gpu = {"gpu_name": f"simulated {target.gpu}"}
    mem = max((s.memory_total_mib for s in outcome.gpu_samples), default=None)
    return Provenance(
        study_name=ctx.study.study_name,
        trial_number=trial_number,
        engine=space.engine,
        engine_version=space.engine_version,
        image=image,
        image_digest=ctx.study.user_attrs.get(StudyAttr.IMAGE_DIGEST),
        gpu_name=gpu.get("gpu_name"),
        gpu_driver=gpu.get("gpu_driver"),
        gpu_memory_mib=gpu.get("gpu_memory_mib", mem),
        gpu_count=gpu.get("gpu_count") or len({s.gpu_index for s in outcome.gpu_samples}) or None,
        workload_fingerprint=space.workload.fingerprint(),
        extra={"worker": ctx.worker, "timings": outcome.timings, "gpu_indices": gpu.get("gpu_indices")},
    )


def make_recorder(ctx: StudyContext, artifacts: FileSystemArtifactStore):
    """The per-trial hook: request records, GPU samples and provenance to SQL; the log as an artifact."""

    def on_outcome(trial: optuna.Trial, outcome: Outcome) -> None:
        records = outcome.bench.records if outcome.bench is not None else ()
        ctx.store.write_trial(
            ctx.study.study_name,
            trial.number,
            requests=records,
            gpu_samples=outcome.gpu_samples,
            provenance=provenance_for(ctx, trial.number, outcome),
        )
        if outcome.log_path is not None and outcome.log_path.exists():
            artifact_id = upload_artifact(
                artifact_store=artifacts,
                file_path=str(outcome.log_path),
                study_or_trial=trial,
                mimetype="text/plain",
            )
            trial.set_user_attr(TrialAttr.SERVER_LOG_ARTIFACT, artifact_id)

    return on_outcome


def run_study(opts: StudyOptions) -> ExitCode:
    """Run (or resume) the study up to ``opts.trials`` finished trials; print progress and the summary."""
    space = load_space(opts.space)
    if opts.gpus is not None:
        gpu_ids = list(opts.gpus)
        space = space.model_copy(update={"launch": space.launch.model_copy(update={"gpu_ids": gpu_ids})})
    if opts.trials < 1:
        raise ConfigError("must be at least 1", source="--trials")
    if space.launch.gpu_ids and (count := gpu_count()) is not None and max(space.launch.gpu_ids) >= count:
        raise ConfigError(
            f"GPU {max(space.launch.gpu_ids)} does not exist: NVML sees {count} (0..{count - 1})",
            source="--gpus" if opts.gpus is not None else opts.space,
            field=None if opts.gpus is not None else "launch.gpu_ids",
        )
    out = Path(opts.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "artifacts").mkdir(parents=True, exist_ok=True)
    launcher = make_launcher(space, source=opts.space)
    study = open_study(opts, space)
    image_info = launcher.image_info
    if image_info is not None:  # which image (digest) and engine version produced the numbers
        study.set_user_attr(StudyAttr.IMAGE_DIGEST, image_info.image_id)
        study.set_user_attr(StudyAttr.IMAGE, image_info.to_attrs())
    rerun = requeue_interrupted(study, space, opts.storage)
    store = TunerStore(opts.storage)
    ctx = StudyContext(space, study, store, launcher, out, opts.worker, describe_gpus(space.launch.gpu_ids))
    reaped = launcher.reap_orphans(study.study_name, opts.worker)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = opts.trials - done
    progress = Progress(opts.trials, metric=space.objectives[0].metric, done=done)
    if reaped:
        progress.note(f"stopped {reaped} server(s) left running by an earlier, killed run of this worker")
    if rerun:
        progress.note(f"re-queued {len(rerun)} trial(s) interrupted before their measurement ended: "
                      + ", ".join(f"#{n}" for n in rerun))  # fmt: skip
    progress.note(
        f"study {study.study_name!r} on {opts.storage}: {done} finished trial(s), running up to {max(remaining, 0)} more"
    )
    config_runner = ConfigRunner(
        space, launcher, study=study.study_name, log_dir=out / "logs", worker=opts.worker, progress=progress
    )
    objective = TrialRunner(
        config_runner,
        on_outcome=make_recorder(ctx, FileSystemArtifactStore(str(out / "artifacts"))),
        prune_on_windows=opts.prune and len(space.objectives) == 1,
        guide=SearchGuide(space, budget=opts.trials) if opts.guide else None,
        stop_slower=opts.stop_slower,
    )
    interrupted = False
    try:
        if remaining > 0:
            with interrupts_stop_the_trial(), storage_errors(opts.storage, "running the study on"):
                # no n_trials: duplicate proposals end FAIL unmeasured and must not use up the total
                study.optimize(
                    objective,
                    timeout=opts.timeout_min * 60 if opts.timeout_min else None,
                    callbacks=[stop_at_total(opts.trials), stop_when_exhausted(progress)],
                    catch=(DuplicateProposal,),
                )
        if space.confirm is not None and feasible_complete(study):
            progress.note(
                f"confirming the top {space.confirm.top_k} with {space.confirm.repeats} fresh measurements each"
            )
            with interrupts_stop_the_trial():
                record_confirmation(study, confirm_top(study, space, config_runner, space.confirm))
    except KeyboardInterrupt:
        interrupted = True
        progress.note(
            "interrupted: the running trial was recorded as FAIL (interrupted) and its server stopped"
        )
    finally:
        launcher.close()
        store.close()
    feasible = write_summary(study, space, out, stream=sys.stdout, gpu_name=(ctx.gpu or {}).get("gpu_name"))
    if feasible:
        try:  # the dashboard shows the best command on the study page
            from tuner.report.dashboard import publish_best_note
        except ImportError as e:  # a GPU host carrying only the tuner's core needs
            print(f"note: no dashboard note ({e})", file=sys.stderr)
        else:
            publish_best_note(study)
    if interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.OK if feasible else ExitCode.NOTHING_FEASIBLE
