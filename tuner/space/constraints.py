"""Known constraints: configurations declared unworkable in the space file, pruned before launch.

A constraint is either ``when`` (parameter values, as in parameter conditions) or ``expr``, a
small formula over flags and the space's ``hardware`` figures, e.g.::

    constraints:
      - name: weights-fit
        expr: "mem_fraction_static * gpu_memory_gb < weights_gb + 1"
        reason: the weights alone exceed the static memory pool

Flag names are written with underscores. ``expr`` is parsed with :mod:`ast` and only arithmetic,
comparisons, ``and``/``or``/``not`` and names are allowed: no ``eval`` of file contents.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from typing import Any

from tuner.core.errors import ConfigError
from tuner.space.schema import SearchSpace

MAX_EXPR = 500
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_CMPS = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}  # fmt: skip


def compile_expr(expr: str, *, source: str = "", field: str = "") -> ast.Expression:
    """Parse ``expr`` and check it uses only the allowed syntax."""
    if len(expr) > MAX_EXPR:
        raise ConfigError(f"{len(expr)} characters; a constraint is a short formula (at most {MAX_EXPR})",
                          source=source, field=field)  # fmt: skip
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise ConfigError(f"cannot parse {expr!r}: {e.msg}", source=source, field=field) from e
    except (RecursionError, MemoryError, ValueError) as e:  # nested too deep; a NUL in the text
        raise ConfigError(
            f"cannot parse {expr[:60]!r}: {type(e).__name__}", source=source, field=field
        ) from e
    for node in ast.walk(tree):
        allowed = (
            ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.BinOp,
            ast.Compare, ast.Name, ast.Load, ast.Constant, *_BINOPS, *_CMPS,
        )  # fmt: skip
        if not isinstance(node, allowed):
            raise ConfigError(f"{type(node).__name__} is not allowed in {expr!r}", source=source, field=field)
    return tree


def evaluate(tree: ast.Expression, names: Mapping[str, Any]) -> Any:
    """Evaluate a tree from :func:`compile_expr`; an unknown name raises KeyError."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return names[node.id]
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return (not v) if isinstance(node.op, ast.Not) else -v
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.BoolOp):
            vals = (ev(v) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = ev(comp)
                if not _CMPS[type(op)](left, right):
                    return False
                left = right
            return True
        raise AssertionError(type(node))

    return ev(tree)


def _names(space: SearchSpace, flags: Mapping[str, Any]) -> dict[str, Any]:
    names: dict[str, Any] = dict(space.hardware)
    # every searchable flag has a name even when it is not set (switch off -> False, value -> None)
    for p in space.parameters:
        names[space.flag_of(p).replace("-", "_")] = None
    for k, v in flags.items():
        names[k.replace("-", "_")] = v
    return names


def violated_constraint(space: SearchSpace, flags: Mapping[str, Any]) -> str | None:
    """The first declared constraint ``flags`` violate, as a message; ``None`` if all hold."""
    for c in space.constraints:
        hit = False
        if c.when is not None:
            hit = all(
                flags.get(space.flag_of(k) if k in space.parameters else k, False)
                in (want if isinstance(want, list) else [want])
                for k, want in c.when.items()
            )
        if not hit and c.expr is not None:
            try:
                hit = bool(evaluate(compile_expr(c.expr), _names(space, flags)))
            except (TypeError, ArithmeticError):
                hit = False  # a flag left at its engine default (None) cannot violate a formula
        if hit:
            return f"{c.name}: {c.reason or c.expr or c.when}"
    return None
