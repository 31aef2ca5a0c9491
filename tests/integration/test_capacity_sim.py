"""Capacity search end to end against the real simulator process (``python -m tuner.sim``).

The simulated Llama-3.1-8B on an L40S with ``--max-running-requests 16`` saturates near
33 requests/s of 256-in/16-out requests: past the batch limit requests queue and TTFT bends up
sharply, as a real SGLang does. The search's answer is checked against a plain fine sweep of
rates around it on the same server.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tuner.core.net import free_port
from tuner.loadgen import run_benchmark
from tuner.objective.capacity import find_capacity, probe_workload
from tuner.objective.capacity_result import StopReason
from tuner.space.sections import CapacitySpec
from tuner.testing.capacity import SLO, SLO_TTFT_MS, WORKLOAD

SIM_ARGS = [
    "--model-path", "meta-llama/Llama-3.1-8B-Instruct", "--sim-gpu", "l40s",
    "--max-running-requests", "16", "--sim-noise", "0", "--sim-seed", "7", "--sim-startup-scale", "0.01",
]  # fmt: skip
SPEC = CapacitySpec(
    min_rate=16.0, max_rate=256.0, probe_requests=60, min_probe_requests=20, tolerance=0.05, time_budget_s=90
)


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "tuner.sim", "--host", "127.0.0.1", "--port", str(port), *SIM_ARGS]
    log = tmp_path_factory.mktemp("sim") / "sim.log"
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                out = log.read_text()
                pytest.fail(f"simulator exited with {proc.returncode}: {out[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "simulator not ready within 30 s"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


async def test_capacity_matches_a_fine_sweep(sim_url: str) -> None:
    result = await find_capacity(sim_url, WORKLOAD, SLO, SPEC)
    assert result.reason is StopReason.CONVERGED, result.curve()
    cap, upper = result.capacity_rps, result.upper_rps
    assert upper is not None and upper / cap - 1 <= SPEC.tolerance
    # Latency explodes near saturation: the failing probes' TTFT is far above the low-load one.
    curve = result.curve()
    assert curve[0]["ttft_p99_ms"] < SLO_TTFT_MS < curve[-1]["ttft_p99_ms"]
    # The plain check: full-length probes every 4 % from 0.84x to 1.2x the answer, no early stops, each
    # rate twice and the lower p99 kept: on a busy machine another process only ever adds latency, and
    # one such spike at one rate must not move the crossing (seen: 182 ms at 0.88x, 90 ms at 0.92x).
    steps = [cap * (0.84 + 0.04 * k) for k in range(10)]
    p99 = {}
    for rate in steps:
        runs = [
            await run_benchmark(sim_url, probe_workload(WORKLOAD, SPEC, rate, first=False), slos=SLO)
            for _ in range(2)
        ]
        p99[rate] = min(b.flat()["ttft_p99_ms"] for b in runs)
    passing = [r for r in steps if p99[r] <= SLO_TTFT_MS]
    failing = [r for r in steps if p99[r] > SLO_TTFT_MS]
    assert passing and failing, p99
    crossing = next(r for r in steps if p99[r] > SLO_TTFT_MS)  # first failing rate of the sweep
    # The search's bracket and the sweep's crossing agree within the tolerance plus one sweep step.
    assert abs(crossing / upper - 1) <= SPEC.tolerance + 0.04 + 0.04, (cap, upper, p99)


async def test_incumbent_out_of_reach_saves_probes(sim_url: str) -> None:
    full = await find_capacity(sim_url, WORKLOAD, SLO, SPEC.model_copy(update={"tolerance": 0.1}))
    assert full.reason is StopReason.CONVERGED and len(full.probes) >= 4
    stopped = await find_capacity(sim_url, WORKLOAD, SLO, SPEC, incumbent_rps=full.capacity_rps * 1.5)
    assert stopped.reason is StopReason.CANNOT_BEAT_INCUMBENT and stopped.stopped_early
    assert len(stopped.probes) == 1 < len(full.probes)  # counted, not timed: wall clocks vary with load
    # every probe recorded with its curve point
    for point in full.curve() + stopped.curve():
        assert point["ttft_p99_ms"] is not None and point["goodput"] is not None and "passed" in point
