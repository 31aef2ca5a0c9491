"""Summarise the H100 study (bench/results/h100/trials.csv, from python -m tuner.report) as README.md."""

import pandas as pd

d = pd.read_csv("bench/results/h100/trials.csv")
print("# A real study on the H100: `transformers serve`, random-weight 0.94 B Llama (2026-11-24)\n")
print(
    "Run with `bench/gpu/h100_transformers_study.sh` on the lent H100 (driver 580.159.04, 81559 MiB), through the"
)
print(
    "same `python -m tuner.study` the README documents (process launcher, NVML telemetry, SQLite), search space"
)
print(
    "`search_spaces/transformers-h100-tiny.yaml`: 32 requests, 256 words in, 32 tokens out, 16 closed-loop clients."
)
print(
    "14 trials in 484 s including writing the model (23 s). Files: `study-run.log` (what the tuner printed),"
)
print("`report.md` and `trials.csv` (from `python -m tuner.report` on the study database), `gpu-tests.txt`")
print("(the GPU-marked tests, 2 passed).\n")
cols = [
    "number",
    "state",
    "param_continuous-batching",
    "param_attn-implementation",
    "param_cb-use-cuda-graph",
    "param_cb-num-blocks",
    "objective_output_throughput",
    "metric_ttft_p99_ms",
    "metric_gpu_peak_memory_mib",
    "metric_gpu_mean_utilization_pct",
    "failure_kind",
]
cols = [c for c in cols if c in d.columns]
t = d[cols].rename(columns=lambda c: c.replace("param_", "").replace("metric_", "").replace("objective_", ""))


def fmt(v):
    if isinstance(v, float):
        return "" if v != v else f"{v:.1f}"
    return str(v)


print("| " + " | ".join(t.columns) + " |")
print("|" + "---|" * len(t.columns))
for _, row in t.iterrows():
    print("| " + " | ".join(fmt(v) for v in row) + " |")
ok = d[d.state == "COMPLETE"]
base = d[d["number"] == 0]["objective_output_throughput"].iloc[0]
best = ok["objective_output_throughput"].max()
print(
    f"\nBest against the engine's defaults (trial 0, no flags): {best:.1f} / {base:.1f} tok/s = **{best / base:.1f}x** "
    "(one measurement each). Failures by kind: "
    + ", ".join(f"{k} {v}" for k, v in d.failure_kind.value_counts().items())
    + ". The `healthy_but_failing` trials answered `/health` 200 while every request failed (HTTP 500, then 503 "
    "\"CB worker is dead\"); the hang produced no token for 30 s under load. GPU memory is NVML's peak 'memory used' "
    "during the benchmark (the whole device, as `nvidia-smi` shows it)."
)
