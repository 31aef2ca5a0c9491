"""One trial: sampled config -> server launch -> readiness -> benchmark -> outcome -> Optuna.

:class:`ConfigRunner` measures one flag vector and returns a typed :class:`Outcome` (no Optuna in
it: the nightly job re-measures configurations with it too). :class:`TrialRunner` is the Optuna
objective: the ONLY code that touches ``optuna.Trial``. A failed server becomes a PRUNED trial
with the ``crash`` constraint violated and the failure kind and evidence in user attributes, so
TPE learns to avoid it (a FAIL trial would be invisible to it: shared/facts/optuna.md).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import optuna

from tuner.core.errors import LaunchError, ServerCrash
from tuner.core.failures import Failure, FailureKind, Phase
from tuner.core.records import GpuSample
from tuner.engines import get_engine
from tuner.launch.base import Launcher, LaunchSpec, ServerHandle
from tuner.launch.process import wait_port_free
from tuner.launch.readiness import ProbeFailed, crash_of, wait_ready
from tuner.loadgen.benchmark import run_benchmark
from tuner.loadgen.metrics import BenchResult
from tuner.loadgen.telemetry import GpuMonitor, ServerMemoryMonitor, current_memory_mib, wait_memory_baseline
from tuner.objective import constraints_for_crash, constraints_for_metrics, objective_values
from tuner.objective.capacity import StopReason, find_capacity
from tuner.objective.ranking import feasible_complete
from tuner.space.constraints import violated_constraint
from tuner.space.sample import params_to_flags, sample_params
from tuner.space.schema import SearchSpace
from tuner.space.targets import SimulatorTarget
from tuner.space.workload import ClosedArrival
from tuner.store.attrs import TrialAttr
from tuner.trial.progress import Progress
from tuner.trial.pruning import window_should_stop

T = TypeVar("T")
WATCH_S = 0.1  # how often a running benchmark checks that the server is still alive

ShouldStop = Callable[[int, BenchResult], bool]
"""Called after each measurement window with the partial result; True stops the benchmark."""


@dataclass
class Outcome:
    """What measuring one configuration produced."""

    flags: dict[str, Any]
    argv: list[str]
    log_path: Path | None
    metrics: dict[str, float] | None = None
    failure: Failure | None = None
    bench: BenchResult | None = None
    gpu_samples: list[GpuSample] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    stop_reason: str = "slow"  # why a measurement stopped early: window pruning, or the capacity search
    capacity: dict[str, Any] | None = None  # every probe of a capacity search (rate, latencies, verdict)
    docker_command: str | None = None


def simulator_program(space: SearchSpace, target: SimulatorTarget, seed: int | None) -> list[str]:
    """The simulator's command line prefix (its ``--sim-*`` options); SGLang's flags follow."""
    argv = [
        sys.executable, "-m", "tuner.sim",
        "--sim-sglang-version", space.engine_version,
        "--sim-gpu", target.gpu,
        "--sim-model", target.model,
        "--sim-noise", str(target.noise),
        "--sim-startup-scale", str(target.startup_scale),
    ]  # fmt: skip
    if seed is not None:
        argv += ["--sim-seed", str(seed)]
    return [*argv, *target.extra_args]


class ConfigRunner:
    """Measures flag vectors of one search space with one launcher. Optuna-free."""

    def __init__(
        self,
        space: SearchSpace,
        launcher: Launcher,
        *,
        study: str,
        log_dir: Path,
        worker: str = "0",
        progress: Progress | None = None,
    ) -> None:
        self.space = space
        self.engine = get_engine(space.engine)
        self.launcher = launcher
        self.study = study
        self.log_dir = log_dir
        self.worker = worker
        self.progress = progress
        self.gpu_ids = tuple(space.launch.gpu_ids) if space.launch.gpu_ids is not None else None
        self.simulated = isinstance(space.target, SimulatorTarget)
        # GPU hygiene: memory in use before our first server, to wait for after each one
        self.gpu_baseline = None if self.simulated else current_memory_mib(self.gpu_ids)

    def program(self, run_index: int) -> list[str] | None:
        target = self.space.target
        if isinstance(target, SimulatorTarget):
            # a different but reproducible seed per trial, so repeats differ as real runs do
            seed = (
                target.seed if target.seed is not None else zlib.crc32(f"{self.study}:{run_index}".encode())
            )
            return simulator_program(self.space, target, seed)
        return getattr(target, "command", None)  # docker: the image runs the engine's own program

    def measure(
        self,
        flags: Mapping[str, Any],
        *,
        run_index: int,
        should_stop: ShouldStop | None = None,
        incumbent_rps: float | None = None,
    ) -> Outcome:
        """Start a server with ``flags``, benchmark it, stop it. Never raises for a server failure."""
        flags = dict(flags)
        # where the server binds: a container binds 0.0.0.0 behind a port published on 127.0.0.1
        host = getattr(self.launcher, "bind_host", self.space.launch.host)
        if (reason := violated_constraint(self.space, flags)) is not None:
            failure = Failure(FailureKind.INFEASIBLE, Phase.PRECHECK, detail=reason)
            return Outcome(flags, [], None, failure=failure)
        port = self.launcher.free_port(host)
        argv = self.engine.launch_argv(
            model=self.space.model,
            host=host,
            port=port,
            flags=flags,
            version=self.space.engine_version,
            program=self.program(run_index),
        )
        log_path = self.log_dir / f"{self.study}-{run_index}.log"
        log_path.unlink(missing_ok=True)
        spec = LaunchSpec(
            argv=argv,
            host=host,
            port=port,
            log_path=log_path,
            study=self.study,
            trial=run_index,
            env=getattr(self.space.target, "env", {}),
            secret_env=_host_secrets(getattr(self.space.target, "secret_env_from_host", [])),
            gpu_ids=self.gpu_ids,
            worker=self.worker,
        )
        outcome = Outcome(flags, argv, log_path)
        t0 = time.perf_counter()
        handle = self.launcher.start(spec)  # LaunchError propagates: the study cannot run at all
        outcome.timings["launch_s"] = time.perf_counter() - t0
        outcome.docker_command = getattr(handle, "command", None)  # secrets shown as ***
        lost = False  # the launcher lost the server mid-trial (e.g. the Docker daemon died)
        try:
            asyncio.run(self._serve_and_measure(handle, outcome, should_stop, incumbent_rps))
        except ServerCrash as crash:
            outcome.failure = crash.failure
        except LaunchError:
            lost = True
            raise
        finally:
            t_stop = time.perf_counter()
            try:
                handle.stop(self.space.launch.stop_timeout_s)
            except LaunchError:
                # after a loss stop() fails the same way; the first error, which names the container
                # and how to clean up, is the one to propagate
                if not lost:
                    raise
            else:
                wait_port_free(host, port)
                if self.gpu_baseline is not None and not wait_memory_baseline(
                    self.gpu_ids, self.gpu_baseline
                ):
                    outcome.timings["gpu_memory_not_freed"] = 1.0
                outcome.timings["stop_s"] = time.perf_counter() - t_stop
                if (first := handle.first_output_at()) is not None:
                    outcome.timings["to_first_log_s"] = first - t0
        return outcome

    async def _serve_and_measure(
        self,
        handle: ServerHandle,
        outcome: Outcome,
        should_stop: ShouldStop | None,
        incumbent_rps: float | None,
    ) -> None:
        self._phase("warming", "waiting for /health and a first request")
        t0 = time.perf_counter()
        await wait_ready(
            handle,
            health_path=self.engine.request.health_path,
            probe=self._probe,
            timeout_s=self.space.launch.startup_timeout_s,
            signatures=self.engine.signatures,
        )
        outcome.timings["ready_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        telemetry: GpuMonitor | ServerMemoryMonitor = (
            ServerMemoryMonitor(handle.base_url) if self.simulated else GpuMonitor(self.gpu_ids)
        )
        self._phase("measuring")
        progress = self.progress.live if self.progress else None
        bench: BenchResult | None
        with telemetry:
            if self.space.capacity is None:
                result = await self._watching(
                    handle,
                    run_benchmark(
                        handle.base_url,
                        self.space.workload,
                        slos=self.space.slos,
                        should_stop=should_stop,
                        on_progress=progress,
                    ),
                )
                bench, metrics = result, result.flat()
                outcome.stopped_early = result.stopped_early
                stalled = result.stalled
            else:
                capacity = await self._watching(
                    handle,
                    find_capacity(
                        handle.base_url,
                        self.space.workload,
                        self.space.slos,
                        self.space.capacity,
                        incumbent_rps=incumbent_rps,
                        on_probe=lambda p: self._phase("probing", f"{p.rate:.2f} req/s: {p.verdict.value}"),
                        on_progress=progress,
                    ),
                )
                bench = capacity.bench
                metrics = capacity.flat()
                outcome.capacity = capacity.to_dict()
                outcome.stopped_early = capacity.stopped_early
                outcome.stop_reason = f"capacity: {capacity.reason.value}"
                stalled = capacity.reason is StopReason.STALLED
        outcome.gpu_samples = list(telemetry.samples)
        outcome.timings["bench_s"] = time.perf_counter() - t1
        outcome.bench = bench
        if (peak := telemetry.peak_memory_mib()) is not None:
            metrics["gpu_peak_memory_mib"] = peak
        if (util := telemetry.mean_utilization()) is not None:
            metrics["gpu_mean_utilization_pct"] = util
        outcome.metrics = metrics
        if stalled:
            raise ServerCrash(
                Failure(
                    FailureKind.HANG,
                    Phase.LOAD,
                    handle.exit_status(),
                    (),
                    handle.log_text()[-4000:],
                    f"no token from any request for {self.space.workload.stall_timeout_s:.0f} s",
                )
            )
        rate = metrics.get("error_rate", 0.0)
        if rate > self.space.failure.error_rate_threshold:
            failed = bench.records if bench is not None else ()
            errors = tuple(sorted({r.error or f"HTTP {r.status}" for r in failed if not r.ok}))[:5]
            raise ServerCrash(
                Failure(
                    FailureKind.HEALTHY_BUT_FAILING,
                    Phase.LOAD,
                    handle.exit_status(),
                    errors,
                    handle.log_text()[-4000:],
                    f"{rate:.0%} of requests failed while /health answered 200",
                )
            )

    async def _watching(self, handle: ServerHandle, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` (a benchmark or a capacity search) while checking every 100 ms that the server lives."""
        task = asyncio.create_task(work)
        while not task.done():
            await asyncio.wait({task}, timeout=WATCH_S)
            if (
                not task.done()
                and (failure := crash_of(handle, self.engine.signatures, Phase.LOAD)) is not None
            ):
                task.cancel()
                raise ServerCrash(failure)
        if (failure := crash_of(handle, self.engine.signatures, Phase.LOAD)) is not None:
            raise ServerCrash(failure)
        return task.result()

    async def _probe(self, base_url: str) -> None:
        """One real request, through the same client the benchmark uses."""
        probe = self.space.workload.model_copy(
            update={
                "num_requests": 1,
                "duration_s": None,
                "warmup_requests": 0,
                "output_len": 4,
                "prompts_file": None,
                "input_len": 16,
                "arrival": ClosedArrival(clients=1),
            }
        )
        result = await run_benchmark(base_url, probe)
        if result.flat().get("completed", 0) < 1:
            errors = [r.error or f"HTTP {r.status}" for r in result.records if not r.ok]
            raise ProbeFailed(errors[0] if errors else "no response")

    def _phase(self, name: str, detail: str = "") -> None:
        if self.progress is not None:
            self.progress.phase(name, detail)


def _host_secrets(names: list[str]) -> dict[str, str]:
    return {n: os.environ[n] for n in names if n in os.environ}


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
