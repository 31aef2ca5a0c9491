"""GPU and model profiles of the simulator, as data.

Every figure names its source. GPU figures come from the vendors' datasheets; model figures
from the checkpoints' ``config.json`` on the Hugging Face hub. Failure behaviour is data too
(``GpuProfile.quirks``), so the same flags crash on an RTX 5090 and run on an H100 — the
simulator reads these tables, it never branches on a GPU's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuner.core.errors import ConfigError

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class GpuQuirks:
    """What goes wrong on this GPU, and how (see ``tuner/sim/failures.py``)."""

    cuda_graph_segfault: bool = False  # graph capture kills the scheduler with SIGSEGV (sm_120, report)
    flashinfer_supported: bool = True  # flashinfer kernels exist for this arch
    fp8_kv_oom: bool = False  # FP8 KV cache path allocates an extra bf16 copy -> CUDA OOM (report)
    # GPU memory awq_marlin holds outside the static pool: its workspace (~0.25 GiB) everywhere; on sm_120
    # the report saw marlin run out of memory where plain awq fit, modelled as a 6 GiB unpacked copy.
    marlin_extra_gib: float = 0.0
    tbo_hangs: bool = False  # two-batch-overlap deadlocks under load (report: "failed")
    mixed_chunk_crash: bool = False  # mixed chunk + triton extend crashes the scheduler (report)


@dataclass(frozen=True)
class GpuProfile:
    """One GPU model. ``mem_gib`` is what ``torch.cuda.mem_get_info`` reports as total."""

    name: str
    arch: str  # sm_XY
    mem_gib: float
    bandwidth_tbs: float  # HBM/GDDR bandwidth, TB/s (datasheet)
    bf16_tflops: float  # dense tensor-core BF16 with FP32 accumulate, TFLOP/s (datasheet)
    sms: int  # streaming multiprocessors (datasheet): bounds decode-attention parallelism
    launch_us: float  # CPU cost of one eager kernel launch incl. PyTorch dispatch, µs (measured class)
    reserved_gib: float  # CUDA context + NCCL + allocator slack SGLang leaves outside the static pool
    source: str
    quirks: GpuQuirks = field(default_factory=GpuQuirks)

    @property
    def mem_bytes(self) -> float:
        return self.mem_gib * GIB


@dataclass(frozen=True)
class ModelProfile:
    """One model checkpoint: shapes from ``config.json``, weight bytes from the safetensors total."""

    name: str
    hf_id: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    params_b: float  # parameters, billions
    weight_gib: float  # bytes of the checkpoint as loaded on the GPU
    quant: str  # "awq" (4-bit), "none" (bf16)
    vocab: int
    context_len: int
    source: str

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer, bf16: 2 × layers × kv_heads × head_dim × 2 bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2

    @property
    def weight_bytes(self) -> float:
        return self.weight_gib * GIB

    @property
    def architecture(self) -> str:
        """``config.json``'s ``architectures[0]``."""
        if "qwen3" in self.name:
            return "Qwen3ForCausalLM"
        if "llama" in self.name:
            return "LlamaForCausalLM"
        return "Qwen2ForCausalLM"

    @property
    def model_type(self) -> str:
        """``config.json``'s ``model_type``."""
        return {"Qwen3ForCausalLM": "qwen3", "LlamaForCausalLM": "llama"}.get(self.architecture, "qwen2")


GPUS: dict[str, GpuProfile] = {
    "rtx5090": GpuProfile(
        name="NVIDIA GeForce RTX 5090",
        arch="sm_120",
        mem_gib=31.4,
        bandwidth_tbs=1.792,
        bf16_tflops=209.5,
        sms=170,
        launch_us=9.0,
        reserved_gib=1.2,
        source="NVIDIA RTX Blackwell GPU architecture whitepaper (GB202: 32 GB GDDR7, 1792 GB/s, "
        "209.5 dense FP16/BF16 tensor TFLOPS, 170 SMs); failure quirks from the field report",
        quirks=GpuQuirks(
            cuda_graph_segfault=True,
            flashinfer_supported=False,
            fp8_kv_oom=True,
            marlin_extra_gib=6.0,
            tbo_hangs=True,
            mixed_chunk_crash=True,
        ),
    ),
    "h100": GpuProfile(
        name="NVIDIA H100 80GB HBM3",
        arch="sm_90",
        mem_gib=79.1,
        bandwidth_tbs=3.35,
        bf16_tflops=989.0,
        sms=132,
        launch_us=6.0,
        reserved_gib=2.0,
        source="NVIDIA H100 Tensor Core GPU datasheet (SXM5: 80 GB HBM3, 3.35 TB/s, 989 dense BF16 TFLOPS, 132 SMs)",
        quirks=GpuQuirks(marlin_extra_gib=0.25),
    ),
    "a100": GpuProfile(
        name="NVIDIA A100-SXM4-80GB",
        arch="sm_80",
        mem_gib=79.2,
        bandwidth_tbs=2.039,
        bf16_tflops=312.0,
        sms=108,
        launch_us=7.0,
        reserved_gib=2.0,
        source="NVIDIA A100 datasheet (SXM4 80 GB: 2039 GB/s HBM2e, 312 dense BF16 TFLOPS, 108 SMs)",
        quirks=GpuQuirks(marlin_extra_gib=0.25),
    ),
    "l40s": GpuProfile(
        name="NVIDIA L40S",
        arch="sm_89",
        mem_gib=44.4,
        bandwidth_tbs=0.864,
        bf16_tflops=362.0,
        sms=142,
        launch_us=7.0,
        reserved_gib=1.5,
        source="NVIDIA L40S datasheet (48 GB GDDR6, 864 GB/s, 362 dense BF16 TFLOPS, 142 SMs)",
        quirks=GpuQuirks(marlin_extra_gib=0.25),
    ),
}

MODELS: dict[str, ModelProfile] = {
    "qwen3-32b-awq": ModelProfile(
        name="qwen3-32b-awq",
        hf_id="Qwen/Qwen3-32B-AWQ",
        layers=64,
        hidden=5120,
        heads=64,
        kv_heads=8,
        head_dim=128,
        params_b=32.8,
        weight_gib=18.4,
        quant="awq",
        vocab=151936,
        context_len=40960,
        source="Qwen/Qwen3-32B-AWQ config.json (64 layers, hidden 5120, 64 heads, 8 KV heads, head_dim 128, "
        "max_position_embeddings 40960); 19.7 GB of safetensors (4-bit AWQ, group 128, bf16 embeddings)",
    ),
    "llama-3.1-8b": ModelProfile(
        name="llama-3.1-8b",
        hf_id="meta-llama/Llama-3.1-8B-Instruct",
        layers=32,
        hidden=4096,
        heads=32,
        kv_heads=8,
        head_dim=128,
        params_b=8.03,
        weight_gib=14.96,
        quant="none",
        vocab=128256,
        context_len=131072,
        source="meta-llama/Llama-3.1-8B-Instruct config.json (32 layers, hidden 4096, 32 heads, 8 KV heads); "
        "16.06 GB of bf16 safetensors",
    ),
    "qwen2.5-0.5b": ModelProfile(
        name="qwen2.5-0.5b",
        hf_id="Qwen/Qwen2.5-0.5B-Instruct",
        layers=24,
        hidden=896,
        heads=14,
        kv_heads=2,
        head_dim=64,
        params_b=0.494,
        weight_gib=0.92,
        quant="none",
        vocab=151936,
        context_len=32768,
        source="Qwen/Qwen2.5-0.5B-Instruct config.json (24 layers, hidden 896, 14 heads, 2 KV heads); "
        "0.99 GB of bf16 safetensors",
    ),
    # The random-weight model the real SGLang CPU server here serves (docs/sglang-cpu.md): with this
    # profile the simulator and the real server agree on context, vocabulary and prompt lengths
    # (tests/integration/test_conformance.py runs both with the same flags).
    "sglang-tiny-llama": ModelProfile(
        name="sglang-tiny-llama",
        hf_id="sglang-tiny-llama",
        layers=4,
        hidden=256,
        heads=4,
        kv_heads=2,
        head_dim=64,
        params_b=0.0073,
        weight_gib=0.0278,
        quant="none",
        vocab=8192,
        context_len=4096,
        source="tuner/models/sglang_tiny.py (4 layers, hidden 256, 4 heads, 2 KV heads, vocab 8192, "
        "max_position_embeddings 4096); 29.9 MB of float32 safetensors",
    ),
}


def gpu_profile(name: str) -> GpuProfile:
    """The GPU profile ``name`` (``--sim-gpu``)."""
    try:
        return GPUS[name]
    except KeyError:
        raise ConfigError(f"unknown GPU {name!r}; known: {', '.join(GPUS)}", field="--sim-gpu") from None


def model_profile(name: str) -> ModelProfile:
    """The model profile ``name`` (``--sim-model``)."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; known: {', '.join(MODELS)}", field="--sim-model"
        ) from None
