"""The simulator's performance and memory model: every formula and constant in one place.

A forward pass (one scheduler step) costs GPU time and CPU time:

* GPU: the linear layers read every weight once per step and do ``2 × params`` FLOPs per token
  (roofline: the larger of the two), attention reads each running request's KV cache (decode)
  or does ``4 × layers × heads × head_dim × new × (prefix + new/2)`` FLOPs (prefill), plus the
  small element-wise kernels and sampling.
* CPU: launching the kernels. Eager PyTorch pays per kernel per layer; a CUDA graph replays
  the whole decode step for one launch; torch.compile (which SGLang applies inside graph
  capture, for batch sizes up to ``--torch-compile-max-bs``) fuses element-wise kernels.

Eager kernels overlap with their launches only partly (``OVERLAP_LEAK``). Each scheduler
pass adds its own CPU cost (batch building, result processing, detokenisation); continuous
decode steps share one pass between several steps.

Memory: ``mem-fraction-static × GPU memory`` is the static pool; weights come out of it and
the rest is the KV pool (bounded by ``--max-total-tokens``). CUDA graphs, the marlin
workspace, the hierarchical cache's staging buffers and activations live outside the pool.

Constants say where they come from: a datasheet or config (in ``profiles.py``), a published
kernel characteristic, or "fitted": chosen so that the field report's Baseline lands on its
measured figures (see ``docs/simulator.md``, "Calibration").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.sim.config import SimConfig
from tuner.sim.profiles import GIB, GpuProfile, ModelProfile

# --- linear layers --------------------------------------------------------------------------------
# Fraction of peak memory bandwidth the weight-reading GEMM/GEMV kernels reach at small batch.
WEIGHT_READ_EFF = {
    # SGLang's plain `awq` path dequantises in a Triton GEMM that is far from the bandwidth bound at
    # batch 1; fitted: with the eager overhead below it gives the report's ~85 ms per output token.
    "awq": 0.155,
    # Marlin reaches close to the 4-bit ideal up to batch 16-32 (Frantar et al., "MARLIN", 2024).
    "awq_marlin": 0.80,
    "marlin": 0.80,
    "gptq": 0.20,
    "gptq_marlin": 0.80,
    "none": 0.85,  # cuBLAS bf16 GEMV, typical 80-90 % of peak bandwidth
    "fp8": 0.85,
}
# Fraction of dense BF16 tensor throughput the GEMMs reach when compute-bound (prefill).
GEMM_EFF = {
    "awq": 0.31,  # fitted with WEIGHT_READ_EFF["awq"]: report Baseline TTFT for 256-token prompts
    "awq_marlin": 0.50,
    "marlin": 0.50,
    "gptq": 0.33,
    "gptq_marlin": 0.50,
    "none": 0.65,
    "fp8": 0.70,  # fp8 GEMM on bf16 peak numbers: faster math, same model
}

# --- attention ------------------------------------------------------------------------------------
# Decode attention: fraction of bandwidth once the GPU is fully occupied.
DECODE_ATTN_EFF = {
    "triton": 0.80,
    "flashinfer": 0.85,
    "fa3": 0.88,
    "fa4": 0.88,
    "trtllm_mha": 0.88,
    "flex_attention": 0.50,
    "torch_native": 0.12,  # SDPA per request in a Python loop
}
# Prefill attention: fraction of dense BF16 tensor throughput.
PREFILL_ATTN_EFF = {
    "triton": 0.35,
    "flashinfer": 0.55,
    "fa3": 0.65,
    "fa4": 0.60,
    "trtllm_mha": 0.60,
    "flex_attention": 0.30,
    "torch_native": 0.10,
}
TRITON_TILE = 64  # tokens per inner tile of SGLang's triton decode kernel (BLOCK_N)
BLOCKS_PER_SM = 2  # resident blocks per SM needed to saturate memory bandwidth
FP32_REDUCE_SLOWDOWN = 1.10  # fp32 partial sums: wider stores and slower math in stage 1
TORCH_NATIVE_PER_REQ_US = 40.0  # Python loop over requests, per layer

# --- small kernels, sampling, CPU ------------------------------------------------------------------
ELEMENTWISE_KERNELS_PER_LAYER = 8  # norms, rope, activation, residual adds, KV store
ELEMENTWISE_US = 3.0  # GPU time of one small kernel at small batch
COMPILE_FUSION = 0.4  # torch.compile leaves this fraction of element-wise time (fusion)
KERNELS_PER_LAYER_EAGER = 22  # launches per decoder layer in eager mode (incl. AWQ dequant, attention)
PYTHON_PER_LAYER_US = 420.0  # fitted: SGLang eager module code per layer (report Baseline)
OVERLAP_LEAK = 0.15  # share of the smaller of GPU/CPU time not hidden when eager launches overlap
GRAPH_REPLAY_US = 150.0  # one cudaGraphLaunch plus input copies
SAMPLING = {  # (fixed µs, µs per request): pytorch sorts the full vocabulary; flashinfer does not
    "pytorch": (900.0, 60.0),
    "flashinfer": (150.0, 8.0),
}
# Scheduler CPU per pass: batch building, result processing, incremental detokenisation and one
# stream message per request. Eager forwards keep the CPU busy launching kernels, so it adds up;
# behind a CUDA graph replay the overlap scheduler hides it (SGLang's default overlap schedule).
PASS_US = 4000.0
PASS_PER_REQ_US = 150.0
TBO_OVERHEAD = 1.03  # two-batch overlap on one dense GPU only splits the batch (no all-to-all to hide)

# --- memory --------------------------------------------------------------------------------------
CONTEXT_GIB = 0.45  # CUDA context + cuBLAS workspace, as NVML shows it
GRAPH_GIB_PER_BS = 0.012  # graph pool per captured batch size (outputs, workspaces)
COMPILE_GIB = 0.2  # inductor buffers
HICACHE_GPU_GIB = 1.5  # hierarchical cache staging buffers on the GPU
ACT_BYTES_PER_TOKEN_PER_HIDDEN = 24  # activations of one prefill token: ~12 bf16 hidden-size tensors
MIN_KV_TOKENS = 128  # SGLang refuses to start with a smaller pool


@dataclass(frozen=True)
class MemoryPlan:
    """Where the GPU's memory goes for one configuration (GiB unless named otherwise)."""

    total_gib: float
    weights_gib: float
    static_gib: float
    kv_pool_tokens: int
    kv_bytes_per_token: int
    kv_pool_gib: float
    graph_gib: float
    compile_gib: float
    marlin_gib: float
    hicache_gib: float
    outside_pool_gib: float  # what lives outside the static pool (context, graphs, marlin, compile)
    free_gib: float  # what is left for activations (negative: does not fit)

    def used_mib(self, activation_gib: float) -> float:
        """GPU memory NVML would show: weights, KV pool, graphs, workspaces, activations seen so far."""
        used = (
            CONTEXT_GIB
            + self.weights_gib
            + self.kv_pool_gib
            + self.hicache_gib
            + self.graph_gib
            + self.compile_gib
            + self.marlin_gib
            + activation_gib
        )
        return used * 1024


def kv_bytes_per_token(cfg: SimConfig, model: ModelProfile) -> int:
    """KV bytes per token: bf16 by default, half with an fp8 KV cache, a quarter with nvfp4."""
    base = model.kv_bytes_per_token
    if cfg.kv_cache_dtype.startswith("fp8") or cfg.kv_cache_dtype == "mxfp8":
        return base // 2
    if cfg.kv_cache_dtype == "nvfp4":
        return base // 4
    return base


def captured_batch_sizes(cfg: SimConfig) -> tuple[int, ...]:
    """Batch sizes graph capture records: the flag's list, or SGLang's 1, 2, 4, 8, then steps of 8."""
    if not cfg.cuda_graph:
        return ()
    if cfg.cuda_graph_bs:
        return tuple(sorted(set(cfg.cuda_graph_bs)))
    m = cfg.cuda_graph_max_bs
    return tuple(b for b in (1, 2, 4) if b <= m) + tuple(range(8, m + 1, 8))


def memory_plan(cfg: SimConfig, gpu: GpuProfile, model: ModelProfile) -> MemoryPlan:
    """Split the GPU's memory as SGLang does at start-up (see the module docstring)."""
    total = gpu.mem_gib
    static = cfg.mem_fraction_static * total
    weights = model.weight_gib
    hicache = HICACHE_GPU_GIB if cfg.hierarchical_cache else 0.0
    kvb = kv_bytes_per_token(cfg, model)
    pool_tokens = int(max(0.0, static - weights - hicache) * GIB // kvb)
    if cfg.max_total_tokens is not None:
        pool_tokens = min(pool_tokens, cfg.max_total_tokens)
    graph = len(captured_batch_sizes(cfg)) * GRAPH_GIB_PER_BS * (model.hidden / 4096)
    compile_ = COMPILE_GIB if cfg.torch_compile and cfg.cuda_graph else 0.0
    marlin = (
        gpu.quirks.marlin_extra_gib if cfg.quantization in ("awq_marlin", "gptq_marlin", "marlin") else 0.0
    )
    marlin *= weights / 18.4 if model.quant == "awq" else 0.0
    outside = CONTEXT_GIB + gpu.reserved_gib + graph + compile_ + marlin
    return MemoryPlan(
        total_gib=total,
        weights_gib=weights,
        static_gib=static,
        kv_pool_tokens=pool_tokens,
        kv_bytes_per_token=kvb,
        kv_pool_gib=pool_tokens * kvb / GIB,
        graph_gib=graph,
        compile_gib=compile_,
        marlin_gib=marlin,
        hicache_gib=hicache,
        outside_pool_gib=outside,
        free_gib=total - static - outside,
    )


def activation_gib(tokens: int, model: ModelProfile) -> float:
    """Activation memory of a forward over ``tokens`` tokens (prefill chunk or decode batch)."""
    return tokens * model.hidden * ACT_BYTES_PER_TOKEN_PER_HIDDEN / GIB


@dataclass(frozen=True)
class Batch:
    """What one forward pass computes.

    ``decode_ctx``: the context length of each request decoding one token.
    ``extend``: ``(new_tokens, prefix_tokens)`` of each request being prefilled (a chunk of it).
    """

    decode_ctx: Sequence[int] = ()
    extend: Sequence[tuple[int, int]] = ()

    @property
    def requests(self) -> int:
        return len(self.decode_ctx) + len(self.extend)

    @property
    def tokens(self) -> int:
        return len(self.decode_ctx) + sum(n for n, _ in self.extend)


def _linear_s(cfg: SimConfig, gpu: GpuProfile, model: ModelProfile, tokens: int) -> float:
    read = model.weight_bytes / (gpu.bandwidth_tbs * 1e12 * WEIGHT_READ_EFF.get(cfg.quantization, 0.6))
    compute = (
        2 * model.params_b * 1e9 * tokens / (gpu.bf16_tflops * 1e12 * GEMM_EFF.get(cfg.quantization, 0.5))
    )
    return max(read, compute)


def _decode_attention_s(cfg: SimConfig, gpu: GpuProfile, model: ModelProfile, ctx: Sequence[int]) -> float:
    if not ctx:
        return 0.0
    kvb_layer = kv_bytes_per_token(cfg, model) / model.layers
    bw = gpu.bandwidth_tbs * 1e12
    backend = cfg.attention_backend
    if backend != "triton":
        t = sum(ctx) * kvb_layer / (bw * DECODE_ATTN_EFF.get(backend, 0.5))
        if backend == "torch_native":
            t += len(ctx) * TORCH_NATIVE_PER_REQ_US * 1e-6
        return t * model.layers
    # SGLang's triton decode kernel: grid = requests × KV heads × splits; each split walks its slice
    # of the context in tiles of TRITON_TILE tokens, then stage 2 reduces the partial results.
    splits = cfg.triton_kv_splits
    blocks = len(ctx) * model.kv_heads * splits
    occupancy = min(1.0, blocks / (BLOCKS_PER_SM * gpu.sms))
    tiles_read = sum(splits * TRITON_TILE * math.ceil(c / (splits * TRITON_TILE)) for c in ctx)
    stage1 = tiles_read * kvb_layer / (bw * DECODE_ATTN_EFF["triton"] * occupancy)
    if cfg.triton_reduce_fp32:
        stage1 *= FP32_REDUCE_SLOWDOWN
    partial_bytes = 4 if cfg.triton_reduce_fp32 else 2
    stage2 = 2 * len(ctx) * model.heads * splits * (model.head_dim + 1) * partial_bytes / bw + 2e-6
    return (stage1 + stage2) * model.layers


def _prefill_attention_s(
    cfg: SimConfig, gpu: GpuProfile, model: ModelProfile, ext: Sequence[tuple[int, int]]
) -> float:
    flops = sum(4 * model.layers * model.heads * model.head_dim * n * (p + n / 2) for n, p in ext)
    return flops / (gpu.bf16_tflops * 1e12 * PREFILL_ATTN_EFF.get(cfg.attention_backend, 0.3))


def uses_graph(cfg: SimConfig, batch: Batch) -> bool:
    """A pure decode batch no larger than the largest captured size replays a CUDA graph."""
    return cfg.cuda_graph and not batch.extend and batch.requests <= cfg.cuda_graph_max_bs


def forward_s(
    cfg: SimConfig, gpu: GpuProfile, model: ModelProfile, batch: Batch, *, pass_cpu_s: float = 0.0
) -> float:
    """Seconds one forward pass over ``batch`` takes, GPU and CPU combined.

    ``pass_cpu_s`` is the scheduler's own CPU work for the pass (:func:`pass_overhead_s`), added
    to an eager forward and hidden behind a graph replay as far as the GPU time allows.
    """
    if batch.requests == 0:
        return 0.0
    graph = uses_graph(cfg, batch)
    compiled = graph and cfg.torch_compile and batch.requests <= cfg.torch_compile_max_bs
    elementwise = model.layers * ELEMENTWISE_KERNELS_PER_LAYER * ELEMENTWISE_US * 1e-6
    elementwise *= 1.0 + batch.tokens / 4096  # grows once the batch fills the GPU
    if compiled:
        elementwise *= COMPILE_FUSION
    gpu_s = (
        _linear_s(cfg, gpu, model, batch.tokens)
        + _decode_attention_s(cfg, gpu, model, batch.decode_ctx)
        + _prefill_attention_s(cfg, gpu, model, batch.extend)
        + elementwise
    )
    fixed_us, per_req_us = SAMPLING.get(cfg.sampling_backend, SAMPLING["pytorch"])
    gpu_s += (fixed_us + per_req_us * batch.requests) * 1e-6
    if graph:
        cpu_s = GRAPH_REPLAY_US * 1e-6
    else:
        cpu_s = model.layers * (KERNELS_PER_LAYER_EAGER * gpu.launch_us + PYTHON_PER_LAYER_US) * 1e-6
    t = max(gpu_s, cpu_s) + OVERLAP_LEAK * min(gpu_s, cpu_s)
    t = max(t, pass_cpu_s + cpu_s) if graph else t + pass_cpu_s
    if cfg.two_batch_overlap:
        t *= TBO_OVERHEAD
    return t


def pass_overhead_s(requests: int) -> float:
    """Scheduler CPU per pass (batch building, result processing, detokenisation)."""
    return (PASS_US + PASS_PER_REQ_US * requests) * 1e-6


def decode_bound_s(gpu: GpuProfile, model: ModelProfile) -> float:
    """The bandwidth bound of one decode step: every weight read once at full bandwidth."""
    return model.weight_bytes / (gpu.bandwidth_tbs * 1e12)
