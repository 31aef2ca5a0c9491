"""Check command lines against SGLang's own argument parser (``sglang.srt.server_args.ServerArgs``).

SGLang cannot run here, but its parser can: ``scripts/setup-sglang-parser.sh`` installs the sglang
wheel (without its kernels) into a separate virtualenv. This module runs ONE subprocess in that venv
that builds the parser exactly as ``sglang.launch_server`` does and parses every argv it is given, so
a batch of vectors costs one ~3 s import. The tuner's own flag table (``tuner.engines.sglang``) and the
shipped search spaces are checked against it in ``tests/integration/test_sglang_parser.py``; ``tuner/space/vectors.py``
enumerates a space's flag vectors and ``python -m tuner.space.vectors SPACE`` parses them here.

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

from tuner.core.errors import TunerError
from tuner.engines.base import tool_cache

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
