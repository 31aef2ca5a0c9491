"""Calibration and landscape check of the simulated SGLang server (``python -m tuner.sim``).

Starts the real simulator process per configuration and measures it with the tuner's own
load generator, over HTTP:

1. Calibration: the field report's Baseline, Ultra-Optimized and Balanced-v2 (translated to
   SGLang 0.5.23 flags) on the RTX 5090 / Qwen3-32B-AWQ profiles, with the report's workload
   as we read it: one client, closed loop, 256-token prompts, 10 output tokens, streamed
   ``/generate``. Compared with the report's latency, TTFT and per-request tok/s.
2. Landscape: the same configurations and a few others under a concurrent workload
   (8 closed-loop clients, 256 in / 64 out), and a long-prompt one, to show that better
   configurations than the report's exist and that the best one depends on the workload.

Run: ``.venv/bin/python bench/sim_calibration.py [--requests 8] [--out bench/results/sim_calibration.md]``
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.loadgen.benchmark import run_benchmark_sync
from tuner.sim.process import SimProcess
from tuner.space.workload import WorkloadSpec

# The report's flags. --disable-flashinfer is dropped (0.5.23 rejects it; --attention-backend triton
# implies it) and --quantization awq added: the report's deployed command has it, and without it
# SGLang switches AWQ checkpoints to awq_marlin, which the report found to run out of memory.
BASELINE = shlex.split(
    "--attention-backend triton --sampling-backend pytorch --max-total-tokens 3072 --mem-fraction-static 0.85 "
    "--disable-cuda-graph --disable-custom-all-reduce --disable-radix-cache --quantization awq"
)
CONFIGS: dict[str, list[str]] = {
    "Baseline": BASELINE,
    "Ultra-Optimized": [
        *BASELINE,
        *shlex.split(
            "--enable-torch-compile --torch-compile-max-bs 8 --schedule-policy lpm --num-continuous-decode-steps 3 "
            "--triton-attention-reduce-in-fp32 --triton-attention-num-kv-splits 16"
        ),
    ],
    "Balanced-v2": [
        *BASELINE,
        *shlex.split(
            "--enable-torch-compile --torch-compile-max-bs 6 --schedule-policy lof --num-continuous-decode-steps 2 "
            "--triton-attention-num-kv-splits 12 --allow-auto-truncate --mem-fraction-static 0.87"
        ),
    ],
}
# The report's figures: (latency ms, TTFT ms, tok/s).
REPORT = {
    "Baseline": (1049.0, 283.0, 10.2),
    "Ultra-Optimized": (1049.0, 283.0, 10.17),
    "Balanced-v2": (978.0, 195.0, 10.27),
}

# Other points of the landscape (all legal on the 5090 profile).
OTHERS: dict[str, list[str]] = {
    "Balanced-v2, no token cap": [
        a for a in CONFIGS["Balanced-v2"] if a not in ("--max-total-tokens", "3072")
    ],
    "marlin, mf 0.70": shlex.split(
        "--attention-backend triton --sampling-backend pytorch --disable-cuda-graph --disable-radix-cache "
        "--quantization awq_marlin --mem-fraction-static 0.70 --num-continuous-decode-steps 2"
    ),
    "marlin, mf 0.75, 4 decode steps": shlex.split(
        "--attention-backend triton --sampling-backend pytorch --disable-cuda-graph --disable-radix-cache "
        "--quantization awq_marlin --mem-fraction-static 0.75 --num-continuous-decode-steps 4"
    ),
    "marlin, mf 0.75, chunked prefill 512": shlex.split(
        "--attention-backend triton --sampling-backend pytorch --disable-cuda-graph --disable-radix-cache "
        "--quantization awq_marlin --mem-fraction-static 0.75 --chunked-prefill-size 512"
    ),
    "awq, mf 0.92, 4 decode steps, 16 splits": shlex.split(
        "--attention-backend triton --sampling-backend pytorch --disable-cuda-graph --disable-radix-cache "
        "--quantization awq --mem-fraction-static 0.92 --num-continuous-decode-steps 4 "
        "--triton-attention-num-kv-splits 16"
    ),
}

CALIBRATION_WORKLOAD = dict(input_len=256, output_len=10, arrival={"kind": "closed", "clients": 1})
CONCURRENT_WORKLOAD = dict(input_len=256, output_len=64, arrival={"kind": "closed", "clients": 8})
LONG_PROMPT_WORKLOAD = dict(input_len=3000, output_len=32, arrival={"kind": "closed", "clients": 8})


def measure(
    flags: list[str], workload: dict[str, object], requests: int, gpu: str = "rtx5090"
) -> dict[str, float]:
    """Flat metrics of one benchmark run against a fresh simulator."""
    spec = WorkloadSpec(num_requests=requests, warmup_requests=1, **workload)  # type: ignore[arg-type]
    with SimProcess([*flags, "--sim-gpu", gpu, "--sim-noise", "0", "--sim-seed", "1"]) as sim:
        sim.wait_ready()
        return run_benchmark_sync(sim.url, spec).flat()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8, help="measured requests per calibration configuration")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = ap.parse_args()
    lines = [
        "# Simulator calibration (generated by bench/sim_calibration.py)",
        "",
        "RTX 5090 + Qwen3-32B-AWQ profiles, `--sim-noise 0`. Calibration workload: 1 closed-loop client, "
        f"256-token prompts, 10 output tokens, streamed /generate, {args.requests} requests after 1 warm-up.",
        "",
        "| configuration | latency ms (report) | TTFT ms (report) | tok/s (report) |",
        "|---|---|---|---|",
    ]
    for name, flags in CONFIGS.items():
        m = measure(flags, CALIBRATION_WORKLOAD, args.requests)
        rep = REPORT[name]
        got = (m["e2e_mean_ms"], m["ttft_mean_ms"], m["per_request_tok_s"])
        cells = [f"{g:.0f} ({r:.0f}, {g / r - 1:+.0%})" if i < 2 else f"{g:.2f} ({r}, {g / r - 1:+.0%})"
                 for i, (g, r) in enumerate(zip(got, rep, strict=True))]  # fmt: skip
        lines.append(f"| {name} | {' | '.join(cells)} |")
        print(lines[-1], flush=True)
    for title, workload, n in (
        ("Concurrent workload: 8 closed-loop clients, 256 in / 64 out", CONCURRENT_WORKLOAD, 16),
        ("Long prompts: 8 closed-loop clients, 3000 in / 32 out", LONG_PROMPT_WORKLOAD, 8),
    ):
        lines += ["", f"## {title}", "", "| configuration | output tok/s | TTFT mean ms | E2E mean ms | failed |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, flags in {**CONFIGS, **OTHERS}.items():
            try:
                m = measure(flags, workload, n)
                row = f"| {name} | {m['output_throughput']:.1f} | {m['ttft_mean_ms']:.0f} | {m['e2e_mean_ms']:.0f} | {m['failed']:.0f} |"
            except RuntimeError as e:
                row = f"| {name} | failed to start: {str(e).splitlines()[-1][:80]} | | | |"
            lines.append(row)
            print(row, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
