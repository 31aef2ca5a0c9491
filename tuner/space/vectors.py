"""A search space's flag vectors: configurations that exercise every value of every parameter, rendered
as the engine would launch them, and their check against SGLang's own argument parser.

``python -m tuner.space.vectors SPACE.yaml …`` parses every vector of SGLang spaces with the real parser
(``tuner/engines/sglang_parser.py``; the venv made by ``scripts/setup-sglang-parser.sh``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuner.core.cli import run_cli
from tuner.core.errors import ConfigError
from tuner.engines import get_engine
from tuner.engines.sglang_parser import PLACEHOLDER_MODEL, parse_argvs
from tuner.space.load import load_space
from tuner.space.sample import is_active, params_to_flags
from tuner.space.schema import BoolParam, CategoricalParam, ChoiceValue, FloatParam, IntParam, SearchSpace


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
    """``python -m tuner.space.vectors SPACE.yaml …``: parse every configuration a space can produce."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m tuner.space.vectors",
        description="Check every flag vector an SGLang search space can produce against SGLang's own parser "
        "(the venv made by scripts/setup-sglang-parser.sh). Exit 0: all parse; 1: some rejected; 2: bad input.",
    )
    p.add_argument("spaces", nargs="+", help="search-space YAML files")
    args = p.parse_args(argv)
    return run_cli("tuner.space.vectors", lambda: _check(args.spaces))


def _check(spaces: Sequence[str]) -> int:
    rejected_any = False
    for path in spaces:
        rejected = check_space_flag_vectors(path)
        total = len(space_flag_vectors(load_space(path)))
        print(f"{path}: {total - len(rejected)}/{total} flag vectors parse")
        for vector, message in rejected:
            print(f"  rejected: {' '.join(vector.argv)}\n    {message}")
        rejected_any |= bool(rejected)
    return 1 if rejected_any else 0


if __name__ == "__main__":
    raise SystemExit(main())
