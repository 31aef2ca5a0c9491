"""Everything the tuner knows about SGLang, in one place.

The versions and their flags (``tuner.engines.sglang_flags``, the table the simulator's parser is
built from), the launch command, readiness, the HTTP API flavour, the crash signatures and the
repairs each crash's evidence suggests. Sources: the released sglang wheels 0.3.6 … 0.5.23 and
``shared/facts/sglang.md`` (November 2026).

The real SGLang 0.5.23 also runs here, on the CPU (docs/sglang-cpu.md): a launch with ``device: cpu``
uses the virtualenv of ``scripts/setup-sglang-cpu.sh`` (:func:`find_cpu_python`) and needs the
environment in :data:`CPU_ENV`, which a search space sets in ``target.env``
(``search_spaces/sglang-cpu-tiny.yaml``). The signatures below include the ones that server really
prints (argparse errors, a scheduler that hit an exception or was killed, triton without a driver).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tuner.core.failures import FailureKind, Phase, Signature
from tuner.core.repairs import Action, Move, RepairRule, mem_fraction_shortfall
from tuner.engines.base import (
    EngineProbe,
    EngineProfile,
    FlagVector,
    RequestShape,
    render_flags,
    server_argv,
    tool_cache,
)
from tuner.engines.sglang_flags import DEFAULT_VERSION, KNOWN_VERSIONS, flag_specs

NAME = "sglang"
DEFAULT_PORT = 30000
LAUNCH_MODULE = ("python3", "-m", "sglang.launch_server")

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
    # 0.5.15+'s two flags rather than the deprecated --disable-cuda-graph; and an idle scheduler that
    # waits on its sockets instead of spinning a core (bench/results/sglang_idle_cpu.md)
    "device": "cpu",
    "attention-backend": "torch_native",
    "sampling-backend": "pytorch",
    "cuda-graph-backend-decode": "disabled",
    "cuda-graph-backend-prefill": "disabled",
    "sleep-on-idle": True,
}


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
