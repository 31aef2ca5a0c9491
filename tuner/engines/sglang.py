"""Everything the tuner knows about SGLang, in one place.

Flag names and the versions that accept them, the launch command, readiness, the HTTP API
flavour and the crash signatures. Sources: the released sglang wheels 0.3.6 … 0.5.23 and
``shared/facts/sglang.md`` (November 2026). ``since``/``until`` bounds marked "approx." are
the first profile we know to have/lack the flag, not the exact release it changed in.

The simulator (``tuner.sim``) builds its argument parser from this same table, so the
simulated server accepts and rejects exactly what the tuner believes SGLang does; the real
parser check (``tests/integration/test_sglang_parser.py``) keeps this table honest against the wheel.

The real SGLang 0.5.23 also runs here, on the CPU (docs/sglang-cpu.md): a launch with ``device: cpu``
uses the virtualenv of ``scripts/setup-sglang-cpu.sh`` (:func:`find_cpu_python`) and needs the
environment in :data:`CPU_ENV`, which a search space sets in ``target.env``
(``search_spaces/sglang-cpu-tiny.yaml``). The signatures below include the ones that server really
prints (argparse errors, a scheduler that hit an exception or was killed, triton without a driver).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

from packaging.version import Version

from tuner.core.errors import ConfigError
from tuner.core.failures import FailureKind, Phase, Signature
from tuner.core.repairs import Action, Move, RepairRule, mem_fraction_shortfall
from tuner.engines.base import (
    EngineProbe,
    EngineProfile,
    FlagSpec,
    FlagVector,
    RequestShape,
    render_flags,
    server_argv,
    tool_cache,
)

NAME = "sglang"
DEFAULT_PORT = 30000
LAUNCH_MODULE = ("python3", "-m", "sglang.launch_server")

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

# Running the real SGLang on a CPU (docs/sglang-cpu.md, shared/facts/sglang-cpu.md).
CPU_PYTHON_ENV = "TUNER_SGLANG_CPU_PYTHON"  # overrides the venv python of scripts/setup-sglang-cpu.sh
CPU_MODEL_ENV = "TUNER_SGLANG_CPU_MODEL"
CPU_ENV: Mapping[str, str] = {
    # without it the scheduler imports vllm and dies (exit 137 after ~53 s)
    "SGLANG_USE_CPU_ENGINE": "1",
    # torch's default (one thread per core) cost 8-10x throughput on the loaded 2-core machines here
    "OMP_NUM_THREADS": "1",
}
CPU_FLAGS: Mapping[str, object] = {
    # what a CPU launch needs besides the environment: the CPU device, the pure-torch attention and
    # sampling paths (triton needs a GPU driver: "0 active drivers"), and no CUDA graphs, written with
    # 0.5.15+'s two flags rather than the deprecated --disable-cuda-graph
    "device": "cpu",
    "attention-backend": "torch_native",
    "sampling-backend": "pytorch",
    "cuda-graph-backend-decode": "disabled",
    "cuda-graph-backend-prefill": "disabled",
}


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


def default_cpu_python(version: str = DEFAULT_VERSION) -> Path:
    """Where ``scripts/setup-sglang-cpu.sh`` puts the CPU venv's python (``TUNER_SGLANG_CPU_PYTHON`` overrides)."""
    override = os.environ.get(CPU_PYTHON_ENV)
    if override:
        return Path(override)
    return tool_cache() / f"sglang-cpu-{version}-venv" / "bin" / "python"


def cpu_model_dir() -> Path:
    """The tiny random Llama of ``scripts/setup-sglang-cpu-model.sh`` (``TUNER_SGLANG_CPU_MODEL`` overrides)."""
    return Path(os.environ.get(CPU_MODEL_ENV) or tool_cache() / "models" / "sglang-tiny-llama")


def find_cpu_python(version: str = DEFAULT_VERSION) -> Path | None:
    """The python of the SGLang CPU venv for ``version``, if it has been set up (else None)."""
    path = default_cpu_python(version)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def default_program(flags: FlagVector, version: str) -> tuple[str, ...]:
    """The launch program when the space names none.

    ``python3 -m sglang.launch_server``, except for a CPU launch (``device: cpu``) on a machine where
    ``scripts/setup-sglang-cpu.sh`` made its venv: then that venv's python (found as llama.cpp's
    binary is, :func:`find_cpu_python`), so a shipped CPU space runs anywhere after the set-up script.
    """
    if flags.get("device") == "cpu" and (py := find_cpu_python(version)) is not None:
        return (str(py), *LAUNCH_MODULE[1:])
    return LAUNCH_MODULE


def launch_argv(
    *, model: str, host: str, port: int, flags: FlagVector, version: str, program: Sequence[str] | None = None
) -> list[str]:
    """``python3 -m sglang.launch_server --model-path M --host H --port P <flags>``.

    ``program`` replaces ``python3 -m sglang.launch_server`` (e.g. the simulator's command); without
    it, :func:`default_program` decides (the CPU venv's python for ``device: cpu``).
    """
    flag_args = render_flags(flags, flag_specs(version))
    return server_argv(
        program or default_program(flags, version), ["--model-path", model], host, port, flag_args
    )


# Log signatures, first match wins (ordered from most to least specific). Exit-code fallbacks
# live in tuner.core.failures.classify.
#
# Seen from the real 0.5.23 on the CPU (docs/sglang-cpu.md):
# - argparse: ``sglang serve: error: argument --schedule-policy: invalid choice: 'bogus' …`` or
#   ``… error: unrecognized arguments: --x``, exit 2 (0.5.23's prog is "sglang serve", older ones
#   "launch_server.py") -> FLAG_REJECTED.
# - ``--attention-backend triton`` on a machine without a GPU driver: at the first prefill
#   ``Scheduler hit an exception`` … ``RuntimeError: 0 active drivers ([]). There should only be one.``,
#   then ``SIGQUIT received`` and exit 137 -> UNSUPPORTED: the backend cannot run on this device, the
#   same deterministic (configuration, hardware) property as "no kernel image is available" on a GPU,
#   which TPE should learn to avoid; CRASHED would call it an unexplained death.
# - any other scheduler exception (``Scheduler hit an exception``, ``Received sigquit from a child
#   process``, ``SIGQUIT received``, e.g. ``No module named 'vllm'`` without SGLANG_USE_CPU_ENGINE)
#   and a scheduler killed from outside (``Subprocess scheduler_0 (pid=…) crashed with exit code -9``:
#   a SIGKILL, the kernel's OOM killer or a person, which the log cannot tell apart) -> CRASHED, exit
#   137 (the parent kills its own tree, so 137 alone is not an OOM). -11 is a segfault, matched first.
# - a request longer than the KV pool is answered HTTP 400 ``Input length (N tokens) exceeds the
#   maximum allowed length (M tokens)``; the server stays healthy. That is not a log signature: the
#   load generator records each request's status and body, and the trial runner turns an error rate
#   over the space's ``failure.error_rate_threshold`` into HEALTHY_BUT_FAILING with those messages
#   as the matched lines (below it, the error-rate SLO makes the trial infeasible).
SIGNATURES: tuple[Signature, ...] = (
    Signature(
        FailureKind.FLAG_REJECTED,
        r"(launch_server(\.py)?|sglang serve): error: |error: unrecognized arguments|"
        r"error: argument --[\w-]+: invalid choice",
    ),
    Signature(
        FailureKind.NOT_ENOUGH_MEMORY, r"Not enough memory\. Please try to increase --mem-fraction-static"
    ),
    Signature(FailureKind.GRAPH_CAPTURE, r"Capture cuda graph failed"),
    Signature(FailureKind.SEGFAULT, r"crashed with exit code -11|Segmentation fault|SIGSEGV"),
    Signature(
        FailureKind.CUDA_OOM, r"(torch\.)?OutOfMemoryError: CUDA out of memory|CUDA error: out of memory"
    ),
    Signature(
        FailureKind.UNSUPPORTED,
        r"not supported on (this GPU|sm_\d+|CPU)|no kernel image is available|"
        r"RuntimeError: 0 active drivers",
    ),
    Signature(FailureKind.WARMUP_FAILED, r"Initialization failed\. warmup error"),
    Signature(
        FailureKind.CRASHED,
        r"Scheduler hit an exception|Subprocess .* crashed with exit code|"
        r"Received sigquit from a child process|SIGQUIT received",
    ),
)

# Repairs (tuner/core/repairs.py): what SGLang's own messages and its documentation advise for each
# crash, tried by the study on the crashed configuration's neighbour (first applicable rule wins).
_GRAPHS_ON = {"cuda-graph-backend-decode": ("full", "breakable", None), "disable-cuda-graph": (None, False)}
_MEMORY_SCOPE = (
    "quantization", "kv-cache-dtype", "max-total-tokens", "cuda-graph-backend-decode", "disable-cuda-graph",
    "enable-torch-compile", "enable-hierarchical-cache", "enable-two-batch-overlap",
)  # fmt: skip
_LOWER_MEM = Move("mem-fraction-static", Action.LOWER, step=0.1, amount=mem_fraction_shortfall)
REPAIRS: tuple[RepairRule, ...] = (
    # "CUDA out of memory. Tried to allocate X ... of which F is free": keep X - F more outside the pool
    RepairRule(FailureKind.CUDA_OOM, (_LOWER_MEM,), "less static memory leaves room for what was missing",
               scope=_MEMORY_SCOPE),
    # an FP8 KV cache that still runs out of memory where the model's dtype fits (field report, sm_120)
    RepairRule(FailureKind.CUDA_OOM, (Move("kv-cache-dtype", Action.SET, "auto"),),
               "the FP8 KV path's extra buffers", when={"kv-cache-dtype": ("fp8_e5m2", "fp8_e4m3", "fp8")},
               scope=_MEMORY_SCOPE, hazard=True),
    RepairRule(FailureKind.CUDA_OOM, (Move("chunked-prefill-size", Action.HALVE),),
               "smaller prefill chunks need fewer activations", phases=(Phase.LOAD,), scope=_MEMORY_SCOPE),
    # "Capture cuda graph failed: CUDA out of memory. Possible solutions: 1. set --mem-fraction-static to a
    # smaller value 2. set --cuda-graph-max-bs to a smaller value ... 4. disable CUDA graph"
    RepairRule(FailureKind.GRAPH_CAPTURE, (Move("mem-fraction-static", Action.LOWER, step=0.1),),
               "graph capture needs memory outside the static pool", scope=_MEMORY_SCOPE),
    RepairRule(FailureKind.GRAPH_CAPTURE, (Move("cuda-graph-max-bs-decode", Action.HALVE),),
               "fewer captured batch sizes", scope=_MEMORY_SCOPE),
    RepairRule(FailureKind.GRAPH_CAPTURE, (Move("cuda-graph-backend-decode", Action.SET, "disabled"),),
               "no graph capture at all", scope=_MEMORY_SCOPE),
    # "Not enough memory. Please try to increase --mem-fraction-static": the KV pool came out empty
    RepairRule(FailureKind.NOT_ENOUGH_MEMORY, (Move("mem-fraction-static", Action.RAISE, step=0.1),),
               "a larger static pool leaves room for the KV cache", scope=_MEMORY_SCOPE),
    # a segfault while graphs are on (field report: sm_120); the graph-free neighbour tells if they caused it
    RepairRule(FailureKind.SEGFAULT, (Move("cuda-graph-backend-decode", Action.SET, "disabled"),),
               "CUDA graph capture/replay is the usual segfault on new architectures", when=_GRAPHS_ON,
               scope=("enable-torch-compile",), hazard=True),
    RepairRule(FailureKind.SEGFAULT, (Move("disable-cuda-graph", Action.SET, True),),
               "CUDA graph capture/replay is the usual segfault on new architectures", when=_GRAPHS_ON,
               scope=("enable-torch-compile",), hazard=True),
    RepairRule(FailureKind.SEGFAULT, (Move("enable-torch-compile", Action.SET, False),),
               "torch.compile's kernels", when={"enable-torch-compile": (True,)}, hazard=True),
    # no output at all under load with two-batch overlap: the overlap's known hang on one dense GPU
    RepairRule(FailureKind.HANG, (Move("enable-two-batch-overlap", Action.SET, False),),
               "two-batch overlap", when={"enable-two-batch-overlap": (True,)}, hazard=True),
    RepairRule(FailureKind.CRASHED, (Move("enable-mixed-chunk", Action.SET, False),),
               "mixed prefill/decode batches", evidence=r"illegal memory access",
               when={"enable-mixed-chunk": (True,)}, hazard=True),
    # "ValueError: --kv-cache-dtype fp8_e5m2 is not supported on CPU." (0.5.23, at start-up)
    RepairRule(FailureKind.UNSUPPORTED, (Move("kv-cache-dtype", Action.SET, "auto"),),
               "a KV cache in the model's own dtype", evidence=r"--kv-cache-dtype \S+ is not supported",
               when={"kv-cache-dtype": ("fp8_e5m2", "fp8_e4m3", "fp8")}),
    # "RuntimeError: 0 active drivers ([]). There should only be one.": triton found no GPU driver
    RepairRule(FailureKind.UNSUPPORTED, (Move("attention-backend", Action.SET, "torch_native"),),
               "SGLang's pure-torch attention needs no GPU driver", evidence=r"0 active drivers",
               when={"attention-backend": ("triton",)}),
    RepairRule(FailureKind.KERNEL_OOM_KILLED, (Move("enable-hierarchical-cache", Action.SET, False),),
               "the hierarchical cache's host memory pool", when={"enable-hierarchical-cache": (True,)},
               hazard=True),
)  # fmt: skip

READY_LINE = "The server is fired up and ready to roll!"


ENGINE = EngineProfile(
    name=NAME,
    default_port=DEFAULT_PORT,
    default_image="lmsysorg/sglang:latest",
    versioned_image="lmsysorg/sglang:v{version}",  # release tags vX.Y.Z (shared/facts/sglang.md)
    versions=KNOWN_VERSIONS,
    specs_for=flag_specs,
    argv_for=launch_argv,
    signatures=SIGNATURES,
    repairs=REPAIRS,
    request=RequestShape(health_path="/health"),
    image_probe=EngineProbe(
        engine=NAME,
        help_argv=("python3", "-m", "sglang.launch_server", "--help"),
        version_argv=("python3", "-c", "import sglang; print(sglang.__version__)"),
    ),
)
