"""SGLang's flags by version: the one table the tuner, the space checks and the simulator share.

Sources: the released sglang wheels 0.3.6 … 0.5.23 and ``shared/facts/sglang.md`` (November 2026).
``since``/``until`` bounds marked "approx." are the first profile we know to have/lack the flag, not
the exact release it changed in. The simulator (``tuner.sim``) builds its argument parser from this
table, so the simulated server accepts and rejects exactly what the tuner believes SGLang does; the
real parser check (``tests/integration/test_sglang_parser.py``) keeps it honest against the wheel.
The rest of what the tuner knows about SGLang (launch, signatures, repairs) is ``tuner.engines.sglang``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from packaging.version import Version

from tuner.core.errors import ConfigError
from tuner.engines.base import FlagSpec

# Version profiles the tuner (and the simulator) know. Choose the one of the deployed image.
KNOWN_VERSIONS: tuple[str, ...] = ("0.3.6", "0.4.10", "0.5.14", "0.5.23")
DEFAULT_VERSION = "0.5.23"

_POLICIES_OLD = ("lpm", "random", "fcfs", "dfs-weight")
_POLICIES_NEW = (*_POLICIES_OLD, "lof", "priority", "routing-key", "hrrn", "shortest-prefill-first")
_ATTN_03 = ("triton", "flashinfer")
_ATTN_04 = ("triton", "flashinfer", "torch_native", "fa3", "flex_attention")
_ATTN_05 = (*_ATTN_04, "fa4", "trtllm_mha")
_KV_03 = ("auto", "fp8_e5m2")
_KV_04 = ("auto", "fp8_e5m2", "fp8_e4m3")
_KV_05 = (*_KV_04, "mxfp8", "bf16", "nvfp4")
_QUANT_OLD = ("awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "marlin", "bitsandbytes", "gguf")
_QUANT_05 = tuple(q for q in _QUANT_OLD if q != "marlin")  # 0.5.23's parser rejects plain "marlin"
_CUDA_GRAPH_BACKENDS = ("full", "breakable", "disabled")
# 0.5.23's --device is a free string; its help names these ("Defaults to auto-detection")
_DEVICES = ("cuda", "xpu", "hpu", "npu", "cpu", "musa")


def _s(name: str, **kw: object) -> FlagSpec:
    return FlagSpec(name=name, kind="switch", type=bool, **kw)  # type: ignore[arg-type]


def _v(name: str, typ: type = str, **kw: object) -> FlagSpec:
    return FlagSpec(name=name, kind="value", type=typ, **kw)  # type: ignore[arg-type]


# One row per flag and version range. Choices that changed across versions get one row per range.
_FLAGS: tuple[FlagSpec, ...] = (
    # --- model and server
    _v("model-path", help="model weights (HF id or path)"),
    _v("tokenizer-path", help="tokenizer (HF id or path; default: the model's)"),
    _v("host", help="address the HTTP server binds"),
    _v("port", int, help="port the HTTP server listens on"),
    _v("served-model-name", help="model name the OpenAI-compatible API reports"),
    _s("trust-remote-code", help="allow the model repository's own Python code"),
    _v(
        "dtype",
        choices=("auto", "half", "float16", "bfloat16", "float", "float32"),
        help="weights and activations dtype (auto: the model config's)",
    ),
    _v(
        "load-format",
        choices=("auto", "pt", "safetensors", "npcache", "dummy", "gguf", "bitsandbytes"),
        help="how the weights are read",
    ),
    _v("context-length", int, low=1, help="longest prompt + output in tokens (default: the model config's)"),
    _v(
        "quantization",
        choices=_QUANT_OLD,
        until="0.5.0",
        help="weight quantization kernel (awq_marlin/gptq_marlin: the Marlin kernels)",
    ),
    _v(
        "quantization",
        choices=_QUANT_05,
        since="0.5.0",
        help="weight quantization kernel (awq_marlin/gptq_marlin: the Marlin kernels)",
    ),  # approx.: first seen gone in 0.5.23
    _v(
        "device", choices=_DEVICES, since="0.4.0", help="device type to run on"
    ),  # approx.; 0.5.23's parser takes any string
    _v(
        "tp-size",
        int,
        low=1,
        aliases=("tensor-parallel-size",),
        help="tensor parallelism: GPUs one replica is split over",
    ),
    _v(
        "dp-size", int, low=1, aliases=("data-parallel-size",), help="data parallelism: replicas of the model"
    ),
    _v("random-seed", int, help="seed of the server's sampling"),
    _v("log-level", help="logging level of the server"),
    _v("api-key", help="key clients must send (Authorization: Bearer)"),
    _s("skip-tokenizer-init", help="no tokenizer: requests carry token ids"),
    _s("skip-server-warmup", since="0.4.0", help="start serving without the warm-up request"),  # approx.
    _v("decode-log-interval", int, help="decode steps between throughput log lines"),
    _v(
        "watchdog-timeout",
        float,
        low=0,
        low_open=True,
        help="seconds a stuck batch may run before the watchdog kills the server",
    ),
    _s("enable-metrics", help="Prometheus metrics on /metrics"),
    _s(
        "sleep-on-idle",
        since="0.4.7",
        help="the idle scheduler waits on its sockets (1 s poll) instead of spinning a CPU core",
    ),  # approx. (sgl-project/sglang#6026)
    _s(
        "allow-auto-truncate",
        since="0.4.0",
        help="cut prompts longer than the context instead of rejecting them",
    ),  # approx.
    # --- memory and scheduling
    _v(
        "mem-fraction-static",
        float,
        low=0,
        high=1,
        low_open=True,
        help="share of GPU memory for weights and the KV cache pool; the rest for activations and graphs",
    ),
    _v("max-running-requests", int, low=1, help="most requests decoded together"),
    _v(
        "max-total-tokens",
        int,
        low=1,
        help="KV pool size in tokens (default: what mem-fraction-static leaves)",
    ),
    _v("max-prefill-tokens", int, low=1, help="most prompt tokens in one prefill batch"),
    _v("chunked-prefill-size", int, help="prompt tokens per prefill chunk (-1: no chunking)"),
    _v(
        "schedule-policy",
        choices=_POLICIES_OLD,
        until="0.5.1",
        help="order the waiting requests are scheduled in (lpm: longest prefix match)",
    ),
    _v(
        "schedule-policy",
        choices=_POLICIES_NEW,
        since="0.5.1",
        help="order the waiting requests are scheduled in (lpm: longest prefix match)",
    ),
    _v(
        "schedule-conservativeness",
        float,
        low=0,
        high=100,
        low_open=True,
        help="how cautiously new requests are admitted (higher: fewer KV evictions)",
    ),
    _v(
        "num-continuous-decode-steps",
        int,
        low=1,
        help="decode steps run before the scheduler looks at new requests",
    ),
    _s("disable-radix-cache", help="no prefix (radix tree) cache"),
    _s("enable-mixed-chunk", help="mix prefill chunks and decodes in one batch"),
    _s(
        "enable-two-batch-overlap",
        since="0.4.7",
        help="overlap two micro-batches (communication and compute)",
    ),
    _s(
        "enable-hierarchical-cache",
        since="0.4.4",
        aliases=("enable-hicache",),
        help="a host-memory tier below the GPU KV cache",
    ),  # approx.
    _s("disable-overlap-schedule", help="no CPU scheduling overlapped with GPU work"),
    # --- kernels and backends
    _v("attention-backend", choices=_ATTN_03, until="0.4.0", help="attention kernels"),
    _v("attention-backend", choices=_ATTN_04, since="0.4.0", until="0.5.0", help="attention kernels"),
    _v("attention-backend", choices=_ATTN_05, since="0.5.0", help="attention kernels"),
    _v("sampling-backend", choices=("flashinfer", "pytorch"), help="sampling kernels"),
    _s("disable-flashinfer", until="0.4.0", help="no FlashInfer kernels"),
    _s("disable-flashinfer-sampling", until="0.4.0", help="no FlashInfer sampling kernels"),
    _v(
        "kv-cache-dtype",
        choices=_KV_03,
        until="0.4.0",
        help="KV cache dtype (auto: the model's; fp8_*: half the memory, lossy)",
    ),
    _v(
        "kv-cache-dtype",
        choices=_KV_04,
        since="0.4.0",
        until="0.5.0",
        help="KV cache dtype (auto: the model's; fp8_*: half the memory, lossy)",
    ),
    _v(
        "kv-cache-dtype",
        choices=_KV_05,
        since="0.5.0",
        help="KV cache dtype (auto: the model's; fp8_*: half the memory, lossy)",
    ),
    _v(
        "triton-attention-num-kv-splits",
        int,
        low=1,
        since="0.4.0",
        help="KV splits of the Triton decode attention kernel",
    ),  # approx.
    _s("triton-attention-reduce-in-fp32", help="reduce Triton attention in fp32"),
    _s("enable-torch-compile", help="compile the model with torch.compile"),
    _v("torch-compile-max-bs", int, low=1, help="largest batch size torch.compile compiles for"),
    _s("disable-custom-all-reduce", help="NCCL's all-reduce instead of SGLang's own"),
    # --- CUDA graphs: the flag set changed twice
    _s(
        "disable-cuda-graph",  # 0.5.15+ accepts it with a deprecation warning (see DEPRECATED)
        help="deprecated since 0.5.15: use --cuda-graph-backend-decode disabled "
        "--cuda-graph-backend-prefill disabled",
    ),
    _v("cuda-graph-max-bs", int, until="0.5.20", help="largest batch size captured in a CUDA graph"),
    FlagSpec(
        "cuda-graph-bs", kind="list", type=int, until="0.5.20", help="batch sizes captured in CUDA graphs"
    ),
    _v(
        "cuda-graph-max-bs-decode",
        int,
        since="0.5.15",
        help="largest decode batch size captured in a CUDA graph",
    ),
    FlagSpec(
        "cuda-graph-bs-decode",
        kind="list",
        type=int,
        since="0.5.15",
        help="decode batch sizes captured in CUDA graphs",
    ),
    _v(
        "cuda-graph-max-bs-prefill",
        int,
        since="0.5.15",
        help="largest prefill batch captured in a CUDA graph",
    ),
    FlagSpec(
        "cuda-graph-bs-prefill",
        kind="list",
        type=int,
        since="0.5.15",
        help="prefill batch sizes captured in CUDA graphs",
    ),
    _v(
        "cuda-graph-backend-decode",
        choices=_CUDA_GRAPH_BACKENDS,
        since="0.5.15",
        help="CUDA graphs for decode (disabled: none)",
    ),
    _v(
        "cuda-graph-backend-prefill",
        choices=_CUDA_GRAPH_BACKENDS,
        since="0.5.15",
        help="CUDA graphs for prefill (disabled: none)",
    ),  # approx.
    # --- streaming
    _v("stream-interval", int, low=1, help="tokens per streamed chunk (default 1)"),
    _s("stream-output", until="0.5.20", help="stream outputs as they are produced"),
    _s(
        "incremental-streaming-output", since="0.5.0", help="stream only the new text of each chunk"
    ),  # approx.
)

DEPRECATED: Mapping[str, tuple[str, str]] = {
    # flag: (since version, warning text the server prints). 0.5.23 still parses --disable-cuda-graph
    # (SGLang's DeprecatedStoreTrueAction) and logs this line (in bold yellow) at start-up; the tuner's
    # own CPU flags (CPU_FLAGS) use the two new flags instead.
    "disable-cuda-graph": (
        "0.5.15",
        "'--disable-cuda-graph' is deprecated and will be removed in a future release. "
        "Use '--cuda-graph-backend-{decode,prefill}=disabled' instead.",
    ),
}


def _in_range(spec: FlagSpec, version: Version) -> bool:
    if spec.since is not None and version < Version(spec.since):
        return False
    return not (spec.until is not None and version >= Version(spec.until))


def parse_version(version: str) -> Version:
    """Parse a version string, naming the known profiles when it is not one."""
    try:
        v = Version(version)
    except Exception as e:
        raise ConfigError(f"not a version: {version!r}; known: {', '.join(KNOWN_VERSIONS)}") from e
    return v


@cache
def flag_specs(version: str) -> Mapping[str, FlagSpec]:
    """Flags SGLang ``version`` accepts, keyed by canonical name and by each alias."""
    v = parse_version(version)
    out: dict[str, FlagSpec] = {}
    for spec in _FLAGS:
        if _in_range(spec, v):
            out[spec.name] = spec
            for alias in spec.aliases:
                out[alias] = spec
    return out


def all_flag_names() -> set[str]:
    """Every flag name any known version accepts (for telling 'unknown' from 'wrong version')."""
    return {s.name for s in _FLAGS} | {a for s in _FLAGS for a in s.aliases}


def check_value(name: str, value: object, version: str, *, source: str | None = None) -> None:
    """Raise :class:`ConfigError` when ``value`` is not a choice SGLang ``version`` accepts for ``name``."""
    spec = flag_specs(version).get(name)
    if spec is None or spec.choices is None or isinstance(value, bool):
        return
    if str(value) not in spec.choices:
        raise ConfigError(
            f"--{name} {value}: sglang {version} accepts {', '.join(spec.choices)}",
            source=source,
            field=name,
        )
