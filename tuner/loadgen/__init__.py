"""Load generation: workload spec -> prompts -> arrivals -> streaming HTTP requests -> metrics.

Public surface::

    from tuner.loadgen import WorkloadSpec, SLOs, run_benchmark
    result = await run_benchmark("http://127.0.0.1:30000", WorkloadSpec(num_requests=64))
    result.flat()["output_throughput"]
"""

from tuner.core.metric_names import FLAT_METRICS
from tuner.loadgen.benchmark import OnProgress, ShouldStop, run_benchmark, run_benchmark_sync
from tuner.loadgen.metrics import BenchResult, compute_metrics
from tuner.loadgen.prompts import Prompt, load_prompts_file, make_prompts
from tuner.space.workload import ClosedArrival, LengthDist, PoissonArrival, SLOs, WorkloadSpec

__all__ = [
    "FLAT_METRICS",
    "BenchResult",
    "ClosedArrival",
    "LengthDist",
    "OnProgress",
    "PoissonArrival",
    "Prompt",
    "SLOs",
    "ShouldStop",
    "WorkloadSpec",
    "compute_metrics",
    "load_prompts_file",
    "make_prompts",
    "run_benchmark",
    "run_benchmark_sync",
]
