"""Everything the tuner knows about llama.cpp's ``llama-server``, in one place.

The binary is built by ``scripts/build-llama-server.sh`` from the llama.cpp tree vendored in the
``llama-cpp-python`` source release (the "version" here is that release: 0.3.36 vendors llama.cpp
commit 0c1e570, which prints ``version: 0.5.0-dev (build 1, commit 0c1e570)``). It runs on the CPU
of every machine here, CI included, which makes it the real engine the whole loop is tested against.

Flags are named by their long form (``parallel``, ``ctx-size``); the short forms (``np``, ``c``) are
aliases. Switches that are on by default (``cont-batching``, ``warmup`` …) have a ``no-`` form: a
false value renders the ``no-`` switch, so a bool parameter really turns the feature off.

Facts checked against the real binary (see ``tests/integration/test_llamacpp_engine.py``): an unknown or badly
valued argument exits with code 1 and prints ``error: invalid argument: --x`` or
``error while handling argument "-x": …``; ``/health`` answers 503 while loading, 200 when ready;
``/v1/completions`` honours ``"ignore_eos": true``. Arguments are validated before the model is
loaded, so ``llama-server <flags> --version`` checks flags in milliseconds (:func:`probe_flags`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tuner.core.errors import ConfigError, LaunchError
from tuner.core.failures import FailureKind, Signature
from tuner.core.repairs import Action, Move, RepairRule
from tuner.engines.base import (
    EngineProfile,
    FlagSpec,
    FlagValue,
    FlagVector,
    RequestShape,
    render_flags,
    server_argv,
    tool_cache,
)

NAME = "llamacpp"
DEFAULT_PORT = 8080
KNOWN_VERSIONS: tuple[str, ...] = ("0.3.36",)
DEFAULT_VERSION = "0.3.36"
BINARY_ENV = "TUNER_LLAMA_SERVER"

KV_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def _s(name: str, *aliases: str, help: str = "") -> FlagSpec:
    return FlagSpec(name=name, kind="switch", type=bool, aliases=aliases, help=help)


def _v(
    name: str, typ: type = str, *aliases: str, choices: tuple[str, ...] | None = None, help: str = ""
) -> FlagSpec:
    return FlagSpec(name=name, kind="value", type=typ, aliases=aliases, choices=choices, help=help)


_FLAGS: tuple[FlagSpec, ...] = (
    # --- model and server (set by launch_argv; listed so fixed_flags can't smuggle unknown ones)
    _v("model", str, "m"),
    _v("host"),
    _v("port", int),
    _v("alias", str, "a"),
    _v("n-predict", int, "n", "predict"),
    _v("threads-http", int),
    _s("metrics", help="Prometheus /metrics"),
    _s("slots"),
    _s("no-slots"),
    _s("props"),
    # --- batching and slots
    _v(
        "parallel",
        int,
        "np",
        help="server slots = requests decoded together; the KV context is split among them",
    ),
    _s("cont-batching", "cb"),
    _s("no-cont-batching", "nocb"),
    _v("batch-size", int, "b", help="logical batch (tokens per decode call)"),
    _v("ubatch-size", int, "ub", help="physical batch"),
    _v("ctx-size", int, "c", help="total KV context; per slot = ctx-size / parallel unless kv-unified"),
    _s("kv-unified", "kvu"),
    _s("no-kv-unified", "no-kvu"),
    _v("kv-unified-per-slot", int),
    # --- CPU
    _v("threads", int, "t"),
    _v("threads-batch", int, "tb"),
    _v("poll", int, help="busy-wait level 0..100"),
    _s("repack"),
    _s("no-repack", "nr"),
    _v("load-mode", str, "lm", choices=("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")),
    _v("fit", str, choices=("on", "off")),
    _v("n-gpu-layers", int, "ngl", "gpu-layers"),
    # --- attention and KV cache
    _v("flash-attn", str, "fa", choices=("on", "off", "auto")),
    _v("cache-type-k", str, "ctk", choices=KV_TYPES),
    _v("cache-type-v", str, "ctv", choices=KV_TYPES, help="quantized V needs flash-attn on"),
    _s("kv-offload", "kvo"),
    _s("no-kv-offload", "nkvo"),
    _s("swa-full"),
    # --- prompt cache
    _s("cache-prompt"),
    _s("no-cache-prompt"),
    _v("cache-reuse", int, help="min chunk size reused from the cache via KV shifting (needs cache-prompt)"),
    _v("cache-ram", int, "cram"),
    _v("ctx-checkpoints", int, "ctxcp", "swa-checkpoints"),
    _s("context-shift"),
    _s("no-context-shift"),
    _s("warmup"),
    _s("no-warmup"),
)

# Switches whose "off" is a separate flag (the feature is on by default).
NEGATIONS: Mapping[str, str] = {
    "cont-batching": "no-cont-batching",
    "kv-unified": "no-kv-unified",
    "repack": "no-repack",
    "kv-offload": "no-kv-offload",
    "cache-prompt": "no-cache-prompt",
    "context-shift": "no-context-shift",
    "warmup": "no-warmup",
    "slots": "no-slots",
}


def parse_version(version: str) -> str:
    """Return ``version`` if it is a known profile; otherwise raise ConfigError naming the known ones."""
    if version not in KNOWN_VERSIONS:
        raise ConfigError(
            f"unknown llama.cpp profile {version!r}; known: {', '.join(KNOWN_VERSIONS)} "
            "(the llama-cpp-python source release the binary was built from)",
            field="engine_version",
        )
    return version


@cache
def flag_specs(version: str) -> Mapping[str, FlagSpec]:
    """Flags llama-server ``version`` accepts, keyed by long name and by each alias."""
    parse_version(version)
    out: dict[str, FlagSpec] = {}
    for spec in _FLAGS:
        out[spec.name] = spec
        for alias in spec.aliases:
            out[alias] = spec
    return out


def canonical_flags(flags: FlagVector, version: str) -> dict[str, FlagValue]:
    """Map aliases to long names and ``{switch: False}`` to the ``no-`` switch where one exists.

    >>> canonical_flags({"np": 4, "cb": False, "metrics": False, "fa": "on"}, "0.3.36")
    {'parallel': 4, 'no-cont-batching': True, 'metrics': False, 'flash-attn': 'on'}
    """
    specs = flag_specs(version)
    out: dict[str, FlagValue] = {}
    for key, value in flags.items():
        spec = specs.get(key.lstrip("-"))
        name = spec.name if spec is not None else key.lstrip("-")
        if value is False and name in NEGATIONS:
            name, value = NEGATIONS[name], True
        if name in out:
            raise ConfigError(f"--{name} is set twice (through an alias or its no- form)", field=key)
        out[name] = value
    return out


def default_binary() -> Path:
    """Where ``scripts/build-llama-server.sh`` caches the binary (``TUNER_LLAMA_SERVER`` overrides)."""
    override = os.environ.get(BINARY_ENV)
    if override:
        return Path(override)
    return tool_cache() / "llama-server" / "bin" / "llama-server"


def find_binary() -> Path | None:
    """The llama-server to use: ``TUNER_LLAMA_SERVER``, the build cache, or one on ``PATH``."""
    path = default_binary()
    if path.is_file() and os.access(path, os.X_OK):
        return path
    on_path = shutil.which("llama-server")
    return Path(on_path) if on_path else None


def launch_argv(
    *, model: str, host: str, port: int, flags: FlagVector, version: str, program: Sequence[str] | None = None
) -> list[str]:
    """``llama-server --model M --host H --port P <flags>``.

    ``program`` replaces the binary (default: :func:`find_binary`, else plain ``llama-server``).
    """
    if program is None:
        found = find_binary()
        program = (str(found) if found else "llama-server",)
    flag_args = render_flags(canonical_flags(flags, version), flag_specs(version))
    return server_argv(program, ["--model", model], host, port, flag_args)


@dataclass(frozen=True)
class ProbeResult:
    """What the real binary said about a set of flags (parsed, model not loaded)."""

    ok: bool
    exit_code: int
    message: str


def probe_flags(
    argv: Sequence[str], *, binary: str | Path | None = None, timeout: float = 10.0
) -> ProbeResult:
    """Let the real ``llama-server`` parse ``argv`` without loading a model.

    llama.cpp validates arguments in order and ``--version`` exits at once, so appending it checks
    everything before it. ``message`` is the error line(s) when rejected.
    """
    exe = Path(binary) if binary else find_binary()
    if exe is None:
        raise LaunchError(f"no llama-server binary; run scripts/build-llama-server.sh or set {BINARY_ENV}")
    proc = subprocess.run(
        [str(exe), *argv, "--version"], capture_output=True, text=True, timeout=timeout, check=False
    )
    text = proc.stdout + proc.stderr
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    return ProbeResult(proc.returncode == 0, proc.returncode, "\n".join(errors))


# First match wins: most specific first. Exit-code fallbacks live in tuner.core.failures.classify (137 with
# OOMKilled -> kernel OOM inside a memory-limited container).
SIGNATURES: tuple[Signature, ...] = (
    Signature(FailureKind.FLAG_REJECTED, r"^error: invalid argument: |^error while handling argument "),
    Signature(
        FailureKind.UNSUPPORTED, r"requires flash_attn to be enabled|not supported by the current backend"
    ),
    Signature(
        FailureKind.NOT_ENOUGH_MEMORY,
        r"insufficient memory \(attempted to allocate|failed to allocate (CPU )?buffer|"
        r"failed to allocate buffer for kv cache|std::bad_alloc",
    ),
    Signature(FailureKind.SEGFAULT, r"Segmentation fault|SIGSEGV"),
    Signature(FailureKind.CRASHED, r"GGML_ASSERT|exiting due to model loading error|failed to load model"),
)


# Repairs (tuner/core/repairs.py), first applicable wins: llama.cpp's own error lines name the cure.
REPAIRS: tuple[RepairRule, ...] = (
    # "V cache quantization requires flash_attn to be enabled"
    RepairRule(FailureKind.UNSUPPORTED, (Move("flash-attn", Action.SET, "on"),), "quantized V cache needs flash-attn",
               evidence=r"requires flash_attn to be enabled", scope=("cache-type-v",)),
    RepairRule(FailureKind.NOT_ENOUGH_MEMORY, (Move("ctx-size", Action.HALVE),), "a smaller KV context",
               scope=("parallel", "cache-type-k", "cache-type-v")),
    RepairRule(FailureKind.NOT_ENOUGH_MEMORY, (Move("batch-size", Action.HALVE),), "a smaller logical batch",
               scope=("parallel", "ubatch-size")),
)  # fmt: skip


# Load goes to the OpenAI ``/v1/completions`` endpoint with ``"ignore_eos": true``.
ENGINE = EngineProfile(
    name=NAME,
    default_port=DEFAULT_PORT,
    default_image="ghcr.io/ggml-org/llama.cpp:server",
    versions=KNOWN_VERSIONS,
    specs_for=flag_specs,
    argv_for=launch_argv,
    signatures=SIGNATURES,
    repairs=REPAIRS,
    request=RequestShape(health_path="/health"),
)
