"""From a crash to the neighbouring configuration its evidence points to, inside the search space.

The engine's :class:`~tuner.core.repairs.RepairRule` table speaks in flags; here each move is
mapped onto the space's parameter for that flag and snapped onto its domain (grid, bounds,
choices). A move whose flag is fixed or absent, or that would leave the domain, does not apply:
a repair never proposes a configuration outside the space.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuner.core.failures import Failure
from tuner.core.repairs import Action, Move, RepairRule
from tuner.space.sample import is_active, on_grid, params_to_flags
from tuner.space.schema import BoolParam, CategoricalParam, FloatParam, IntParam, SearchSpace


@dataclass(frozen=True)
class Change:
    """One parameter moved by a repair."""

    param: str
    action: Action
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.param} {self.old} -> {self.new}"

    def to_attrs(self) -> dict[str, Any]:
        return {"param": self.param, "action": self.action.value, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class Repair:
    """A repaired neighbour of a crashed configuration."""

    params: dict[str, Any]
    changes: tuple[Change, ...]
    rule: RepairRule
    scope: dict[str, Any] = field(default_factory=dict)  # the crash's values of the rule's scope params
    stripped: bool = False  # the other known hazards moved to their safe values too (:func:`stripped`)

    def describe(self) -> str:
        first, rest = self.changes[0], self.changes[1:]
        text = f"{first.describe()} ({self.rule.why})"
        if rest:
            text += f"; {'every other known hazard off' if self.stripped else 'and'}: " + ", ".join(
                c.describe() for c in rest
            )
        return text

    def to_attrs(self) -> dict[str, Any]:
        return {
            "kind": self.rule.kind.value,
            "changes": [c.to_attrs() for c in self.changes],
            "scope": dict(self.scope),
            "why": self.rule.why,
            **({"stripped": True} if self.stripped else {}),
        }


def repairs_for(
    space: SearchSpace, params: Mapping[str, Any], failure: Failure, rules: Sequence[RepairRule]
) -> list[Repair]:
    """Every repair the rules offer for ``failure`` of ``params``, in the table's order."""
    flags = dict(params_to_flags(space, params))
    param_of = {space.flag_of(p): p for p in space.parameters}
    out: list[Repair] = []
    for rule in rules:
        if not rule.applies(failure, flags):
            continue
        new = dict(params)
        changes: list[Change] = []
        for move in rule.moves:
            name = param_of.get(move.flag)
            if name is None or name not in new:
                break  # fixed or inactive here: nothing of the space to move
            value = _moved(space.parameters[name], new[name], move, failure)
            if value is None or value == new[name]:
                break
            changes.append(Change(name, move.action, on_grid(space.parameters[name], new[name]), value))
            new[name] = value
        else:
            new = {k: v for k, v in new.items() if is_active(space, k, new)}
            scope = {param_of[f]: params[param_of[f]] for f in rule.scope if param_of.get(f) in params}
            out.append(Repair(new, tuple(changes), rule, scope))
    return out


def stripped(
    space: SearchSpace, repair: Repair, rules: Sequence[RepairRule], failure: Failure
) -> Repair | None:
    """``repair`` with every other flag value the engine's table knows to crash (a ``hazard`` rule's
    ``when``, cured by setting one value: an FP8 KV cache, CUDA graphs, two-batch overlap, ...) set to
    the value that cures it as well, whatever this crash's kind: the configuration's core, free of every known
    hazard. ``None`` when the configuration has no other such value (or none the space can move).

    A configuration drawn with several hazards at once crashes for one of them at a time; repairing one
    hazard per trial costs a crash per hazard before the core runs. The stripped repair tells at once
    whether the core (a kernel at a memory fraction, say) runs and how fast; local moves from it add
    the hazards back one at a time where the feasibility model deems them safe.
    """
    param_of = {space.flag_of(p): p for p in space.parameters}
    new = dict(repair.params)
    changes = list(repair.changes)
    moved = {c.param for c in changes}
    for rule in rules:
        if not rule.hazard or not rule.when or any(m.action is not Action.SET for m in rule.moves):
            continue
        flags = dict(params_to_flags(space, new))
        if not rule.holds(flags):
            continue
        for move in rule.moves:
            name = param_of.get(move.flag)
            if name is None or name not in new or name in moved:
                continue
            value = _moved(space.parameters[name], new[name], move, failure)
            if value is None or value == new[name]:
                continue
            changes.append(Change(name, move.action, new[name], value))
            new[name] = value
            moved.add(name)
    if len(changes) == len(repair.changes):
        return None
    new = {k: v for k, v in new.items() if is_active(space, k, new)}
    return Repair(new, tuple(changes), repair.rule, repair.scope, stripped=True)


def hazard_choices(space: SearchSpace, rules: Sequence[RepairRule]) -> dict[str, tuple[Any, ...]]:
    """Per choice (or switch) parameter, its values that a ``hazard`` rule of the engine's table names: an
    FP8 KV cache dtype, a CUDA-graph backend, ``enable-torch-compile: true``, ... (empty: none).

    A value counts when the rule's ``when`` lists it for the parameter's flag, whatever the rule asks of
    other flags: a known cause of crashes on some hardware, worth trying one at a time.
    """
    out: dict[str, tuple[Any, ...]] = {}
    for name, param in space.parameters.items():
        if isinstance(param, BoolParam):
            choices: Sequence[Any] = (False, True)
        elif isinstance(param, CategoricalParam):
            choices = param.choices
        else:
            continue
        flag = space.flag_of(name)
        risky = tuple(
            c for c in choices if any(r.hazard and flag in r.when and among(c, r.when[flag]) for r in rules)
        )
        if risky:
            out[name] = risky
    return out


def among(value: Any, values: Sequence[object]) -> bool:
    """``value in values`` without ``True == 1`` (a switch is not a count)."""
    return any(type(value) is type(v) and value == v for v in values)


def _moved(param: object, current: Any, move: Move, failure: Failure) -> Any:
    """``current`` after ``move`` on ``param``'s domain; ``None`` when the move cannot apply."""
    if move.action is Action.SET:
        if isinstance(param, BoolParam):
            return move.value if isinstance(move.value, bool) else None
        if isinstance(param, CategoricalParam):
            return move.value if move.value in param.choices else None
        return move.value if isinstance(move.value, int | float) and _in_range(param, move.value) else None
    if (
        isinstance(current, bool)
        or not isinstance(current, int | float)
        or (current <= 0 and move.action is Action.HALVE)
    ):
        return None  # an engine default (None) or "unlimited" (-1) has no half
    down = move.action in (Action.LOWER, Action.HALVE)
    if isinstance(param, CategoricalParam):
        numeric = sorted(
            c for c in param.choices if isinstance(c, int | float) and not isinstance(c, bool) and c > 0
        )
        if move.action is Action.HALVE:
            smaller = [c for c in numeric if c <= current / 2]
            return smaller[-1] if smaller else None
        beyond = [c for c in numeric if (c < current if down else c > current)]
        return (beyond[-1] if down else beyond[0]) if beyond else None
    if not isinstance(param, IntParam | FloatParam):
        return None
    if move.action is Action.HALVE:
        target = current / 2
    else:
        evidence = move.amount(failure) if move.amount is not None else None
        span = param.high - param.low
        amount = evidence if evidence is not None else move.step * span
        target = current - amount if down else current + amount
    return _snap(param, target, down=down, current=current)


def _snap(param: IntParam | FloatParam, target: float, *, down: bool, current: float) -> float | int | None:
    """The grid value at or beyond ``target`` in the move's direction, at least one step from
    ``current``, within bounds; ``None`` if the bound is already reached."""
    step = param.step if param.step is not None else (1 if isinstance(param, IntParam) else None)
    if step is not None:
        k = (target - param.low) / step
        k = math.floor(k + 1e-9) if down else math.ceil(k - 1e-9)
        here = round((current - param.low) / step)
        k = min(k, here - 1) if down else max(k, here + 1)
        value: float = on_grid(param, param.low + k * step)
    else:
        value = target
    value = max(param.low, min(param.high, value))
    if (value >= current) if down else (value <= current):
        return None
    return int(value) if isinstance(param, IntParam) else value


def _in_range(param: object, value: float) -> bool:
    return isinstance(param, IntParam | FloatParam) and param.low <= value <= param.high
