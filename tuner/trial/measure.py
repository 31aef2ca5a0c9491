"""Measure one configuration: server launch -> readiness -> benchmark (or capacity search) -> outcome.

:class:`ConfigRunner` measures one flag vector and returns a typed :class:`Outcome`, with no Optuna in
it: the study's objective (``tuner/trial/objective.py``), the confirmation and the nightly job all
measure through it.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tuner.core import interrupts
from tuner.core.errors import LaunchError, ServerCrash
from tuner.core.failures import Failure, FailureKind, Phase
from tuner.core.records import GpuSample
from tuner.core.slug import slug
from tuner.engines import get_engine
from tuner.launch.base import Launcher, LaunchSpec, ServerHandle, host_secrets
from tuner.launch.process import wait_port_free
from tuner.launch.readiness import ProbeFailed, crash_of, wait_ready
from tuner.launch.simulator import simulator_program
from tuner.loadgen.benchmark import ShouldStop, run_benchmark
from tuner.loadgen.metrics import BenchResult
from tuner.loadgen.probes import answer_probes, probe_prompts
from tuner.loadgen.telemetry import GpuMonitor, ServerMemoryMonitor, current_memory_mib, wait_memory_baseline
from tuner.objective.capacity import find_capacity
from tuner.objective.capacity_result import StopReason
from tuner.space.constraints import violated_constraint
from tuner.space.schema import SearchSpace
from tuner.space.targets import ProcessTarget, SimulatorTarget
from tuner.space.workload import ClosedArrival
from tuner.trial.progress import Progress

T = TypeVar("T")
WATCH_S = 0.1  # how often a running benchmark checks that the server is still alive


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
    probe_answers: list[str | None] | None = (
        None  # the quality gate's probes, answered (quality: in the space)
    )


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
        if isinstance(target, ProcessTarget):
            return target.command
        return None  # docker: the image runs the engine's own program

    def measure(
        self,
        flags: Mapping[str, Any],
        *,
        run_index: int,
        should_stop: ShouldStop | None = None,
        incumbent_rps: float | None = None,
        deadline_s: float | None = None,
    ) -> Outcome:
        """Start a server with ``flags``, benchmark it, stop it. Never raises for a server failure."""
        flags = dict(flags)
        # where the server binds: a container binds 0.0.0.0 behind a port published on 127.0.0.1
        host = self.launcher.bind_host or self.space.launch.host
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
        log_path = self.log_dir / f"{slug(self.study)}-{run_index}.log"
        log_path.unlink(missing_ok=True)
        target = self.space.target
        env, secrets = (
            ({}, {})
            if isinstance(target, SimulatorTarget)
            else (dict(target.env), host_secrets(target.secret_env_from_host))
        )
        spec = LaunchSpec(
            argv=argv,
            host=host,
            port=port,
            log_path=log_path,
            study=self.study,
            trial=run_index,
            env=env,
            secret_env=secrets,
            gpu_ids=self.gpu_ids,
            worker=self.worker,
        )
        outcome = Outcome(flags, argv, log_path)
        t0 = time.perf_counter()
        handle = self.launcher.start(spec)  # LaunchError propagates: the study cannot run at all
        outcome.timings["launch_s"] = time.perf_counter() - t0
        outcome.docker_command = handle.command  # secrets shown as ***
        lost = False  # the launcher lost the server mid-trial (e.g. the Docker daemon died)
        try:
            asyncio.run(self._serve_and_measure(handle, outcome, should_stop, incumbent_rps, deadline_s))
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
        deadline_s: float | None = None,
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
        w = self.space.workload
        self._phase(
            "measuring", f"{w.num_requests} requests" if w.num_requests is not None else f"{w.duration_s:g} s"
        )
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
                        deadline_s=deadline_s,
                    ),
                )
                bench, metrics = result, result.flat()
                outcome.stopped_early = result.stopped_early
                if result.over_deadline:
                    outcome.stop_reason = "slow"
                    outcome.timings["deadline_s"] = float(deadline_s or 0.0)
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
        quality = self.space.quality
        if (
            quality is not None
            and not outcome.stopped_early
            and rate <= self.space.failure.error_rate_threshold
        ):
            self._phase("probing", f"{quality.probes} quality probes, greedy")
            prompts = probe_prompts(quality.probes, quality.probe_len, w.seed)
            outcome.probe_answers = await self._watching(
                handle,
                answer_probes(handle.base_url, w.api, prompts, quality.max_tokens, None, w.request_timeout_s),
            )
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
                "dataset": None,
                "input_len": 16,
                "arrival": ClosedArrival(clients=1),
            }
        )
        result = await run_benchmark(base_url, probe)
        if result.flat().get("completed", 0) < 1:
            errors = [r.error or f"HTTP {r.status}" for r in result.records if not r.ok]
            raise ProbeFailed(errors[0] if errors else "no response")

    def _phase(self, name: str, detail: str = "") -> None:
        interrupts.check()  # a Ctrl-C the interpreter swallowed (tuner.core.interrupts) stops the trial here
        if self.progress is not None:
            self.progress.phase(name, detail)
