"""How the simulated server fails: which flags break on which GPU, and the real signatures.

Decisions read the GPU profile's quirks (``profiles.GpuQuirks``) and the memory plan, never a
GPU's name. Deaths look like SGLang's: the scheduler subprocess prints "Scheduler hit an
exception" and a traceback, tells the parent, and the parent SIGKILLs its own process tree
(return code -9 / container exit 137). A CUDA-graph segfault is a real child process dying of
SIGSEGV, reported as "Subprocess scheduler_0 crashed with exit code -11" before the same
SIGKILL. Log texts match ``tuner.engines.sglang.SIGNATURES`` and ``shared/facts/sglang.md``.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

from tuner.sim import perfmodel
from tuner.sim.config import SimConfig
from tuner.sim.logs import log
from tuner.sim.perfmodel import Batch, MemoryPlan
from tuner.sim.profiles import GpuProfile, ModelProfile

INJECTABLE = ("hang-under-load", "fail-requests", "crash-under-load", "segfault-at-start")
UNDER_LOAD = 2  # a batch with this many requests counts as "load"


@dataclass(frozen=True)
class StartupFailure:
    """A failure that happens at a start-up milestone."""

    stage: str  # "load" | "kv" | "attention" | "graph"
    exception: str  # the last traceback line ("" for a segfault)
    segfault: bool = False


def startup_failure(
    cfg: SimConfig, gpu: GpuProfile, model: ModelProfile, mem: MemoryPlan, inject: tuple[str, ...]
) -> StartupFailure | None:
    """The first start-up failure this configuration hits on this GPU, or None."""
    q = gpu.quirks
    if cfg.tp_size > 1:
        return StartupFailure(
            "load", f"RuntimeError: tp_size={cfg.tp_size} needs {cfg.tp_size} GPUs; 1 is visible."
        )
    if "segfault-at-start" in inject:
        return StartupFailure("graph", "", segfault=True)
    if cfg.attention_backend == "flashinfer" and not q.flashinfer_supported:
        return StartupFailure(
            "attention",
            f"RuntimeError: FlashInfer attention is not supported on {gpu.arch}: "
            "CUDA error: no kernel image is available for execution on the device",
        )
    if cfg.sampling_backend == "flashinfer" and not q.flashinfer_supported:
        return StartupFailure(
            "attention", "RuntimeError: CUDA error: no kernel image is available for execution on the device"
        )
    if mem.marlin_gib > 0 and mem.free_gib < 0:
        return StartupFailure("load", _oom(mem.marlin_gib, gpu, free_gib=mem.free_gib + mem.marlin_gib))
    if mem.free_gib < 0 or mem.kv_pool_tokens < perfmodel.MIN_KV_TOKENS:
        return StartupFailure(
            "kv",
            "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. "
            f"Current value: mem_fraction_static={cfg.mem_fraction_static}",
        )
    if cfg.kv_cache_dtype.startswith("fp8") and q.fp8_kv_oom:
        # The FP8 KV path on this arch keeps a bf16 staging copy of the pool (field report: OOM).
        return StartupFailure("kv", _oom(mem.kv_pool_gib * 2, gpu, free_gib=mem.free_gib))
    if cfg.cuda_graph and q.cuda_graph_segfault:
        return StartupFailure("graph", "", segfault=True)
    if cfg.cuda_graph and mem.free_gib < 0.25:
        return StartupFailure(
            "graph",
            "Exception: Capture cuda graph failed: CUDA out of memory. Possible solutions: "
            "1. set --mem-fraction-static to a smaller value (e.g., 0.8 or 0.7) "
            "2. set --cuda-graph-max-bs to a smaller value (e.g., 16) 3. disable torch compile "
            "4. disable CUDA graph by --disable-cuda-graph.",
        )
    return None


def _oom(alloc_gib: float, gpu: GpuProfile, *, free_gib: float) -> str:
    """PyTorch's message: what was asked, and what was free at that moment (the shortfall is the difference)."""
    free = max(0.0, free_gib)
    return (
        f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {alloc_gib:.2f} GiB. GPU 0 has a total "
        f"capacity of {gpu.mem_gib:.2f} GiB of which {free:.2f} GiB is free."
    )


class LoadFailures:
    """Failures that only show under load; called with every batch before it runs."""

    def __init__(
        self, cfg: SimConfig, gpu: GpuProfile, model: ModelProfile, mem: MemoryPlan, inject: tuple[str, ...]
    ) -> None:
        self.cfg, self.gpu, self.model, self.mem, self.inject = cfg, gpu, model, mem, inject
        self.hang = False

    def check(self, batch: Batch) -> bool:
        """Kill the server if this batch triggers a failure; return True if it hangs the server."""
        q, cfg = self.gpu.quirks, self.cfg
        loaded = batch.requests >= UNDER_LOAD
        if loaded and ("hang-under-load" in self.inject or (cfg.two_batch_overlap and q.tbo_hangs)):
            # A real hang prints nothing: the scheduler waits forever inside a kernel or a collective.
            self.hang = True
            return True
        if loaded and "crash-under-load" in self.inject:
            scheduler_exception("RuntimeError: CUDA error: an illegal memory access was encountered")
        if batch.extend and batch.decode_ctx and cfg.mixed_chunk and q.mixed_chunk_crash:
            scheduler_exception(
                "RuntimeError: CUDA error: an illegal memory access was encountered "
                "(mixed chunk with the triton extend kernel)"
            )
        need = perfmodel.activation_gib(batch.tokens, self.model)
        if need > self.mem.free_gib:
            scheduler_exception(_oom(need, self.gpu, free_gib=self.mem.free_gib))
        return False


_TRACEBACK = (
    "Traceback (most recent call last):",
    '  File "/sgl-workspace/sglang/python/sglang/srt/managers/scheduler.py", line 2975, in run_scheduler_process',
    "    scheduler.event_loop_overlap()",
    '  File "/sgl-workspace/sglang/python/sglang/srt/managers/scheduler.py", line 1008, in event_loop_overlap',
    "    batch_result = self.run_batch(batch)",
)
_INIT_TRACEBACK = (
    "Traceback (most recent call last):",
    '  File "/sgl-workspace/sglang/python/sglang/srt/managers/scheduler.py", line 2960, in run_scheduler_process',
    "    scheduler = Scheduler(server_args, port_args, gpu_id, tp_rank, moe_ep_rank, pp_rank, dp_rank)",
    '  File "/sgl-workspace/sglang/python/sglang/srt/model_executor/model_runner.py", line 412, in initialize',
    "    self.init_memory_pool(min_per_gpu_memory, server_args.max_running_requests)",
)


def scheduler_exception(exception: str, *, at_init: bool = False) -> None:
    """The scheduler dies of an exception: traceback, SIGQUIT to the parent, tree SIGKILLed."""
    lines = [
        "Scheduler hit an exception: " + _TRACEBACK[0],
        *(_INIT_TRACEBACK if at_init else _TRACEBACK)[1:],
    ]
    for line in [*lines, exception]:
        log(line, stamp=line is lines[0])
    log("Received sigquit from a child process. It usually means the child failed.")
    kill_tree()


def scheduler_segfault() -> None:
    """A real scheduler child process dies of SIGSEGV; the parent reports it and kills its tree."""
    sys.stderr.flush()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the "scheduler_0" child: crash for real, as a bad kernel launch does
        import ctypes
        import faulthandler

        faulthandler.enable()
        ctypes.string_at(0)
        os._exit(1)  # not reached
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    log(f"Subprocess scheduler_0 crashed with exit code {code}")
    kill_tree()


def kill_tree() -> None:
    """SGLang's ``kill_process_tree(include_parent=True)``: our children are gone, SIGKILL ourselves."""
    sys.stderr.flush()
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
