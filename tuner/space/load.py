"""Load and validate a search-space file; every error names the file and the field."""

from __future__ import annotations

import ast
import difflib
import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tuner.core.errors import ConfigError
from tuner.core.metric_names import METRIC_NAMES
from tuner.core.yamlfile import read_yaml
from tuner.engines import get_engine
from tuner.space.constraints import compile_expr, evaluate
from tuner.space.datasets import check_dataset
from tuner.space.sample import MAX_WARM_START, domain_contains, is_active
from tuner.space.schema import BoolParam, CategoricalParam, FloatParam, IntParam, SearchSpace


def load_space(path: str | Path) -> SearchSpace:
    """Read ``path`` (YAML), validate it against :class:`SearchSpace` and the engine's flag table.

    Raises :class:`ConfigError` (or :class:`tuner.core.errors.UnknownFlagError`) naming the file and the
    field, before anything is started.
    """
    source = str(path)
    raw = read_yaml(path, what="search-space file")
    if not isinstance(raw, dict):
        raise ConfigError("the file must be a mapping of fields (name, engine, parameters, …)", source=source)
    space = parse_space(raw, source=source)
    check_dataset(space.workload, source=source)  # the data files it names, read once (not on reloads)
    return space


def parse_space(raw: dict[str, Any], *, source: str = "<search space>") -> SearchSpace:
    """Validate an already-parsed mapping (see :func:`load_space`)."""
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as e:
        field, message = _first_problem(e)
        raise ConfigError(message, source=source, field=field) from None
    _check_semantics(space, source)
    return space


def _check_semantics(space: SearchSpace, source: str) -> None:
    try:
        engine = get_engine(space.engine)
    except ConfigError as e:
        raise ConfigError(str(e).removeprefix("engine: "), source=source, field="engine") from None
    if space.engine_version not in engine.known_versions():
        raise ConfigError(
            f"unknown {space.engine} version {space.engine_version!r}; known: "
            f"{', '.join(engine.known_versions())}",
            source=source,
            field="engine_version",
        )
    specs = engine.flag_specs(space.engine_version)
    if space.workload.ignore_eos and not engine.request.accepts_ignore_eos:
        raise ConfigError(
            f"{space.engine} refuses requests carrying ignore_eos; set workload.ignore_eos: false",
            source=source,
            field="workload.ignore_eos",
        )
    flags = [*space.fixed_flags, *(space.flag_of(p) for p in space.parameters)]
    engine.check_flags(flags, space.engine_version, source=source)

    for name, value in space.fixed_flags.items():
        _check_choice(specs[name].choices, value, source, f"fixed_flags.{name}")
        if problem := specs[name].value_problem(value):
            raise ConfigError(problem, source=source, field=f"fixed_flags.{name}")
    overlap = set(space.fixed_flags) & {space.flag_of(p) for p in space.parameters}
    if overlap:
        raise ConfigError(
            f"{', '.join(sorted(overlap))} is both fixed and searched; keep one",
            source=source,
            field="fixed_flags",
        )

    seen: list[str] = []
    for name, param in space.parameters.items():
        field = f"parameters.{name}"
        spec = specs[space.flag_of(name)]
        if isinstance(param, BoolParam) and spec.kind != "switch":
            raise ConfigError(
                f"--{spec.name} takes a value; use categorical, not bool", source=source, field=field
            )
        if isinstance(param, CategoricalParam):
            for choice in param.choices:
                _check_choice(spec.choices, choice, source, f"{field}.choices")
                if problem := spec.value_problem(choice):
                    raise ConfigError(problem, source=source, field=f"{field}.choices")
        elif isinstance(param, IntParam | FloatParam):
            if isinstance(param, FloatParam) and spec.type is int:
                raise ConfigError(f"--{spec.name} takes an integer; use type int", source=source, field=field)
            for end in ("low", "high"):
                if problem := spec.value_problem(getattr(param, end)):
                    raise ConfigError(problem, source=source, field=f"{field}.{end}")
        for dep, want in (param.when or {}).items():
            if dep not in seen:
                raise ConfigError(
                    f"condition on {dep!r}, which is not a parameter declared above this one",
                    source=source,
                    field=f"{field}.when",
                )
            for w in want if isinstance(want, list) else [want]:
                if not domain_contains(space.parameters[dep], w):
                    raise ConfigError(f"{dep} can never be {w!r}", source=source, field=f"{field}.when")
        seen.append(name)

    for i, obj in enumerate(space.objectives):
        if obj.metric not in METRIC_NAMES:
            raise ConfigError(
                f"unknown metric {obj.metric!r}; known: {', '.join(sorted(METRIC_NAMES))}",
                source=source,
                field=f"objectives.{i}.metric",
            )

    for i, seed in enumerate(space.seed_trials):
        field = f"seed_trials.{i}({seed.name})"
        for name, value in seed.params.items():
            if name not in space.parameters:
                raise ConfigError(f"{name!r} is not a parameter of this space", source=source, field=field)
            if not domain_contains(space.parameters[name], value):
                raise ConfigError(f"{name}={value!r} is outside its range", source=source, field=field)
        for name in space.parameters:
            active = is_active(space, name, seed.params)
            if active and name not in seed.params:
                raise ConfigError(f"{name} is active but has no value", source=source, field=field)
            if not active and name in seed.params:
                raise ConfigError(
                    f"{name} is set but its condition does not hold", source=source, field=field
                )

    seed_names = [seed.name for seed in space.seed_trials]
    for i, name in enumerate(space.confirm.baselines if space.confirm is not None else ()):
        if name not in seed_names:
            raise ConfigError(
                f"{name!r} is not a seed trial; seed_trials: {', '.join(seed_names) or 'none'}",
                source=source,
                field=f"confirm.baselines.{i}",
            )

    if space.quality is not None and space.quality.reference not in seed_names:
        raise ConfigError(
            f"{space.quality.reference!r} is not a seed trial (the reference answers come from one); "
            f"seed_trials: {', '.join(seed_names) or 'none'}",
            source=source,
            field="quality.reference",
        )

    sizes = [math.prod(len(v) for v in tier.values()) for tier in space.warm_start]
    if sum(sizes) > MAX_WARM_START:
        biggest = max(range(len(sizes)), key=sizes.__getitem__)
        raise ConfigError(
            f"{sum(sizes):,} warm-start points in all (tier {biggest}: "
            f"{' x '.join(str(len(v)) for v in space.warm_start[biggest].values())}); at most "
            f"{MAX_WARM_START:,} - each is a server start",
            source=source,
            field=f"warm_start.{biggest}",
        )
    for i, tier in enumerate(space.warm_start):
        for name, values in tier.items():
            if name not in space.parameters:
                raise ConfigError(f"{name!r} is not a parameter", source=source, field=f"warm_start.{i}")
            for v in values:
                if not domain_contains(space.parameters[name], v):
                    raise ConfigError(
                        f"{name}={v!r} is outside its range", source=source, field=f"warm_start.{i}"
                    )

    known = set(space.hardware) | {
        f.replace("-", "_") for f in (*space.fixed_flags, *map(space.flag_of, space.parameters))
    }
    searched = {space.flag_of(p).replace("-", "_") for p in space.parameters}
    for i, c in enumerate(space.constraints):
        field = f"constraints.{i}({c.name})"
        if c.when is None and c.expr is None:
            raise ConfigError(
                "a constraint needs `when` (parameter values) or `expr`", source=source, field=field
            )
        for dep, want in (c.when or {}).items():
            if dep not in space.parameters:
                raise ConfigError(f"{dep!r} is not a parameter", source=source, field=f"{field}.when")
            for w in want if isinstance(want, list) else [want]:
                if not domain_contains(space.parameters[dep], w):
                    raise ConfigError(f"{dep} can never be {w!r}", source=source, field=f"{field}.when")
        if c.expr is not None:
            tree = compile_expr(c.expr, source=source, field=f"{field}.expr")
            names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            if unknown := sorted(names - known):
                raise ConfigError(
                    f"unknown name(s) {', '.join(unknown)}; use flags (with _) or hardware figures",
                    source=source,
                    field=f"{field}.expr",
                )
            if not names & searched:
                raise ConfigError(
                    f"{c.expr!r} names no searched parameter: it would prune every configuration or none",
                    source=source,
                    field=f"{field}.expr",
                )
            _check_evaluates(space, tree, c.expr, source, f"{field}.expr")


def _check_evaluates(space: SearchSpace, tree: ast.Expression, expr: str, source: str, field: str) -> None:
    """Evaluate ``expr`` on a configuration with a value of each parameter's type, so a formula that can
    never evaluate (``'a' < 1``) is an error now instead of a crash in the middle of the study."""
    flags = {k.replace("-", "_"): v for k, v in space.fixed_flags.items()}
    for name, p in space.parameters.items():
        flags[space.flag_of(name).replace("-", "_")] = _typical(p)
    try:
        evaluate(tree, {**flags, **space.hardware})
    except (TypeError, ArithmeticError, ValueError) as e:
        raise ConfigError(f"{expr!r} cannot be evaluated: {e}", source=source, field=field) from None


def _typical(param: object) -> object:
    """A value of the parameter's type: the first non-null choice, the low end, False."""
    if isinstance(param, CategoricalParam):
        return next((c for c in param.choices if c is not None), None)
    if isinstance(param, BoolParam):
        return False
    return getattr(param, "low", None)


def _check_choice(choices: tuple[str, ...] | None, value: object, source: str, field: str) -> None:
    if choices is None or value is None or isinstance(value, bool):
        return
    if str(value) not in choices:
        raise ConfigError(f"{value!r} is not one of {', '.join(choices)}", source=source, field=field)


def _first_problem(error: ValidationError) -> tuple[str, str]:
    """The most telling problem first: an unknown key (with the key it was probably meant to be) before
    the "field required" it causes; the count of the others."""
    problems = error.errors()
    unknown = [p for p in problems if p["type"] == "extra_forbidden"]
    first = unknown[0] if unknown else problems[0]
    loc = [str(part) for part in first["loc"]]
    message = str(first["msg"])
    if first["type"] == "extra_forbidden":
        known = _field_names()
        section = ".".join(loc[:-1])
        elsewhere = sorted({s for s in known.get(loc[-1], []) if s != section})
        close = [] if elsewhere else difflib.get_close_matches(loc[-1], list(known), n=1, cutoff=0.75)
        if elsewhere:  # a real key, in another section: say which one instead of "did you mean" itself
            here = section or "the top level"
            message = f"unknown key {loc[-1]!r} in {here} (it is a key of {' or '.join(elsewhere)})"
        else:
            message = f"unknown key {loc[-1]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        required = {".".join(map(str, p["loc"])) for p in problems if p["type"] == "missing"}
        if close and ".".join([*loc[:-1], close[0]]) in required:
            problems = [
                p for p in problems if ".".join(map(str, p["loc"])) != ".".join([*loc[:-1], close[0]])
            ]
    others = len(problems) - 1
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others > 0 else ""
    return ".".join(loc), message + more


def _field_names() -> dict[str, list[str]]:
    """Every key the space file's sections know, for "did you mean", with the sections that have it
    (dotted, "" for the top level; a section inside a list or mapping is named by its field)."""
    from pydantic import BaseModel

    names: dict[str, list[str]] = {}

    def walk(model: type[BaseModel], section: str, chain: tuple[type, ...]) -> None:
        if model in chain:
            return
        for name, info in model.model_fields.items():
            names.setdefault(name, []).append(section)
            for sub in _models_in(info.annotation):
                walk(sub, f"{section}.{name}" if section else name, (*chain, model))

    walk(SearchSpace, "", ())
    return names


def _models_in(annotation: object) -> list[type]:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]
