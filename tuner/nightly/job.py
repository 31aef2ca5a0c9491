"""The nightly retune job: lock, re-measure the deployed configuration, search, validate, decide.

    lock -> load space/study -> which configuration is deployed? -> does tonight's engine accept it?
      -> re-measure it (repeats) -> regression vs its deployment-time repeats
      -> warm start (deployed + best known) -> new trials within the time budget
      -> validate the best candidates interleaved with the deployed one (A/B/A/B)
      -> promote only a significant, SLO-clean improvement -> deployed file, history row, report

The result carries the exit code a scheduler alerts on (see :mod:`tuner.nightly` and docs/nightly.md).
"""

from __future__ import annotations

import datetime as dt
import sys
import traceback
import zlib
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore

from tuner.core.cli import ExitCode, exit_code_for
from tuner.core.errors import TunerError
from tuner.core.slug import slug
from tuner.launch.factory import make_launcher
from tuner.launch.simulator import simulator_program
from tuner.nightly.compat import rejection
from tuner.nightly.decide import promotion_verdict, regression_verdict
from tuner.nightly.deployed import DeployedConfig, params_from_flags, write_deployed
from tuner.nightly.history import deployed_path, find_reference, record_deployment, resolve_deployed
from tuner.nightly.lock import NightlyLock
from tuner.nightly.model import NIGHTLY_WORKER, NightlyOptions, NightlyRun
from tuner.nightly.remeasure import Remeasurer, paired_values, values
from tuner.nightly.search import WarmStart, candidates, enqueue, known_top, run_search, tonights_trials
from tuner.search.guide import SearchGuide
from tuner.space import SearchSpace, load_space
from tuner.space.targets import DockerTarget, SimulatorTarget
from tuner.store.attrs import TrialAttr
from tuner.store.store import TunerStore
from tuner.study.options import StudyOptions
from tuner.study.session import StudyContext, interrupts_stop_the_trial, make_recorder, open_study
from tuner.trial.measure import ConfigRunner
from tuner.trial.objective import TrialRunner
from tuner.trial.progress import Progress


class NightlyConfigRunner(ConfigRunner):
    """A ConfigRunner whose simulator seeds differ every night (as real nights do).

    The study's own runner seeds the simulator by trial number; re-measurements are numbered
    from 0 each night, so the night's stamp is mixed in.
    """

    def __init__(self, *args: Any, salt: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.salt = salt

    def program(self, run_index: int) -> list[str] | None:
        target = self.space.target
        if isinstance(target, SimulatorTarget) and target.seed is None:
            seed = zlib.crc32(f"{self.study}:{self.salt}:{run_index}".encode())
            return simulator_program(self.space, target, seed)
        return super().program(run_index)


def run_nightly(opts: NightlyOptions, *, stamp: str | None = None) -> NightlyRun:
    """One nightly run under the lock. Raises :class:`tuner.nightly.lock.LockHeld` if another runs.

    Errors after the lock is taken are caught: the run is reported as failed (its error's exit code,
    ``tuner.core.cli.exit_code_for``; 1 for anything else) and the report says why.
    """
    stamp = stamp or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run = NightlyRun(stamp, opts)
    space = load_space(opts.space)  # a broken space file fails before the lock: nothing to report yet
    run.space = space
    run.study = opts.study or space.name
    lock_path = opts.lock or opts.out / "nightly" / f"{slug(run.study)}.lock"
    with NightlyLock(lock_path) as lock:
        if lock.recovered:
            who = ", ".join(f"{k} {v}" for k, v in lock.recovered.items())
            run.notes.append(f"took over the lock left by a run that did not finish ({who})")
        try:
            with interrupts_stop_the_trial():
                _run(run, space)
        except KeyboardInterrupt:
            run.error = "interrupted (SIGINT/SIGTERM); the deployed configuration was not changed"
            run.decision, run.exit_code = "interrupted", ExitCode.INTERRUPTED
        except Exception as e:  # the job must always leave a report a person can read
            # our own errors say what to do and carry their exit code; anything else needs its traceback
            detail = "" if isinstance(e, TunerError) else f"\n\n{traceback.format_exc()}"
            run.error = f"{type(e).__name__}: {e}{detail}"
            code = exit_code_for(e) if isinstance(e, TunerError) else ExitCode.FAILED
            run.decision, run.exit_code = "failed", code
        finally:
            from tuner.nightly.report import write_report

            run.report_path = write_report(run, opts.out / "nightly")
    return run


def _run(run: NightlyRun, space: SearchSpace) -> None:
    opts = run.options
    objective = space.objectives[0]
    maximize = objective.direction == "maximize"
    if len(space.objectives) > 1:
        run.notes.append(
            f"the space has {len(space.objectives)} objectives; the nightly decisions use the first, "
            f"{objective.metric}, and the SLOs"
        )
    study_opts = StudyOptions(
        space=str(opts.space), storage=opts.storage, study=run.study, seed=opts.sampler_seed, heartbeat=60,
        worker=NIGHTLY_WORKER, out=opts.out,
    )  # fmt: skip
    study = open_study(study_opts, space)
    store = TunerStore(opts.storage)
    launcher = make_launcher(space, source=str(opts.space))
    try:
        reaped = launcher.reap_orphans(run.study, NIGHTLY_WORKER)
        if reaped:
            run.notes.append(f"stopped {reaped} server(s) an earlier, killed nightly run left running")
        image = launcher.image_info  # set by the Docker image check (SGLang images)
        if isinstance(space.target, DockerTarget) and image is None:
            run.notes.append(f"no image flag check for {space.engine} images: flags checked against the "
                             f"{space.engine} {space.engine_version} flag table only")  # fmt: skip
        resolve_deployed(run, space, study, store)
        assert run.deployed is not None
        if (why := rejection(space, run.deployed.flags, image)) is not None:
            run.deployed_rejected = why
            run.notes.append(f"the deployed configuration cannot run on tonight's engine: {why}")
            run.decision, run.exit_code = "deployed configuration rejected", ExitCode.DEPLOYED_FAILED
            return
        logs = opts.out / "logs" / f"nightly-{run.stamp}"
        logs.mkdir(parents=True, exist_ok=True)
        measurer = Remeasurer(
            NightlyConfigRunner(space, launcher, study=run.study, log_dir=logs, worker=NIGHTLY_WORKER,
                                salt=run.stamp),
            space, echo=_echo,
        )  # fmt: skip

        # 1. the deployed configuration, again, several times
        find_reference(run, space, store)
        run.repeats = measurer.repeats("deployed", run.deployed.flags, opts.repeats)
        if run.deployed_failures:
            run.decision, run.exit_code = "deployed configuration failed", ExitCode.DEPLOYED_FAILED
            return
        fresh = values(run.repeats)
        if run.reference is not None and not opts.accept_current:
            run.regression = regression_verdict(
                run.reference, fresh, maximize=maximize, margin=opts.regression_margin,
                confidence=opts.confidence, resamples=opts.resamples, seed=opts.seed,
            )  # fmt: skip
        else:
            why = "re-baselined on request (--accept-current)" if opts.accept_current else run.deployed_origin
            record_deployment(
                run,
                space,
                store,
                run.deployed,
                run.repeats,
                reason=f"nightly {run.stamp}: reference repeats; {why}",
            )

        # 2. warm start and the time-boxed search
        deployed_params = run.deployed.params or params_from_flags(space, run.deployed.flags)
        if deployed_params:
            run.warm_start.append(WarmStart("deployed", dict(deployed_params), dict(run.deployed.flags)))
        else:
            run.notes.append(
                "the deployed flags are not expressible as this space's parameters: not enqueued"
            )
        top, dropped = known_top(study, space, n=opts.known_top, exclude=run.deployed.flags, image=image)
        run.warm_start += top
        run.notes += dropped
        if opts.max_trials > 0:
            enqueue(study, run.warm_start, run.stamp)
            ctx = StudyContext(space, study, store, launcher, opts.out, NIGHTLY_WORKER)
            (opts.out / "logs").mkdir(parents=True, exist_ok=True)
            progress = Progress(opts.max_trials, metric=objective.metric)
            runner = TrialRunner(
                ConfigRunner(
                    space,
                    launcher,
                    study=run.study,
                    log_dir=opts.out / "logs",
                    worker=NIGHTLY_WORKER,
                    progress=progress,
                ),
                on_outcome=make_recorder(ctx, FileSystemArtifactStore(_artifacts(opts.out))),
                guide=SearchGuide(space),  # the study's learned constraints and repairs, tonight too
                stop_slower=True,
            )
            run.search_seconds = run_search(
                study, runner, stamp=run.stamp, max_trials=opts.max_trials, budget_s=opts.budget_s
            )
        run.tonight = tonights_trials(study, run.stamp)

        # 3. validation, interleaved with the deployed configuration
        _validate(run, space, study, measurer, maximize)

        # 4. decision
        if run.deployed_failures:
            run.decision, run.exit_code = "deployed configuration failed", ExitCode.DEPLOYED_FAILED
            return
        if run.promoted is not None:
            _promote(run, space, store)
        if run.regression is not None and run.regression.decision == "regression":
            run.decision = "regression" + (f" (and promoted {run.promoted})" if run.promoted else "")
            run.exit_code = ExitCode.REGRESSION
        elif run.promoted is not None:
            run.decision, run.exit_code = f"promoted {run.promoted}", ExitCode.PROMOTED
        else:
            run.decision, run.exit_code = "kept", ExitCode.OK
    finally:
        launcher.close()
        store.close()


def _echo(text: str) -> None:
    """Progress lines on stderr (the cron log / journal), one per measurement."""
    print(f"nightly: {text}", file=sys.stderr, flush=True)


def _artifacts(out: Path) -> str:
    path = out / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _validate(
    run: NightlyRun, space: SearchSpace, study: optuna.Study, measurer: Remeasurer, maximize: bool
) -> None:
    opts = run.options
    assert run.deployed is not None
    fresh_mean = sum(values(run.repeats)) / len(values(run.repeats))
    picked = candidates(study, space, run.stamp, deployed_flags=run.deployed.flags, n=opts.candidates)
    promising = [t for t in picked if (t.values[0] > fresh_mean if maximize else t.values[0] < fresh_mean)]
    for t in picked:
        if t not in promising:
            run.notes.append(f"candidate #{t.number} ({t.values[0]:.3f}) did not beat the deployed mean "
                             f"({fresh_mean:.3f}) tonight: not validated")  # fmt: skip
    if not promising:
        if not picked:
            run.notes.append("no feasible configuration other than the deployed one was measured tonight")
        return
    run.candidate_trials = {f"#{t.number}": t for t in promising}
    configs: dict[str, dict[str, Any]] = {"deployed": dict(run.deployed.flags)}
    configs.update(
        {label: dict(t.user_attrs.get(TrialAttr.FLAGS, {})) for label, t in run.candidate_trials.items()}
    )
    run.validation = measurer.interleaved(configs, opts.rounds)
    # Bonferroni: several candidates tested against one deployed configuration
    confidence = 1.0 - (1.0 - opts.confidence) / len(promising)
    best: tuple[float, str] | None = None
    for label in run.candidate_trials:
        base, cand = paired_values(run.validation["deployed"], run.validation[label])
        ms = run.validation[label]
        verdict = promotion_verdict(
            base, cand, candidate_slo_ok=[m.slo_ok for m in ms if m.ok],
            candidate_failures=sum(1 for m in ms if not m.ok), maximize=maximize, margin=opts.margin,
            confidence=confidence, resamples=opts.resamples, seed=opts.seed,
        )  # fmt: skip
        run.verdicts[label] = verdict
        if (
            verdict.decision == "promote"
            and verdict.ci is not None
            and (best is None or verdict.ci.low > best[0])
        ):
            best = (verdict.ci.low, label)
    run.promoted = best[1] if best else None


def _promote(run: NightlyRun, space: SearchSpace, store: TunerStore) -> None:
    assert run.promoted is not None
    trial = run.candidate_trials[run.promoted]
    verdict = run.verdicts[run.promoted]
    assert verdict.ci is not None
    reason = f"nightly {run.stamp}: promoted trial {run.promoted}, {space.objectives[0].metric} ratio {verdict.ci.describe()}"
    config = DeployedConfig(
        dict(trial.user_attrs.get(TrialAttr.FLAGS, {})), dict(trial.params), run.study, trial.number, reason
    )
    record_deployment(run, space, store, config, run.validation[run.promoted], reason=reason, ci=verdict)
    write_deployed(deployed_path(run), space, config, header=f"promoted by nightly run {run.stamp}")
    run.notes.append(
        f"promoted {run.promoted}: {deployed_path(run)} rewritten, deployment recorded in the database"
    )
