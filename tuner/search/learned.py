"""Constraints learned from crashes whose repaired neighbour ran.

A crash C followed by its repair R (``TrialAttr.REPAIR`` on R: the moved parameters and the rule's
scope) that ran is evidence of a cause: C's value of the moved parameter, with the scope parameters
at C's values, crashes with C's failure kind. The constraint covers no more than that:

* a lowered numeric parameter (``mem-fraction-static 0.85 -> 0.64`` after a CUDA OOM) gives
  ``mem-fraction-static >= 0.85`` - more of what ran out of memory runs out too;
* a raised one gives ``<=``; a switched value gives ``==`` that value;
* only where every scope parameter has the crashed configuration's value (a memory crash of
  ``awq_marlin`` says nothing about ``awq``).

Constraints with the same kind, parameter, direction and scope merge (the widest bound the crashes
support). A configuration inside a constraint's region that ran contradicts it: a bound then moves
past every run inside it, kept by the crashes beyond (``>= 0.63`` with a run at 0.75 becomes
``>= 0.76`` when a crash at 0.76 supports it), and a constraint with no crash left is dropped.
Everything is derived from the study's trials each time, so a resumed study, a second worker and the
nightly job learn the same constraints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tuner.core.repairs import Action
from tuner.space.schema import SearchSpace
from tuner.store.attrs import TrialAttr, is_crash

_OPS = {Action.LOWER: ">=", Action.HALVE: ">=", Action.RAISE: "<=", Action.SET: "=="}


@dataclass
class LearnedConstraint:
    """``param op value`` where every ``scope`` parameter has its value crashes with ``kind``."""

    kind: str
    param: str
    op: str  # ">=", "<=" or "=="
    value: Any
    scope: dict[str, Any]
    crashed: list[int] = field(default_factory=list)  # the crashes that support it
    repaired_by: list[int] = field(default_factory=list)  # their repaired neighbours that ran

    def covers(self, params: Mapping[str, Any]) -> bool:
        """Whether ``params`` lies in the region this constraint says crashes."""
        if self.param not in params or any(params.get(k) != v for k, v in self.scope.items()):
            return False
        v = params[self.param]
        if self.op == "==":
            return bool(v == self.value)
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        return v >= self.value if self.op == ">=" else v <= self.value

    def within(self, other: LearnedConstraint) -> bool:
        """Whether ``other``'s region holds all of this one's (same kind, parameter and direction)."""
        if (self.kind, self.param, self.op) != (other.kind, other.param, other.op):
            return False
        if any(k not in self.scope or self.scope[k] != v for k, v in other.scope.items()):
            return False
        if self.op == "==":
            return bool(self.value == other.value)
        return self.value >= other.value if self.op == ">=" else self.value <= other.value

    def condition(self) -> str:
        where = [f"{k}={v}" for k, v in sorted(self.scope.items())]
        return ", ".join([*where, f"{self.param} {self.op} {self.value}"])

    def describe(self) -> str:
        """``quantization=awq_marlin, mem-fraction-static >= 0.85 -> cuda_oom (crashed: 3, 9; ran when
        repaired: 4, 10)``"""
        crashed = ", ".join(f"#{n}" for n in self.crashed)
        ran = ", ".join(f"#{n}" for n in self.repaired_by)
        return f"{self.condition()} -> {self.kind} (crashed: trials {crashed}; repaired and ran: {ran})"

    def to_space_entry(self, space: SearchSpace) -> dict[str, Any]:
        """A ``constraints:`` entry of the space file (``tuner.space.constraints``) with the same region."""
        terms = [f"{_name(space, k)} == {v!r}" for k, v in sorted(self.scope.items())]
        terms.append(f"{_name(space, self.param)} {self.op} {self.value!r}")
        crashed = ", ".join(str(n) for n in self.crashed)
        return {
            "name": f"learned-{self.kind}-{self.param}".replace("_", "-"),
            "expr": " and ".join(terms),
            "reason": f"{self.kind} in trials {crashed}; their repaired neighbours ran",
        }

    def to_attrs(self) -> dict[str, Any]:
        return {"kind": self.kind, "condition": self.condition(), "crashed": self.crashed,
                "repaired_by": self.repaired_by}  # fmt: skip


def _name(space: SearchSpace, param: str) -> str:
    return (space.flag_of(param) if param in space.parameters else param).replace("-", "_")


def ran(t: FrozenTrial) -> bool:
    """A server started with this configuration and served the benchmark (complete, or stopped early
    for being slow), as opposed to a crash or a prune before launch."""
    if t.state is TrialState.COMPLETE:
        return True
    return t.state is TrialState.PRUNED and TrialAttr.FAILURE_KIND not in t.user_attrs


def launched(t: FrozenTrial) -> bool:
    """A server was started with this configuration: it ran, or it crashed."""
    return ran(t) or is_crash(t)


@dataclass(frozen=True)
class _Evidence:
    """One crash whose repaired neighbour ran."""

    kind: str
    param: str
    op: str
    old: Any
    scope: dict[str, Any]
    crashed: int
    repaired_by: int


def learned_constraints(trials: Sequence[FrozenTrial]) -> list[LearnedConstraint]:
    """The constraints the study's repaired crashes support, minus those a configuration that ran contradicts.

    Crashes of one kind cured by the same move (the same parameter, direction and, for ``==``, value)
    first generalise together: the scope keeps only the parameters on which all of them agree (a
    segfault with graphs on seen with and without torch.compile does not depend on torch.compile).
    When a configuration that ran contradicts the generalisation, each scope keeps its own constraint.
    """
    ran_params = [t.params for t in trials if ran(t)]
    groups: dict[tuple[Any, ...], list[_Evidence]] = {}
    for e in _evidence(trials):
        groups.setdefault((e.kind, e.param, e.op, repr(e.old) if e.op == "==" else ""), []).append(e)
    out: list[LearnedConstraint] = []
    for group in groups.values():
        general = _bounded(group, ran_params)
        if general is not None:
            out.append(general)
            if len(general.crashed) == len({e.crashed for e in group}):
                continue  # every crash of the group is inside it
        by_scope: dict[str, list[_Evidence]] = {}
        for e in group:
            by_scope.setdefault(repr(sorted(e.scope.items(), key=lambda kv: kv[0])), []).append(e)
        for sub in by_scope.values():
            c = _bounded(sub, ran_params)
            if c is not None and (general is None or not c.within(general)):
                out.append(c)
    return out


def _bounded(group: list[_Evidence], ran_params: list[dict[str, Any]]) -> LearnedConstraint | None:
    """The group's merged constraint; when a configuration that ran lies inside its region, a numeric
    bound moves past every such configuration (``mem-fraction-static >= 0.63`` with a run at 0.75
    becomes ``>= 0.76``, kept by the crashes at 0.76 and above); ``None`` when no crash is left."""
    merged = _merge(group)
    inside = [p[merged.param] for p in ran_params if merged.covers(p)]
    if not inside:
        return merged
    if merged.op == "==":
        return None
    edge = max(inside) if merged.op == ">=" else min(inside)
    kept = [e for e in group if (e.old > edge if merged.op == ">=" else e.old < edge)]
    # the kept crashes agree on at least the group's scope: their region lies inside the group's, past
    # every run in it
    return _merge(kept) if kept else None


def _evidence(trials: Sequence[FrozenTrial]) -> list[_Evidence]:
    by_number = {t.number: t for t in trials}
    out: list[_Evidence] = []
    for r in trials:
        repair = r.user_attrs.get(TrialAttr.REPAIR)
        if not isinstance(repair, dict) or not ran(r):
            continue
        crash = by_number.get(repair.get("of", -1))
        changes = repair.get("changes") or []
        if crash is None or crash.user_attrs.get(TrialAttr.FAILURE_KIND) != repair["kind"] or not changes:
            continue
        first, rest = changes[0], changes[1:]
        scope = {**dict(repair.get("scope") or {}), **{c["param"]: c["old"] for c in rest}}
        scope.pop(first["param"], None)
        op = _OPS[Action(first["action"])]
        out.append(_Evidence(repair["kind"], first["param"], op, first["old"], scope, crash.number, r.number))
    return out


def _merge(group: list[_Evidence]) -> LearnedConstraint:
    """The least general constraint covering every crash of ``group``: agreed scope, widest bound."""
    first = group[0]
    scope = {k: v for k, v in first.scope.items() if all(k in e.scope and e.scope[k] == v for e in group)}
    olds = [e.old for e in group]
    value = min(olds) if first.op == ">=" else max(olds) if first.op == "<=" else first.old
    return LearnedConstraint(first.kind, first.param, first.op, value, scope,
                             sorted({e.crashed for e in group}), sorted({e.repaired_by for e in group}))  # fmt: skip


def covering(constraints: Iterable[LearnedConstraint], params: Mapping[str, Any]) -> LearnedConstraint | None:
    """The first learned constraint whose region holds ``params``."""
    return next((c for c in constraints if c.covers(params)), None)
