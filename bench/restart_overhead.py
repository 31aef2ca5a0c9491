"""What each trial's restart costs the tuner itself, beside the server's own start-up.

Every trial starts a fresh server. This benchmark runs back-to-back trials of the simulated SGLang
server (modelled start-up durations scaled to 0, so what remains is Python, aiohttp and the
launcher) through both launchers — ``process`` (a local process group) and ``docker`` (the
simulated image, the same code path as a real SGLang image) — and splits each trial's wall time:

- tuner before: trial start (port chosen) -> the server's first log line (container create/start,
  interpreter start-up up to the server's first print);
- server start-up: first log line -> ready (``/health`` 200 and one real ``/generate``, through
  ``tuner.launch.readiness.wait_ready``);
- tuner after: end of measurement -> next trial start (``stop()``: SIGTERM, logs kept, container
  removed);
- crash detection: a server that exits at a stamped moment; how late ``exit_status()``, polled every
  100 ms as readiness polls it, reports the exit.

It also checks the promise that no container of ours remains after the trials.

    .venv/bin/python bench/restart_overhead.py [--trials 50]   # writes bench/results/restart_overhead.md
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.engines.base import FlagVector
from tuner.engines.sglang import ENGINE
from tuner.launch.base import LaunchSpec
from tuner.launch.docker import DockerLauncher
from tuner.launch.process import ProcessLauncher
from tuner.launch.readiness import ProbeFailed, wait_ready
from tuner.launch.simulator import sim_image_target

RESULTS = Path(__file__).resolve().parent / "results" / "restart_overhead.md"
SIM_FLAGS: FlagVector = {"sim-gpu": "h100", "sim-startup-scale": 0.0, "sim-noise": 0.0, "sim-seed": 1}
POLL_S = 0.1  # readiness polls exit_status() this often


@dataclass
class Trial:
    tuner_before_s: float
    server_startup_s: float
    tuner_after_s: float
    total_s: float


async def _generate(base_url: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        body = {"text": "Hello there", "sampling_params": {"max_new_tokens": 4}}
        async with s.post(base_url + "/generate", json=body) as r:
            if r.status != 200:
                raise ProbeFailed(f"HTTP {r.status}")
            await r.read()


def run_trials(
    launcher: DockerLauncher | ProcessLauncher,
    host: str,
    program: list[str] | None,
    n: int,
    logs: Path,
    study: str,
) -> list[Trial]:
    """``n`` back-to-back trials; each: start, wait ready, one request (the 'measurement'), stop."""
    trials: list[Trial] = []
    prev_measured: float | None = None
    for i in range(n):
        t0 = time.perf_counter()
        if prev_measured is not None:
            trials[-1].tuner_after_s = t0 - prev_measured
        port = launcher.free_port(host)
        argv = ENGINE.launch_argv(model="Qwen/Qwen2.5-0.5B-Instruct", host=host, port=port, flags=SIM_FLAGS,
                                  version="0.5.23", program=program)  # fmt: skip
        handle = launcher.start(LaunchSpec(argv, host, port, logs / f"{study}-{i}.log", study, i))
        try:
            asyncio.run(
                wait_ready(
                    handle, health_path="/health", probe=_generate, timeout_s=60, signatures=ENGINE.signatures
                )
            )
            asyncio.run(_generate(handle.base_url))
            measured = time.perf_counter()
        finally:
            handle.stop(10)
        first = handle.first_output_at()
        assert first is not None, "the server printed nothing"
        trials.append(Trial(first - t0, measured - first, 0.0, measured - t0))
        prev_measured = measured
    trials[-1].tuner_after_s = time.perf_counter() - prev_measured  # type: ignore[operator]
    return trials


def crash_latency(
    launcher: DockerLauncher | ProcessLauncher, host: str, python: str, n: int, logs: Path
) -> list[float]:
    """Seconds between a server's exit and ``exit_status()`` reporting it, polled every 100 ms."""
    code = (
        "import time; time.sleep(0.3); print('exit at', repr(time.time()), flush=True); raise SystemExit(1)"
    )
    out = []
    for i in range(n):
        spec = LaunchSpec(
            [python, "-c", code], host, launcher.free_port(host), logs / f"crash-{i}.log", "crash", i
        )
        handle = launcher.start(spec)
        while handle.exit_status() is None:
            time.sleep(POLL_S)
        seen = time.time()
        died = float(handle.log_text().split("exit at ")[1].split()[0])
        out.append(seen - died)
        handle.stop(5)
    return out


def _stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]
    return f"{statistics.median(xs) * 1000:.0f} | {p90 * 1000:.0f} | {xs[-1] * 1000:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=50, help="trials per launcher (default 50)")
    ap.add_argument("--crashes", type=int, default=10, help="crash-detection samples per launcher")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    docker = DockerLauncher(sim_image_target())
    docker.require_image()  # a clear error if scripts/build-sim-image.sh was not run
    process = ProcessLauncher()
    launchers: list[tuple[str, DockerLauncher | ProcessLauncher, str, list[str] | None, str]] = [
        ("process", process, "127.0.0.1", [sys.executable, "-m", "tuner.sim"], sys.executable),
        ("docker", docker, docker.bind_host, None, "python3"),
    ]
    rows, crash_rows = [], []
    remaining = None
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        for name, launcher, host, program, python in launchers:
            study = f"bench-restart-{name}-{uuid.uuid4().hex[:6]}"
            trials = run_trials(launcher, host, program, args.trials, logs, study)
            latencies = crash_latency(launcher, host, python, args.crashes, logs)
            if isinstance(launcher, DockerLauncher):
                remaining = len(launcher.containers(study)) + len(launcher.containers("crash"))

            def col(f: Callable[[Trial], float], t: list[Trial] = trials) -> str:
                return _stats([f(x) for x in t])

            rows.append(
                f"| {name} | tuner before (start -> first log line) | {col(lambda t: t.tuner_before_s)} |\n"
                f"| {name} | server start-up (first log line -> ready) | {col(lambda t: t.server_startup_s)} |\n"
                f"| {name} | tuner after (measured -> next start) | {col(lambda t: t.tuner_after_s)} |\n"
                f"| {name} | whole trial without the benchmark | {col(lambda t: t.total_s + t.tuner_after_s)} |"
            )
            crash_rows.append(f"| {name} | {_stats(latencies)} |")
            print(rows[-1], crash_rows[-1], sep="\n", flush=True)
    docker.close()

    text = f"""# Restart overhead per trial

Written by `bench/restart_overhead.py` ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {
        platform.node()
    },
{platform.processor() or platform.machine()}, Python {platform.python_version()}). {
        args.trials
    } back-to-back trials per
launcher of the simulated SGLang server with its modelled start-up scaled to 0 (`{
        " ".join(f"--{k} {v}" for k, v in SIM_FLAGS.items())
    }`), so "server start-up" is what any Python server pays (imports, aiohttp, the readiness request)
and the tuner's own share stands out. Docker runs the simulated image (`sglang-tuner/sim:dev`: the host's Python
through read-only bind mounts, docker-init as PID 1), exactly the path a real SGLang image takes.

Times in milliseconds: median | p90 | max.

| launcher | span | median | p90 | max |
|---|---|---|---|---|
{chr(10).join(rows)}

Crash detection: a server exits at a stamped time; `exit_status()` is polled every {POLL_S * 1000:.0f} ms (as
`wait_ready` does). Latency = first poll reporting the exit − the exit (includes up to one polling interval).

| launcher | median | p90 | max |
|---|---|---|---|
{chr(10).join(crash_rows)}

Containers of ours left on the daemon after {args.trials} Docker trials and {args.crashes} crashes: **{
        remaining
    }**.

Reading: "tuner before" also holds the interpreter's start-up up to the server's first print, the same for both
launchers, so Docker's own cost per restart is the difference between the two launchers' "tuner before" + "tuner
after" rows (container create/start; SIGTERM, wait, log capture and removal). Against a real SGLang start-up
(minutes: weights, KV cache, CUDA-graph capture — field report) it is noise. Crash detection adds Docker's exit
notification to the polling interval and stays far under the one-second promise. Shared 2-core VM: other jobs ran
at the same time, so p90/max are noisy.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}")
    return 0 if remaining == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
