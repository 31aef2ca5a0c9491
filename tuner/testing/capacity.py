"""The capacity-search set-up shared by its simulator test and its benchmark: one simulated L40S
server, 256-token prompts answered with 16 tokens, an SLO on p99 TTFT."""

from tuner.loadgen import SLOs, WorkloadSpec

WORKLOAD = WorkloadSpec(
    input_len=256,
    output_len=16,
    num_requests=1,
    warmup_requests=4,
    seed=0,
    stall_timeout_s=10,
    request_timeout_s=30,
)
SLO_TTFT_MS = 150.0
SLO = SLOs(ttft_p99_ms=SLO_TTFT_MS, error_rate=0.05)
