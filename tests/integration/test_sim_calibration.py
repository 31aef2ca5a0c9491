"""Calibration of the simulator against the field report, and a landscape worth tuning.

Workload assumption (docs/simulator.md, "Calibration"): the report's figures fit one client,
closed loop, ~256-token prompts and 10 output tokens per request, with tok/s measured per
request (10.27 tok/s × 0.978 s ≈ 10 tokens). Measured with the tuner's own load generator over
HTTP against the real simulator process, noise off.

The report's Balanced-v2 TTFT (195 ms, -31 %) is NOT reproduced: none of its differences from
the Baseline touches the prefill path of a lone request (KV splits and reduce-in-fp32 are decode
kernels; torch.compile only acts inside CUDA-graph capture, which is off; continuous decode
steps can only delay admission), so the simulator gives it the Baseline's TTFT. We read the
report's figure as a single-run artefact; the test pins the simulator's answer.
"""

from __future__ import annotations

import shlex

import pytest

from tuner.loadgen.benchmark import run_benchmark_sync
from tuner.sim.process import SimProcess
from tuner.space.workload import WorkloadSpec

BASELINE = shlex.split(
    "--attention-backend triton --sampling-backend pytorch --max-total-tokens 3072 --mem-fraction-static 0.85 "
    "--disable-cuda-graph --disable-custom-all-reduce --disable-radix-cache --quantization awq"
)
ULTRA = [
    *BASELINE,
    *shlex.split(
        "--enable-torch-compile --torch-compile-max-bs 8 --schedule-policy lpm --num-continuous-decode-steps 3 "
        "--triton-attention-reduce-in-fp32 --triton-attention-num-kv-splits 16"
    ),
]
BALANCED = [
    *BASELINE,
    *shlex.split(
        "--enable-torch-compile --torch-compile-max-bs 6 --schedule-policy lof --num-continuous-decode-steps 2 "
        "--triton-attention-num-kv-splits 12 --allow-auto-truncate --mem-fraction-static 0.87"
    ),
]
# (latency ms, TTFT ms, per-request tok/s) as the report gives them
REPORT = {
    "baseline": (1049.0, 283.0, 10.2),
    "ultra": (1049.0, 283.0, 10.17),
    "balanced": (978.0, 195.0, 10.27),
}
FLAGS = {"baseline": BASELINE, "ultra": ULTRA, "balanced": BALANCED}
WORKLOAD = {"input_len": 256, "output_len": 10, "arrival": {"kind": "closed", "clients": 1}}


def run(flags: list[str], workload: dict[str, object], n: int) -> dict[str, float]:
    spec = WorkloadSpec(num_requests=n, warmup_requests=1, **workload)  # type: ignore[arg-type]
    with SimProcess([*flags, "--sim-noise", "0", "--sim-seed", "1"]) as s:
        s.wait_ready()
        return run_benchmark_sync(s.url, spec).flat()


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, float]]:
    return {name: run(flags, WORKLOAD, 3) for name, flags in FLAGS.items()}


@pytest.mark.parametrize("name", ["baseline", "ultra", "balanced"])
def test_latency_and_tok_s_within_15_percent_of_the_report(
    name: str, measured: dict[str, dict[str, float]]
) -> None:
    m, (latency, _, tok_s) = measured[name], REPORT[name]
    assert m["completed"] == 3 and m["failed"] == 0
    assert m["e2e_mean_ms"] == pytest.approx(latency, rel=0.15)
    assert m["per_request_tok_s"] == pytest.approx(tok_s, rel=0.15)


@pytest.mark.parametrize("name", ["baseline", "ultra"])
def test_ttft_within_15_percent_of_the_report(name: str, measured: dict[str, dict[str, float]]) -> None:
    assert measured[name]["ttft_mean_ms"] == pytest.approx(REPORT[name][1], rel=0.15)


def test_balanced_v2_ttft_is_the_baselines(measured: dict[str, dict[str, float]]) -> None:
    assert measured["balanced"]["ttft_mean_ms"] == pytest.approx(
        measured["baseline"]["ttft_mean_ms"], rel=0.05
    )


def test_better_configurations_than_balanced_v2_exist_under_concurrency() -> None:
    # 4 closed-loop clients, 256 in / 32 out. Marlin kernels fit only with a smaller static pool
    # (the last --mem-fraction-static wins, as in argparse).
    concurrent = {"input_len": 256, "output_len": 32, "arrival": {"kind": "closed", "clients": 4}}
    marlin = [*(a if a != "awq" else "awq_marlin" for a in BALANCED), "--mem-fraction-static", "0.72"]
    report_best = run(BALANCED, concurrent, 8)["output_throughput"]
    better = run(marlin, concurrent, 8)["output_throughput"]
    assert better > 1.1 * report_best, (better, report_best)
