"""Everything the tuner knows about ``transformers serve`` (Hugging Face transformers 5.x), in one place.

It runs on the H100 machine (transformers 5.17, torch 2.11) on a random-weight model written by
``tuner.models.hf_random``, and on the CPU anywhere transformers and its serving extras are installed.
Facts checked against transformers 5.17.0 (``shared/facts/real-engines-here.md`` and a CPU run here):

- the CLI is click/typer: an unknown option or a bad value exits with code 2 and prints
  ``Error: No such option '--x'`` / ``Error: Invalid value for '--x': …``; on/off options are
  pairs (``--compile`` / ``--no-compile``), so a false value renders the ``no-`` form;
- the model is loaded before uvicorn starts, so ``GET /health`` answering 200 means loaded;
- ``/v1/completions`` and ``/v1/chat/completions`` stream SSE with a final ``usage`` chunk;
  unknown request fields are refused with HTTP 422 (``"ignore_eos"`` included): exact output
  lengths come from the model's ``generation_config.eos_token_id = None`` instead;
- ``--continuous-batching`` with an impossible ``--cb-num-blocks`` starts, answers ``/health`` 200,
  and fails every request (HTTP 500, then 503 "CB worker is dead"): healthy but failing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

from tuner.core.errors import ConfigError
from tuner.core.failures import FailureKind, Signature
from tuner.core.repairs import Action, Move, RepairRule, oom_shortfall_fraction
from tuner.engines.base import (
    EngineProfile,
    FlagSpec,
    FlagValue,
    FlagVector,
    RequestShape,
    render_flags,
    server_argv,
)

NAME = "transformers"
DEFAULT_PORT = 8000
KNOWN_VERSIONS: tuple[str, ...] = ("5.17.0",)
DEFAULT_VERSION = "5.17.0"
PROGRAM = ("transformers", "serve")
ENV = {"HF_HUB_OFFLINE": "1"}  # the model is a local directory; never reach for the Hub


def _s(name: str, help: str = "") -> FlagSpec:
    return FlagSpec(name=name, kind="switch", type=bool, help=help)


def _v(
    name: str,
    typ: type = str,
    *,
    choices: tuple[str, ...] | None = None,
    help: str = "",
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> FlagSpec:
    return FlagSpec(name=name, kind="value", type=typ, choices=choices, help=help, low=low, high=high,
                    low_open=low_open)  # fmt: skip


_FLAGS: tuple[FlagSpec, ...] = (
    _v("host"),
    _v("port", int),
    _v("device", help="auto, cuda:0, cpu …"),
    _v("dtype", choices=("auto", "bfloat16", "float16", "float32")),
    _v("attn-implementation", choices=("sdpa", "eager", "flex_attention", "flash_attention_2")),
    _v("quantization", choices=("bnb-4bit", "bnb-8bit")),
    _v("reasoning", choices=("on", "off", "auto")),
    _v("chat-template-kwargs"),
    _v("model-timeout", int),
    _v("log-level"),
    _v("default-seed", int),
    _s("continuous-batching", help="paged attention + continuous batching (the big throughput switch)"),
    _s("no-continuous-batching"),
    _s("compile", help="torch.compile (non-batching path)"),
    _s("no-compile"),
    _s("trust-remote-code"),
    _s("no-trust-remote-code"),
    _s("enable-cors"),
    _s("no-enable-cors"),
    _v("cb-block-size", int, low=1, help="KV block size in tokens"),
    _v("cb-num-blocks", int, low=1, help="KV blocks; too many kills the CB worker while /health stays 200"),
    _v("cb-max-batch-tokens", int, low=1),
    _v(
        "cb-max-memory-percent",
        float,
        low=0,
        high=1,
        low_open=True,
        help="GPU memory fraction for the KV cache, 0..1",
    ),
    _s("cb-use-cuda-graph"),
    _s("no-cb-use-cuda-graph"),
)

NEGATIONS: Mapping[str, str] = {
    "continuous-batching": "no-continuous-batching",
    "compile": "no-compile",
    "trust-remote-code": "no-trust-remote-code",
    "enable-cors": "no-enable-cors",
    "cb-use-cuda-graph": "no-cb-use-cuda-graph",
}


def parse_version(version: str) -> str:
    """Return ``version`` if it is a known profile; otherwise raise ConfigError naming the known ones."""
    if version not in KNOWN_VERSIONS:
        raise ConfigError(
            f"unknown transformers version {version!r}; known: {', '.join(KNOWN_VERSIONS)}",
            field="engine_version",
        )
    return version


@cache
def flag_specs(version: str) -> Mapping[str, FlagSpec]:
    """Options ``transformers serve`` ``version`` accepts, keyed by name without dashes."""
    parse_version(version)
    return {spec.name: spec for spec in _FLAGS}


def canonical_flags(flags: FlagVector) -> dict[str, FlagValue]:
    """``{switch: False}`` becomes the ``no-`` switch, so turning a feature off is explicit.

    >>> canonical_flags({"continuous-batching": False, "cb-num-blocks": 64})
    {'no-continuous-batching': True, 'cb-num-blocks': 64}
    """
    out: dict[str, FlagValue] = {}
    for key, value in flags.items():
        name = key.lstrip("-")
        if value is False and name in NEGATIONS:
            name, value = NEGATIONS[name], True
        if name in out:
            raise ConfigError(f"--{name} is set twice (directly and through its no- form)", field=key)
        out[name] = value
    return out


def launch_argv(
    *, model: str, host: str, port: int, flags: FlagVector, version: str, program: Sequence[str] | None = None
) -> list[str]:
    """``transformers serve MODEL_DIR --host H --port P <flags>``; run it with :data:`ENV` set.

    ``model`` is the directory (or Hub id) to preload; requests must name it or leave ``model`` out.
    ``program`` replaces ``transformers serve`` (e.g. ``["/venv/bin/transformers", "serve"]``).
    """
    flag_args = render_flags(canonical_flags(flags), flag_specs(version))
    return server_argv(program or PROGRAM, [model], host, port, flag_args)


# First match wins. Exit code 2 at start-up (click's usage error) is FLAG_REJECTED by classify()'s fallback
# too; the signature keeps the evidence line.
SIGNATURES: tuple[Signature, ...] = (
    Signature(
        FailureKind.FLAG_REJECTED,
        r"^Error: (No such option|Invalid value for '--|Got unexpected extra argument|Option '--[\w-]+' requires)",
    ),
    Signature(
        FailureKind.CUDA_OOM, r"(torch\.)?OutOfMemoryError: CUDA out of memory|CUDA error: out of memory"
    ),
    Signature(
        FailureKind.UNSUPPORTED,
        r"no kernel image is available|is not supported for this|ImportError: .*flash_attn",
    ),
    Signature(
        FailureKind.HEALTHY_BUT_FAILING,
        r"CB worker is dead|cb_worker_dead|Error in generation loop|CB generation failed",
    ),
    Signature(FailureKind.SEGFAULT, r"Segmentation fault|SIGSEGV"),
)


# Repairs (tuner/core/repairs.py), first applicable wins.
_CB = {"continuous-batching": (True, None)}
REPAIRS: tuple[RepairRule, ...] = (
    RepairRule(FailureKind.CUDA_OOM, (Move("cb-max-memory-percent", Action.LOWER, step=0.2,
               amount=oom_shortfall_fraction),), "a smaller KV cache leaves room for what was missing", when=_CB,
               scope=("cb-num-blocks", "cb-block-size", "attn-implementation")),
    RepairRule(FailureKind.CUDA_OOM, (Move("cb-max-batch-tokens", Action.HALVE),), "smaller batches", when=_CB,
               scope=("cb-num-blocks", "cb-block-size", "attn-implementation")),
    RepairRule(FailureKind.HEALTHY_BUT_FAILING, (Move("cb-num-blocks", Action.HALVE),),
               "a KV cache that fits the GPU", when=_CB, scope=("cb-block-size",)),
)  # fmt: skip


# Load goes to ``/v1/completions``; the request must NOT carry ``ignore_eos`` (HTTP 422).
ENGINE = EngineProfile(
    name=NAME,
    default_port=DEFAULT_PORT,
    default_image="huggingface/transformers-pytorch-gpu:latest",
    versions=KNOWN_VERSIONS,
    specs_for=flag_specs,
    argv_for=launch_argv,
    signatures=SIGNATURES,
    repairs=REPAIRS,
    request=RequestShape(health_path="/health", accepts_ignore_eos=False),
)
