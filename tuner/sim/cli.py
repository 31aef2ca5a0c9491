"""The command line of ``python -m tuner.sim``: SGLang's flags for one version, plus ``--sim-*``.

SGLang's flags come from ``tuner.engines.sglang_flags.flag_specs(version)``, the tuner's one table,
so the simulated server accepts and rejects exactly what the tuner believes that SGLang
version does: an unknown flag is an argparse error with exit code 2, as with the real
``launch_server``, under the same program name (``sglang serve`` in 0.5.23).
``--sim-sglang-version`` is read first because it decides the parser.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from packaging.version import Version

from tuner.engines import sglang_flags
from tuner.engines.base import FlagSpec
from tuner.sim.config import SimOptions
from tuner.sim.failures import INJECTABLE
from tuner.sim.profiles import GPUS, MODELS

DEFAULT_GPU = "rtx5090"
DEFAULT_MODEL = "qwen3-32b-awq"
DEFAULT_NOISE = 0.03
SIM_FLAGS = (
    "sim_sglang_version",
    "sim_gpu",
    "sim_bandwidth_tbs",
    "sim_model",
    "sim_seed",
    "sim_noise",
    "sim_startup_scale",
    "sim_inject",
)


def _version(argv: Sequence[str]) -> str:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--sim-sglang-version", default=sglang_flags.DEFAULT_VERSION)
    ns, _ = pre.parse_known_args(argv)
    return str(ns.sim_sglang_version)


# SGLang 0.5.23 parses ``python -m sglang.launch_server`` with ``ArgumentParser(prog="sglang serve")``
# (checked against the real server: tests/integration/test_conformance.py); older releases are taken to say
# "launch_server.py", the script's name.
PROG_SERVE_SINCE = "0.5.23"


def prog_for(version: str) -> str:
    """The program name SGLang ``version`` prints in its usage and argparse errors."""
    return "sglang serve" if Version(version) >= Version(PROG_SERVE_SINCE) else "launch_server.py"


def build_parser(version: str) -> argparse.ArgumentParser:
    """SGLang ``version``'s launch_server parser with the simulator's own group appended."""
    parser = argparse.ArgumentParser(
        prog=prog_for(version),
        description=(
            f"Simulated SGLang {version} server (python -m tuner.sim): SGLang's HTTP API and launch flags, "
            "modelled timing, memory and crashes. The usage line names the program as SGLang itself does, "
            "so argparse errors read as the real server's."
        ),
    )
    seen: set[str] = set()
    for spec in sglang_flags.flag_specs(version).values():
        if spec.name in seen:
            continue
        seen.add(spec.name)
        _add(parser, spec)
    sim = parser.add_argument_group("simulator options (not SGLang's)")
    sim.add_argument(
        "--sim-sglang-version",
        default=sglang_flags.DEFAULT_VERSION,
        choices=sglang_flags.KNOWN_VERSIONS,
        help="which SGLang release's flag set to accept",
    )
    sim.add_argument("--sim-gpu", default=DEFAULT_GPU, choices=sorted(GPUS), help="GPU profile")
    sim.add_argument(
        "--sim-model", default=None, choices=sorted(MODELS), help="model profile (default: from --model-path)"
    )
    sim.add_argument(
        "--sim-bandwidth-tbs",
        type=float,
        default=None,
        help="override the GPU profile's memory bandwidth (what-if)",
    )
    sim.add_argument(
        "--sim-seed", type=int, default=None, help="seed of noise and sampling (default: random per run)"
    )
    sim.add_argument(
        "--sim-noise", type=float, default=DEFAULT_NOISE, help="relative std of run-to-run noise (0 = off)"
    )
    sim.add_argument(
        "--sim-startup-scale",
        type=float,
        default=1.0,
        help="multiply the modelled start-up durations (1.0 = realistic minutes; the demo uses 0.02)",
    )
    sim.add_argument(
        "--sim-inject",
        action="append",
        default=[],
        choices=INJECTABLE,
        help="force a failure mode (repeatable)",
    )
    return parser


def _add(parser: argparse.ArgumentParser, spec: FlagSpec) -> None:
    names = [f"--{spec.name}", *(f"--{a}" for a in spec.aliases)]
    dest = spec.name.replace("-", "_")
    if spec.kind == "switch":
        parser.add_argument(*names, dest=dest, action="store_true", help=spec.help or None)
    elif spec.kind == "list":
        parser.add_argument(*names, dest=dest, nargs="+", type=spec.type, help=spec.help or None)
    else:
        parser.add_argument(
            *names,
            dest=dest,
            type=spec.type,
            choices=spec.choices,
            required=spec.name == "model-path",  # as in SGLang: usage "[-h] --model-path MODEL_PATH"
            help=spec.help or None,
        )


def model_for_path(path: str | None) -> str:
    """Guess the model profile from ``--model-path`` (falls back to the report's model)."""
    p = (path or "").lower()
    if "tiny-llama" in p:
        return "sglang-tiny-llama"
    if "0.5b" in p:
        return "qwen2.5-0.5b"
    if "llama" in p and "8b" in p:
        return "llama-3.1-8b"
    return DEFAULT_MODEL


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, SimOptions]:
    """Parse the command line; argparse exits with code 2 on a flag the version lacks."""
    version = _version(argv)
    if version not in sglang_flags.KNOWN_VERSIONS:
        build_parser(sglang_flags.DEFAULT_VERSION).error(
            f"--sim-sglang-version {version}: known profiles are {', '.join(sglang_flags.KNOWN_VERSIONS)}"
        )
    ns = build_parser(version).parse_args(argv)
    seed = ns.sim_seed if ns.sim_seed is not None else int.from_bytes(os.urandom(4), "little")
    opts = SimOptions(
        sglang_version=version,
        gpu=ns.sim_gpu,
        model=ns.sim_model or model_for_path(ns.model_path),
        seed=seed,
        noise=max(0.0, ns.sim_noise),
        startup_scale=max(0.0, ns.sim_startup_scale),
        inject=tuple(ns.sim_inject),
        bandwidth_tbs=ns.sim_bandwidth_tbs,
    )
    for name in SIM_FLAGS:
        delattr(ns, name)
    return ns, opts
