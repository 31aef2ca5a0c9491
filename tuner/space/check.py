"""``python -m tuner.study --check SPACE``: what a space file resolves to, without starting anything.

:func:`describe` is called on a space :func:`tuner.space.load.load_space` accepted; the lines it
returns say what the study would search: each parameter with its domain and condition, the number of
configurations (exact when every parameter is discrete), the seed trials, the warm-start points, the
known constraints (and which seeds they would prune), the workload, the objectives, the pruner ``--prune`` uses and the confirmation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from tuner.engines import get_engine
from tuner.space.constraints import violated_constraint
from tuner.space.sample import is_active, params_to_flags, seeds_to_enqueue, warm_start_points
from tuner.space.schema import BoolParam, CategoricalParam, FloatParam, IntParam, SearchSpace
from tuner.space.sections import PruningSpec


def describe(space: SearchSpace, source: str) -> list[str]:
    engine = get_engine(space.engine)
    lines = [
        f"{source}: valid",
        f"  study name: {space.name}; engine: {engine.name} {space.engine_version}; model: {space.model}",
        f"  target: {space.target.kind}; host {space.launch.host}; "
        f"start-up timeout {space.launch.startup_timeout_s:g} s",
        f"  fixed flags: {_flags(space.fixed_flags) or 'none'}",
        f"  parameters ({len(space.parameters)}):",
    ]
    for name, p in space.parameters.items():
        when = f"  when {_when(p.when)}" if p.when else ""
        lines.append(f"    {name}: {_domain(p)}{when}")
    size, exact = space_size(space)
    lines.append(
        f"  configurations: {'' if exact else 'at least '}{size:,}"
        + ("" if exact else " (continuous ranges)")
    )
    lines.append(f"  seed trials ({len(space.seed_trials)}, in the order they run):")
    reference = space.quality.reference if space.quality is not None else None
    for seed in seeds_to_enqueue(space):
        params = {k: v for k, v in seed.params.items() if is_active(space, k, dict(seed.params))}
        pruned = violated_constraint(space, dict(params_to_flags(space, params)))
        lines.append(
            f"    {seed.name}"
            + ("  (the quality gate's reference: runs first)" if seed.name == reference else "")
            + (f"  (pruned before launch: {pruned})" if pruned else "")
        )
    lines.append(f"  warm-start points: {len(warm_start_points(space))}")
    lines.append(f"  known constraints ({len(space.constraints)}):")
    for c in space.constraints:
        what = c.expr if c.expr is not None else _when(c.when or {})
        lines.append(f"    {c.name}: {what}" + (f" - {c.reason}" if c.reason else ""))
    w = space.workload
    size_text = f"{w.num_requests} requests" if w.num_requests is not None else f"{w.duration_s:g} s"
    if w.dataset is not None:  # ShareGPT files and traces carry their own lengths
        source = f"dataset {w.dataset.kind}" + (
            f" {path}" if (path := getattr(w.dataset, "path", None)) else ""
        )
        if w.dataset.kind == "shared_prefix":
            source += f" ({w.dataset.groups} x {w.dataset.prefix_len} words, share {w.dataset.share:g}), input {w.input_len}"
    elif w.prompts_file is not None:
        source = f"prompts file {w.prompts_file}"
    else:
        source = f"input {w.input_len}"
    answer = f"output {w.output_len}" if not (w.dataset and w.dataset.kind in ("sharegpt", "trace")) else ""
    lines.append(
        f"  workload: {w.api}, {size_text}, {w.arrival.kind} arrivals, {source}" + (f", {answer}" if answer else "")
        + (f"; lengths in the tokens of {w.tokenizer}" if w.tokenizer else "")
    )  # fmt: skip
    if space.quality is not None:
        q = space.quality
        lines.append(
            f"  quality gate: {q.probes} probes against seed {q.reference!r}, passing at {q.threshold()}"
        )
    lines.append("  objectives: " + ", ".join(f"{o.metric} ({o.direction})" for o in space.objectives))
    lines.append("  pruning (with --prune): " + _pruning(space.pruning))
    if (confirm := space.confirm) is not None:
        against = f", against {', '.join(confirm.baselines)}" if confirm.baselines else ""
        lines.append(f"  confirmation: top {confirm.top_k} x {confirm.repeats} repeats{against}")
    return lines


def space_size(space: SearchSpace) -> tuple[int, bool]:
    """How many configurations the space holds (conditions respected), and whether that is exact
    (``False``: some float has no step; it counts as one value)."""
    exact = True

    def count(names: list[str], chosen: dict[str, object]) -> int:
        nonlocal exact
        if not names:
            return 1
        name, rest = names[0], names[1:]
        if not is_active(space, name, chosen):
            return count(rest, chosen)
        p = space.parameters[name]
        n = _count(p)
        if n is None:
            exact = False
            return count(rest, chosen)
        if not any(name in (q.when or {}) for q in space.parameters.values()):
            return n * count(rest, chosen)  # nothing depends on it: no need to enumerate
        if isinstance(p, BoolParam | CategoricalParam):
            choices = [False, True] if isinstance(p, BoolParam) else list(p.choices)
            return sum(count(rest, {**chosen, name: v}) for v in choices)
        return n * count(rest, chosen)  # a condition on a number: counted as if never met

    return count(list(space.parameters), {}), exact


def _count(p: object) -> int | None:
    """How many values a parameter takes (``None``: a continuous range)."""
    if isinstance(p, BoolParam):
        return 2
    if isinstance(p, CategoricalParam):
        return len(p.choices)
    if isinstance(p, IntParam):
        return (p.high - p.low) // (1 if p.log else p.step) + 1
    if isinstance(p, FloatParam) and p.step is not None:
        return math.floor((p.high - p.low) / p.step + 1e-9) + 1
    return None


def _domain(p: object) -> str:
    if isinstance(p, BoolParam):
        return "bool"
    if isinstance(p, CategoricalParam):
        return "one of " + ", ".join(str(c) for c in p.choices)
    if isinstance(p, IntParam | FloatParam):
        step = f" step {p.step:g}" if p.step is not None else ""
        return f"{type(p).__name__[:-5].lower()} {p.low:g}..{p.high:g}{step}{' log' if p.log else ''}"
    return str(p)


def _pruning(p: PruningSpec) -> str:
    """The ``pruning:`` section in words: the pruner and the settings it reads."""
    if p.pruner == "none":
        return "none"
    if p.pruner == "wilcoxon":
        return (f"wilcoxon after {p.warmup_windows} windows, p < {p.p_threshold:g}, "
                f"a window worse only beyond {p.tolerance * 100:g} % of the best trial's")  # fmt: skip
    text = f"{p.pruner} after {p.warmup_windows} windows, from {p.n_startup_trials} complete trials"
    return text + (f", patience {p.patience} windows" if p.pruner == "patient" else "")


def _when(when: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in when.items())


def _flags(flags: Mapping[str, object]) -> str:
    return " ".join(f"--{k}" if v is True else f"--{k} {v}" for k, v in flags.items() if v is not False)


def _length(spec: object) -> str:
    if isinstance(spec, int):
        return str(spec)
    dist, low, high, mean = (getattr(spec, a, None) for a in ("dist", "low", "high", "mean"))
    return f"{dist} {low}..{high}" if dist == "uniform" else f"{dist} mean {mean}"
