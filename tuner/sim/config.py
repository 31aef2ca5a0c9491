"""The simulated server's resolved configuration: SGLang flags after defaults, as typed values.

``resolve()`` turns the parsed command line into a :class:`SimConfig`, applying SGLang's own
defaulting rules (auto attention backend per GPU, AWQ checkpoints switching to awq_marlin,
auto mem-fraction, chunked-prefill size by GPU memory). Everything downstream — memory plan,
step-time model, failure plan, ``/server_info`` — reads this one value.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from tuner.sim.profiles import GpuProfile, ModelProfile


@dataclass(frozen=True)
class SimOptions:
    """Options of the simulator itself (``--sim-*``), never SGLang's."""

    sglang_version: str
    gpu: str
    model: str
    seed: int
    noise: float  # relative std of the run-to-run multiplicative noise
    startup_scale: float  # multiplies every modelled start-up duration
    inject: tuple[str, ...]
    bandwidth_tbs: float | None = None  # overrides the GPU profile's bandwidth (what-if studies)


@dataclass(frozen=True)
class SimConfig:
    """SGLang's launch configuration after defaults (what ``/server_info`` reports)."""

    model_path: str
    served_model_name: str
    host: str
    port: int
    attention_backend: str
    sampling_backend: str
    quantization: str  # the kernel actually used: awq, awq_marlin, none, ...
    kv_cache_dtype: str
    mem_fraction_static: float
    max_total_tokens: int | None  # the flag; the pool size is in the memory plan
    max_running_requests: int | None
    max_prefill_tokens: int
    chunked_prefill_size: int  # -1: no chunking
    schedule_policy: str
    schedule_conservativeness: float
    num_continuous_decode_steps: int
    radix_cache: bool
    mixed_chunk: bool
    two_batch_overlap: bool
    hierarchical_cache: bool
    triton_kv_splits: int
    triton_reduce_fp32: bool
    torch_compile: bool
    torch_compile_max_bs: int
    cuda_graph: bool
    cuda_graph_max_bs: int
    cuda_graph_bs: tuple[int, ...]  # explicit capture list (empty: SGLang's default sizes up to max)
    allow_auto_truncate: bool
    enable_metrics: bool
    skip_warmup: bool
    incremental_streaming: bool
    context_length: int
    tp_size: int
    custom_all_reduce: bool
    random_seed: int
    watchdog_timeout: float
    decode_log_interval: int

    def as_server_args(self) -> dict[str, Any]:
        return asdict(self)


def _get(ns: argparse.Namespace, name: str, default: Any = None) -> Any:
    value = getattr(ns, name.replace("-", "_"), None)
    return default if value is None else value


def auto_mem_fraction(gpu: GpuProfile) -> float:
    """SGLang's automatic static fraction: leave the reserved memory plus activation headroom free."""
    headroom_gib = gpu.reserved_gib + 0.06 * gpu.mem_gib
    return round(min(0.9, 1.0 - headroom_gib / gpu.mem_gib), 3)


def resolve(ns: argparse.Namespace, gpu: GpuProfile, model: ModelProfile) -> SimConfig:
    """Apply SGLang's defaults to the parsed flags (see the module docstring)."""
    # sm_120 and sm_90 both auto-pick flashinfer in 0.5.x (facts/sglang.md); older versions too.
    attention = _get(ns, "attention-backend") or (
        "triton" if _get(ns, "disable-flashinfer", False) else "flashinfer"
    )
    sampling = _get(ns, "sampling-backend") or (
        "flashinfer" if gpu.quirks.flashinfer_supported else "pytorch"
    )
    if _get(ns, "disable-flashinfer-sampling", False):
        sampling = "pytorch"
    quant = _get(ns, "quantization")
    if quant is None:
        # AWQ checkpoints auto-switch to the marlin kernels unless `awq` is explicit (facts/sglang.md).
        quant = "awq_marlin" if model.quant == "awq" else "none"
    graph_disabled = (
        bool(_get(ns, "disable-cuda-graph", False)) or _get(ns, "cuda-graph-backend-decode") == "disabled"
    )
    graph_bs_list = _get(ns, "cuda-graph-bs-decode") or _get(ns, "cuda-graph-bs")
    graph_max_bs = _get(ns, "cuda-graph-max-bs-decode") or _get(ns, "cuda-graph-max-bs")
    if graph_max_bs is None:
        graph_max_bs = max(graph_bs_list) if graph_bs_list else (24 if gpu.mem_gib < 40 else 160)
    mem_fraction = _get(ns, "mem-fraction-static") or auto_mem_fraction(gpu)
    chunked = _get(ns, "chunked-prefill-size")
    if chunked is None:
        chunked = 2048 if gpu.mem_gib < 40 else 8192
    context = _get(ns, "context-length") or model.context_len
    return SimConfig(
        model_path=_get(ns, "model-path", model.hf_id),
        served_model_name=_get(ns, "served-model-name") or _get(ns, "model-path", model.hf_id),
        host=_get(ns, "host", "127.0.0.1"),
        port=_get(ns, "port", 30000),
        attention_backend=attention,
        sampling_backend=sampling,
        quantization=quant,
        kv_cache_dtype=_get(ns, "kv-cache-dtype", "auto"),
        mem_fraction_static=float(mem_fraction),
        max_total_tokens=_get(ns, "max-total-tokens"),
        max_running_requests=_get(ns, "max-running-requests"),
        max_prefill_tokens=_get(ns, "max-prefill-tokens", 16384),
        chunked_prefill_size=int(chunked),
        schedule_policy=_get(ns, "schedule-policy", "fcfs"),
        schedule_conservativeness=_get(ns, "schedule-conservativeness", 1.0),
        num_continuous_decode_steps=max(1, _get(ns, "num-continuous-decode-steps", 1)),
        radix_cache=not _get(ns, "disable-radix-cache", False),
        mixed_chunk=bool(_get(ns, "enable-mixed-chunk", False)),
        two_batch_overlap=bool(_get(ns, "enable-two-batch-overlap", False)),
        hierarchical_cache=bool(_get(ns, "enable-hierarchical-cache", False)),
        triton_kv_splits=max(1, _get(ns, "triton-attention-num-kv-splits", 8)),
        triton_reduce_fp32=bool(_get(ns, "triton-attention-reduce-in-fp32", False)),
        torch_compile=bool(_get(ns, "enable-torch-compile", False)),
        torch_compile_max_bs=_get(ns, "torch-compile-max-bs", 32),
        cuda_graph=not graph_disabled,
        cuda_graph_max_bs=int(graph_max_bs),
        cuda_graph_bs=tuple(graph_bs_list or ()),
        allow_auto_truncate=bool(_get(ns, "allow-auto-truncate", False)),
        enable_metrics=bool(_get(ns, "enable-metrics", False)),
        skip_warmup=bool(_get(ns, "skip-server-warmup", False)),
        # --stream-output was an alias of --incremental-streaming-output until it was removed.
        incremental_streaming=bool(_get(ns, "incremental-streaming-output", False))
        or bool(_get(ns, "stream-output", False)),
        context_length=int(context),
        tp_size=_get(ns, "tp-size", 1),
        custom_all_reduce=not _get(ns, "disable-custom-all-reduce", False),
        random_seed=_get(ns, "random-seed", 42),
        watchdog_timeout=float(_get(ns, "watchdog-timeout", 300.0)),
        decode_log_interval=max(1, _get(ns, "decode-log-interval", 40)),
    )
