"""Repairs that bisect: a numeric repair moves into the gap the study's own trials leave open.

A repair rule moves one number by a fixed step or by what the evidence says was missing
(``mem-fraction-static 0.73 -> 0.64`` after an out-of-memory start). The study may already know
more about that configuration's other values of the same parameter - its *siblings*, equal in every
other parameter:

* a sibling that crashed *the same way* lies on the crash's side (``0.80``: out of memory too) and
  moves the crash's end of the gap;
* a sibling that crashed another way on the far side (``0.59``: not enough memory) bounds the gap
  from there, and so does one that ran (``0.60`` ran: the edge lies between it and the crash).

The repaired value then becomes the grid point halfway through the gap, so successive repairs
bisect towards the edge (the most memory that still starts, the largest batch that fits). When no
grid point is left strictly inside the gap the repair is dropped: the edge is found to the grid's
resolution (a sibling ran just beside the crash) or there is no window at all (crashes on both
sides one step apart) - another trial there would only crash again or repeat a known result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from optuna.trial import FrozenTrial

from tuner.search.learned import ran
from tuner.space.repair import Change, Repair
from tuner.space.sample import on_grid
from tuner.space.schema import CategoricalParam, FloatParam, IntParam, SearchSpace
from tuner.store.attrs import TrialAttr, is_crash


def bracketed(space: SearchSpace, repair: Repair, trials: Sequence[FrozenTrial]) -> Repair | None:
    """``repair`` with each numeric move kept inside the gap its siblings leave; ``None`` if no gap."""
    params = dict(repair.params)
    changes: list[Change] = []
    for change in repair.changes:
        new = change.new
        if _numeric(change.old) and _numeric(new) and new != change.old:
            same, other = _siblings(params, change.param, trials, repair.rule.kind.value)
            new = _inside_gap(space.parameters[change.param], change.old, new, same, other)
            if new is None:
                return None
        params[change.param] = new
        changes.append(replace(change, new=new))
    return replace(repair, params=params, changes=tuple(changes))


def _siblings(
    params: Mapping[str, Any], name: str, trials: Sequence[FrozenTrial], kind: str
) -> tuple[list[float], list[float]]:
    """Values of ``name`` at which configurations equal to ``params`` elsewhere crashed with ``kind``
    (the crash's side), and at which they ran or crashed otherwise (the far side's evidence)."""
    others = {k: v for k, v in params.items() if k != name}
    same: list[float] = []
    other: list[float] = []
    for t in trials:
        value = _number(t.params.get(name))
        if value is None or {k: v for k, v in t.params.items() if k != name} != others:
            continue
        if is_crash(t):
            (same if t.user_attrs.get(TrialAttr.FAILURE_KIND) == kind else other).append(value)
        elif ran(t):
            other.append(value)
    return same, other


def _inside_gap(
    param: object, old: float, new: float, same: list[float], other: list[float]
) -> float | int | None:
    """``new`` if it lies strictly inside the open gap beyond ``old``; else the gap's middle grid point."""
    down = new < old
    # the nearest far-side evidence (ran, or crashed another way) beyond the crash at ``old``
    beyond = [v for v in other if (v < old if down else v > old)]
    if not beyond:
        return new
    far = max(beyond) if down else min(beyond)
    # the crash's end: the nearest same-way crash between ``far`` and ``old`` (``old`` itself crashed)
    if down:
        near = min([v for v in same if far < v <= old] or [old])
    else:
        near = max([v for v in same if old <= v < far] or [old])
    low, high = (far, near) if down else (near, far)
    if low < new < high:
        return new
    points = _grid_between(param, low, high)
    if not points:
        return None
    return points[(len(points) - 1) // 2]  # the middle one (the lower of two)


def _grid_between(param: object, low: float, high: float) -> list[Any]:
    """The domain's values strictly between ``low`` and ``high``, ascending."""
    if isinstance(param, CategoricalParam):
        inside = [(v, c) for c in param.choices if (v := _number(c)) is not None and low < v < high]
        return [c for _, c in sorted(inside, key=lambda vc: vc[0])]  # the choices themselves
    if isinstance(param, IntParam | FloatParam):
        step = param.step if param.step is not None else (1 if isinstance(param, IntParam) else None)
        if step is None:
            return [(low + high) / 2]
        first = int((low - param.low) / step + 1e-9) + 1
        out = []
        k = first
        while (value := on_grid(param, param.low + k * step)) < high - 1e-9:
            if value > low + 1e-9:
                out.append(int(value) if isinstance(param, IntParam) else value)
            k += 1
        return out
    return []


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    return float(value) if _numeric(value) else None
