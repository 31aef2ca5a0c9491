"""Check command lines against SGLang's own argument parser (``sglang.srt.server_args.ServerArgs``).

SGLang cannot run here, but its parser can: ``scripts/setup-sglang-parser.sh`` installs the sglang
wheel (without its kernels) into a separate virtualenv. This module runs ONE subprocess in that venv
that builds the parser exactly as ``sglang.launch_server`` does and parses every argv it is given, so
a batch of vectors costs one ~3 s import. The tuner's own flag table (``tuner.engines.sglang``) and the
shipped search spaces are checked against it in ``tests/test_sglang_parser.py``.

    >>> results = parse_argvs([["--model-path", "m", "--stream-output"]])   # doctest: +SKIP
    >>> results[0].ok, results[0].message                                  # doctest: +SKIP
    (False, 'unrecognized arguments: --stream-output')
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.engines.base import tool_cache
from tuner.errors import ConfigError, TunerError
from tuner.space.load import load_space
from tuner.space.sample import is_active, params_to_flags
from tuner.space.schema import BoolParam, CategoricalParam, ChoiceValue, FloatParam, IntParam, SearchSpace

DEFAULT_VERSION = "0.5.23"
PLACEHOLDER_MODEL = "placeholder/model"  # --model-path is required; argparse never opens it

# Runs inside the parser venv. Reads {"argvs": [[...], ...]} on stdin, writes one JSON line after a
# sentinel (imports may print to stdout). ``error`` is overridden so argparse reports instead of exiting.
_CHILD = r"""
import argparse, json, sys
from sglang.srt.server_args import ServerArgs

class _Rejected(Exception):
    pass

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _Rejected(message)

def build():
    p = _Parser(prog="sglang.launch_server")
    ServerArgs.add_cli_args(p)
    return p

req = json.load(sys.stdin)
parser = build()
results = []
for argv in req["argvs"]:
    try:
        ns = parser.parse_args(argv)
        results.append({"ok": True, "message": "", "values": {k: repr(v) for k, v in vars(ns).items()}})
    except _Rejected as e:
        results.append({"ok": False, "message": str(e), "values": {}})
options = []
if req.get("options"):
    for a in parser._actions:
        if not a.option_strings:
            continue
        options.append({
            "option_strings": list(a.option_strings),
            "dest": a.dest,
            "nargs": a.nargs if isinstance(a.nargs, (int, str)) or a.nargs is None else str(a.nargs),
            "takes_value": a.nargs != 0,
            "choices": [str(c) for c in a.choices] if a.choices is not None else None,
            "required": a.required,
        })
print("\n@@SGLANG_PARSER@@" + json.dumps({"results": results, "options": options}))
"""
_SENTINEL = "@@SGLANG_PARSER@@"


@dataclass(frozen=True)
class ParseResult:
    """The real parser's verdict on one argv: ``message`` is argparse's error text when rejected."""

    argv: tuple[str, ...]
    ok: bool
    message: str
    values: Mapping[str, str]  # dest -> repr(parsed value), when accepted


@dataclass(frozen=True)
class ParserOption:
    """One option of the real parser, as introspected (for comparing with the tuner's flag table)."""

    option_strings: tuple[str, ...]
    dest: str
    nargs: int | str | None
    takes_value: bool
    choices: tuple[str, ...] | None
    required: bool


class ParserUnavailable(TunerError):
    """The SGLang parser venv is missing or broken; the message says how to make it."""


def venv_python(version: str = DEFAULT_VERSION) -> Path:
    """Where ``scripts/setup-sglang-parser.sh`` puts the venv's interpreter for ``version``.

    ``TUNER_SGLANG_PARSER_PYTHON`` overrides it (one interpreter, whatever the version).
    """
    override = os.environ.get("TUNER_SGLANG_PARSER_PYTHON")
    if override:
        return Path(override)
    return tool_cache() / f"sglang-{version}-venv" / "bin" / "python"


def available(version: str = DEFAULT_VERSION) -> bool:
    """Whether the parser venv for ``version`` exists (not whether it imports)."""
    return venv_python(version).is_file()


def _run(argvs: Sequence[Sequence[str]], *, version: str, options: bool, timeout: float) -> dict[str, Any]:
    py = venv_python(version)
    if not py.is_file():
        raise ParserUnavailable(
            f"no SGLang {version} parser venv at {py}; run `SGLANG_VERSION={version} "
            "scripts/setup-sglang-parser.sh` (or set TUNER_SGLANG_PARSER_PYTHON)"
        )
    payload = json.dumps({"argvs": [list(a) for a in argvs], "options": options})
    try:
        proc = subprocess.run(
            [str(py), "-c", _CHILD],
            input=payload,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ParserUnavailable(f"SGLang {version} parser did not answer within {timeout:.0f} s") from e
    _, sep, tail = proc.stdout.rpartition(_SENTINEL)
    if proc.returncode != 0 or not sep:
        raise ParserUnavailable(
            f"SGLang {version} parser failed (exit {proc.returncode}); rerun scripts/setup-sglang-parser.sh. "
            f"stderr tail: {proc.stderr[-1500:]}"
        )
    return json.loads(tail)


def parse_argvs(
    argvs: Sequence[Sequence[str]], *, version: str = DEFAULT_VERSION, timeout: float = 300.0
) -> list[ParseResult]:
    """Parse each argv (arguments after ``python -m sglang.launch_server``) with SGLang's parser.

    All argvs go through one subprocess. Raises :class:`ParserUnavailable` when the venv is missing.
    """
    data = _run(argvs, version=version, options=False, timeout=timeout)
    return [
        ParseResult(tuple(argv), r["ok"], r["message"], r["values"])
        for argv, r in zip(argvs, data["results"], strict=True)
    ]


def parser_options(version: str = DEFAULT_VERSION, *, timeout: float = 300.0) -> dict[str, ParserOption]:
    """Every option of the real parser, keyed by each option string without leading dashes."""
    data = _run([], version=version, options=True, timeout=timeout)
    out: dict[str, ParserOption] = {}
    for o in data["options"]:
        opt = ParserOption(
            option_strings=tuple(o["option_strings"]),
            dest=o["dest"],
            nargs=o["nargs"],
            takes_value=o["takes_value"],
            choices=tuple(o["choices"]) if o["choices"] is not None else None,
            required=o["required"],
        )
        for s in opt.option_strings:
            out[s.lstrip("-")] = opt
    return out


@dataclass(frozen=True)
class SpaceVector:
    """One configuration enumerated from a search space, and why it was chosen."""

    label: str
    params: Mapping[str, ChoiceValue]
    argv: tuple[str, ...]


def space_flag_vectors(space: SearchSpace) -> list[SpaceVector]:
    """Configurations that together exercise every value class of every parameter.

    Per parameter: each categorical choice, the int/float bounds (and, for ints, one step inside),
    a bool both ways; the other parameters sit at their first value, and a conditional parameter's
    ``when`` is satisfied by setting the parameters it names. Plus every seed trial as written.
    The argv is rendered by the engine module, exactly as a trial would launch it.
    """
    from tuner.engines import get_engine

    engine = get_engine(space.engine)
    base = {name: _values(p)[0] for name, p in space.parameters.items()}
    configs: list[tuple[str, dict[str, ChoiceValue]]] = [("all-first", dict(base))]
    configs.append(("all-last", {name: _values(p)[-1] for name, p in space.parameters.items()}))
    for name, p in space.parameters.items():
        for value in _values(p):
            params = dict(base)
            _satisfy(space, name, params)
            params[name] = value
            configs.append((f"{name}={value!r}", params))
    configs += [(f"seed:{s.name}", dict(s.params)) for s in space.seed_trials]

    out: list[SpaceVector] = []
    for label, params in configs:
        active = {k: v for k, v in params.items() if is_active(space, k, params)}
        argv = engine.launch_argv(
            model=PLACEHOLDER_MODEL,
            host="127.0.0.1",
            port=engine.default_port,
            flags=params_to_flags(space, active),
            version=space.engine_version,
            program=("<program>",),
        )[1:]
        out.append(SpaceVector(label, active, tuple(argv)))
    return out


def _values(p: object) -> list[ChoiceValue]:
    if isinstance(p, BoolParam):
        return [False, True]
    if isinstance(p, CategoricalParam):
        return list(p.choices)
    if isinstance(p, IntParam):
        inner = p.low + p.step if p.low + p.step < p.high else p.low
        high = p.low + (p.high - p.low) // p.step * p.step
        return list(dict.fromkeys([p.low, inner, high]))
    if isinstance(p, FloatParam):
        return list(dict.fromkeys([p.low, p.high]))
    raise ConfigError(f"unknown parameter type {type(p).__name__}")


def _satisfy(space: SearchSpace, name: str, params: dict[str, ChoiceValue]) -> None:
    """Set the parameters ``name`` depends on (recursively) so that its condition holds."""
    for dep, want in (space.parameters[name].when or {}).items():
        _satisfy(space, dep, params)
        allowed = want if isinstance(want, list) else [want]
        if params.get(dep) not in allowed:
            params[dep] = allowed[0]


def check_space_flag_vectors(
    space_path: str | Path, *, timeout: float = 300.0
) -> list[tuple[SpaceVector, str]]:
    """Parse every enumerated configuration of an SGLang search space with the real parser.

    Returns ``(vector, argparse message)`` for each rejected one (empty: the whole space parses).
    The parser venv is chosen by the space's ``engine_version``.
    """
    space = load_space(space_path)
    if space.engine != "sglang":
        raise ConfigError(
            f"engine is {space.engine!r}; only SGLang spaces have a reference parser",
            source=str(space_path),
            field="engine",
        )
    vectors = space_flag_vectors(space)
    results = parse_argvs([v.argv for v in vectors], version=space.engine_version, timeout=timeout)
    return [(v, r.message) for v, r in zip(vectors, results, strict=True) if not r.ok]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tuner.sglang_parser SPACE.yaml …``: parse every configuration a space can produce."""
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="python -m tuner.sglang_parser",
        description="Check every flag vector an SGLang search space can produce against SGLang's own parser "
        "(the venv made by scripts/setup-sglang-parser.sh). Exit 0: all parse; 1: some rejected; 2: bad input.",
    )
    p.add_argument("spaces", nargs="+", help="search-space YAML files")
    args = p.parse_args(argv)
    rejected_any = False
    try:
        for path in args.spaces:
            rejected = check_space_flag_vectors(path)
            total = len(space_flag_vectors(load_space(path)))
            print(f"{path}: {total - len(rejected)}/{total} flag vectors parse")
            for vector, message in rejected:
                print(f"  rejected: {' '.join(vector.argv)}\n    {message}")
            rejected_any |= bool(rejected)
    except TunerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if rejected_any else 0


if __name__ == "__main__":
    raise SystemExit(main())
