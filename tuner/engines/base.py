"""What the tuner needs to know about a serving engine: the contract every engine module fills.

One module per engine (``sglang.py``, later ``llamacpp.py``, ``transformers.py``) holds its
flag names and versions, launch command, readiness endpoint, API flavour and crash signatures.
Nothing else in the tuner hard-codes engine knowledge.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tuner.core.errors import UnknownFlagError
from tuner.core.failures import Signature
from tuner.core.repairs import RepairRule

FlagValue = bool | int | float | str | list[int] | list[str]
FlagVector = Mapping[str, FlagValue]
"""Flags as the search space names them, without leading dashes: ``{"schedule-policy": "lof"}``."""


@dataclass(frozen=True)
class FlagSpec:
    """One launch flag of an engine.

    ``kind``: ``switch`` (store_true: present or absent), ``value`` (one argument),
    ``list`` (one or more arguments). ``since``/``until`` bound the versions that accept it
    (``until`` is the first version that rejects it).
    """

    name: str
    kind: Literal["switch", "value", "list"] = "value"
    type: type = str
    choices: tuple[str, ...] | None = None
    since: str | None = None
    until: str | None = None
    aliases: tuple[str, ...] = ()
    help: str = ""
    # numeric bounds (``low_open``: low itself excluded); int flags without them: -1 (auto) .. 2**31 - 1
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def value_problem(self, value: object) -> str | None:
        """Why ``value`` cannot be this flag's value (wrong type, out of range), or ``None``."""
        if value is None or self.kind != "value" or self.type not in (int, float):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"--{self.name} takes a number, got {value!r}"
        if self.type is int and not isinstance(value, int):
            return f"--{self.name} takes an integer, got {value!r}"
        low = self.low if self.low is not None else (-1 if self.type is int else None)
        high = self.high if self.high is not None else (2**31 - 1 if self.type is int else None)
        if low is not None and (value <= low if self.low_open else value < low):
            return f"--{self.name} must be {'>' if self.low_open else '>='} {low:g}, got {value!r}"
        if high is not None and value > high:
            return f"--{self.name} must be <= {high:g}, got {value!r}"
        return None


def server_argv(
    program: Sequence[str], model_args: Sequence[str], host: str, port: int, flag_args: Sequence[str]
) -> list[str]:
    """``program model_args --host H --port P flag_args``: the shape every engine's command has."""
    return [*program, *model_args, "--host", host, "--port", str(port), *flag_args]


def render_flags(flags: FlagVector, specs: Mapping[str, FlagSpec] | None = None) -> list[str]:
    """Render a flag vector as command-line arguments. The one place parameters become argv.

    ``True`` -> ``--name``; ``False``/``None`` -> omitted; lists -> ``--name a b``; others ->
    ``--name value``. With ``specs``, a ``value`` flag whose value is a bool is written
    ``true``/``false`` and a switch with a false value is left out.

    >>> render_flags({"schedule-policy": "lof", "enable-torch-compile": True, "disable-radix-cache": False,
    ...               "cuda-graph-bs-decode": [1, 2, 4]})
    ['--schedule-policy', 'lof', '--enable-torch-compile', '--cuda-graph-bs-decode', '1', '2', '4']
    """
    argv: list[str] = []
    for name, value in flags.items():
        spec = specs.get(name) if specs else None
        opt = name if name.startswith("-") else f"--{name}"
        if spec is not None and spec.kind == "value" and isinstance(value, bool):
            argv += [opt, "true" if value else "false"]
        elif value is True:
            argv.append(opt)
        elif value is False or value is None:
            continue
        elif isinstance(value, list | tuple):
            argv += [opt, *(str(v) for v in value)]
        else:
            argv += [opt, _fmt(value)]
    return argv


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@dataclass(frozen=True)
class RequestShape:
    """How the readiness probe and load generator talk to the engine."""

    health_path: str = "/health"
    accepts_ignore_eos: bool = True  # False: the server refuses the field (HTTP 422)


@dataclass(frozen=True)
class EngineProbe:
    """How to ask an engine image for its flags and its version."""

    engine: str
    help_argv: tuple[str, ...]
    version_argv: tuple[str, ...]


@dataclass(frozen=True)
class EngineProfile:
    """One engine's profile: its data plus the two functions that differ between engines.

    ``specs_for(version)`` returns the flags a version accepts (aliases included as keys);
    ``argv_for(model=, host=, port=, flags=, version=, program=)`` renders the launch command.
    Every engine module builds its ``ENGINE`` from this, so the checks below exist once.
    """

    name: str
    default_port: int
    default_image: str  # for exported `docker run` lines when the space names none
    versions: tuple[str, ...]
    specs_for: Callable[[str], Mapping[str, FlagSpec]]
    argv_for: Callable[..., list[str]]
    signatures: Sequence[Signature]
    repairs: Sequence[RepairRule] = ()  # crash -> neighbouring flags that cure it (tuner/core/repairs.py)
    request: RequestShape = RequestShape()
    versioned_image: str | None = None  # "lmsysorg/sglang:v{version}": the image of the checked version

    def image_for(self, version: str | None) -> str:
        """The image exported `docker run` lines use: the one of ``version`` (the version the flags were
        checked against) where the engine publishes one per release, else ``default_image``."""
        if version and self.versioned_image:
            return self.versioned_image.format(version=version)
        return self.default_image

    # how to ask a Docker image for its flags and version (tuner/launch/image_check.py); None: not
    # possible (llama.cpp's help is not argparse's), flags are checked against the table only
    image_probe: EngineProbe | None = None

    def known_versions(self) -> Sequence[str]:
        return self.versions

    def flag_specs(self, version: str) -> Mapping[str, FlagSpec]:
        return self.specs_for(version)

    def check_flags(self, flags: Sequence[str], version: str, *, source: str | None = None) -> None:
        """Raise :class:`UnknownFlagError` naming every flag ``version`` rejects."""
        specs = self.specs_for(version)
        bad = [f.lstrip("-") for f in flags if f.lstrip("-") not in specs]
        if bad:
            close = {
                f: m[0] for f in bad if (m := difflib.get_close_matches(f, list(specs), n=1, cutoff=0.8))
            }
            raise UnknownFlagError(bad, engine=self.name, version=version, source=source, suggestions=close)

    def launch_argv(
        self,
        *,
        model: str,
        host: str,
        port: int,
        flags: FlagVector,
        version: str,
        program: Sequence[str] | None = None,
    ) -> list[str]:
        return self.argv_for(model=model, host=host, port=port, flags=flags, version=version, program=program)


Engine = EngineProfile
"""What the rest of the tuner types engine profiles as."""


def tool_cache() -> Path:
    """Where the set-up scripts cache engines and their venvs: ``$TUNER_CACHE`` or ``~/.cache/sglang-tuner``."""
    return Path(os.environ.get("TUNER_CACHE") or Path.home() / ".cache" / "sglang-tuner")
