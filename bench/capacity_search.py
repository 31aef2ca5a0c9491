"""Capacity search vs a plain fixed-step rate sweep: probes and minutes per trial, same answer?

For each simulated configuration (Llama-3.1-8B on an L40S, 256-in/16-out requests, with the
batch capped by ``--max-running-requests``), on one server process:

- ``bisection``: :func:`tuner.objective.capacity.find_capacity` from ``min_rate`` (geometric ramp,
  bisection to 5 %, a probe stops once its failure is certain);
- ``sweep``: the plain method (vLLM auto_tune style) — full-length probes at ``min_rate``,
  ``min_rate + step``, … until the first failing rate; its answer is the last passing rate;
- ``incumbent``: ``find_capacity`` with an incumbent 1.5x the found capacity (a trial that
  cannot beat the best so far): how fast it is stopped.

Every probe is 60 requests at a Poisson rate (the workload's seed, so all methods see the same
arrival pattern scaled to each rate); SLO: p99 TTFT <= 150 ms, error rate <= 5 %.

    .venv/bin/python bench/capacity_search.py      # writes bench/results/capacity_search.md
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.engines.sglang import ENGINE
from tuner.launch.base import LaunchSpec
from tuner.launch.process import ProcessLauncher
from tuner.launch.readiness import wait_ready
from tuner.loadgen import run_benchmark
from tuner.objective.capacity import find_capacity, probe_workload
from tuner.objective.capacity_result import CapacityResult, judge
from tuner.space.sections import CapacitySpec
from tuner.testing.capacity import SLO, WORKLOAD

RESULTS = Path(__file__).resolve().parent / "results" / "capacity_search.md"
SPEC = CapacitySpec(
    min_rate=8.0, max_rate=256.0, probe_requests=60, min_probe_requests=20, tolerance=0.05, time_budget_s=300
)
SWEEP_STEP_RPS = 2.0
CONFIGS = {"max-running-requests 8": 8, "max-running-requests 16": 16, "max-running-requests 32": 32}


@dataclass
class Row:
    method: str
    answer: float
    probes: int
    minutes: float
    note: str


async def sweep(url: str) -> tuple[Row, list[tuple[float, float, bool]]]:
    """Full-length probes every SWEEP_STEP_RPS from min_rate until the first failure."""
    t0 = time.perf_counter()
    rate, last_pass = SPEC.min_rate, 0.0
    points: list[tuple[float, float, bool]] = []
    while rate <= SPEC.max_rate:
        bench = await run_benchmark(url, probe_workload(WORKLOAD, SPEC, rate, first=not points), slos=SLO)
        verdict, _ = judge(bench.flat(), SLO, SPEC)
        points.append((rate, bench.flat()["ttft_p99_ms"], verdict.value == "pass"))
        if verdict.value != "pass":
            break
        last_pass = rate
        rate += SWEEP_STEP_RPS
    minutes = (time.perf_counter() - t0) / 60
    return Row("sweep", last_pass, len(points), minutes, f"step {SWEEP_STEP_RPS:g} rps"), points


def row_of(method: str, result: CapacityResult) -> Row:
    note = result.reason.value
    if result.upper_rps is not None:
        note += f", first fail {result.upper_rps:.2f}"
    return Row(method, result.capacity_rps, len(result.probes), result.wall_s / 60, note)


async def measure(name: str, mrr: int, log_dir: Path) -> tuple[list[Row], CapacityResult]:
    launcher = ProcessLauncher()
    port = launcher.free_port("127.0.0.1")
    argv = ENGINE.launch_argv(
        model="meta-llama/Llama-3.1-8B-Instruct",
        host="127.0.0.1",
        port=port,
        flags={"max-running-requests": mrr},
        version="0.5.23",
        program=[sys.executable, "-m", "tuner.sim", "--sim-gpu", "l40s", "--sim-noise", "0",
                 "--sim-seed", "7", "--sim-startup-scale", "0.01"],
    )  # fmt: skip
    spec = LaunchSpec(
        argv=argv, host="127.0.0.1", port=port, log_path=log_dir / f"{mrr}.log", study="cap", trial=mrr
    )
    handle = launcher.start(spec)
    try:

        async def probe(url: str) -> None:
            await run_benchmark(url, WORKLOAD.model_copy(update={"warmup_requests": 0}))

        await wait_ready(
            handle, health_path="/health", probe=probe, timeout_s=60, signatures=ENGINE.signatures
        )
        url = handle.base_url
        found = await find_capacity(url, WORKLOAD, SLO, SPEC)
        swept, _ = await sweep(url)
        stopped = await find_capacity(url, WORKLOAD, SLO, SPEC, incumbent_rps=found.capacity_rps * 1.5)
        print(f"{name}: bisection {found.capacity_rps:.2f} ({len(found.probes)} probes), sweep {swept.answer:.2f} "
              f"({swept.probes} probes)", flush=True)  # fmt: skip
        return [row_of("bisection", found), swept, row_of("incumbent x1.5", stopped)], found
    finally:
        handle.stop(10)


def write(results: dict[str, tuple[list[Row], CapacityResult]]) -> str:
    lines = [
        "# Capacity search vs a fixed-step sweep",
        "",
        f"Machine: {platform.node()} ({platform.machine()}, Python {platform.python_version()}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Produced by `bench/capacity_search.py`.",
        "",
        "Simulated Llama-3.1-8B on an L40S (`python -m tuner.sim --sim-gpu l40s --sim-noise 0`), 256-in/16-out",
        "requests, Poisson arrivals, 60 requests per probe, SLO p99 TTFT <= 150 ms and error rate <= 5 %.",
        f"Bisection: geometric ramp x{SPEC.ramp_factor:g} from {SPEC.min_rate:g} rps, then bisection to "
        f"{SPEC.tolerance:.0%}. Sweep: full-length probes every {SWEEP_STEP_RPS:g} rps from {SPEC.min_rate:g} rps "
        "to the first failure.",
        "",
        "| configuration | method | capacity (rps) | probes | minutes | note |",
        "|---|---|---|---|---|---|",
    ]
    for name, (rows, _) in results.items():
        for r in rows:
            lines.append(
                f"| {name} | {r.method} | {r.answer:.2f} | {r.probes} | {r.minutes:.2f} | {r.note} |"
            )
    lines += ["", "## Latency vs load (the bisection's probes)", ""]
    for name, (_, found) in results.items():
        lines += [
            f"### {name}",
            "",
            "| rate | p50 TTFT ms | p99 TTFT ms | p99 TPOT ms | goodput | verdict | early |",
        ]
        lines.append("|---|---|---|---|---|---|---|")
        for p in found.curve():
            lines.append(
                f"| {p['rate']:.2f} | {p['ttft_median_ms']:.0f} | {p['ttft_p99_ms']:.0f} | {p['tpot_p99_ms']:.1f} "
                f"| {p['goodput']:.1f} | {p['verdict']} | {'yes' if p['decided_early'] else ''} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, mrr in CONFIGS.items():
            results[name] = asyncio.run(measure(name, mrr, Path(tmp)))
    text = write(results)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
