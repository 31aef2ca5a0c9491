"""Repair rules: how a crash's evidence says which neighbouring configuration to try instead.

Each engine module holds a table of :class:`RepairRule` beside its log signatures
(``tuner/engines/<engine>.py``): a failure kind, optionally a pattern its evidence must show and
flag values the crashed configuration must have, and the :class:`Move` s that repair it. Moves are
written over the engine's *flags*; ``tuner.space.repair`` maps them onto a search space's own
parameters and never leaves the space.

The amount of a numeric move comes from the evidence where the evidence gives one (a CUDA
out-of-memory message says how much was missing: :func:`oom_shortfall_fraction`), from the rule's
fallback step otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from tuner.core.failures import Failure, FailureKind, Phase


class Action(StrEnum):
    LOWER = "lower"  # numeric: down by the evidence's amount or the rule's step
    RAISE = "raise"  # numeric: up by the evidence's amount or the rule's step
    HALVE = "halve"  # numeric: to half (the next smaller allowed value at most half)
    SET = "set"  # any: to one value


@dataclass(frozen=True)
class Move:
    """One change of one flag. ``step`` is a fraction of the parameter's range for LOWER/RAISE
    when the evidence gives no amount; ``amount`` reads the amount (in flag units) from the failure."""

    flag: str
    action: Action
    value: object = None  # SET: the new value
    step: float = 0.1
    amount: Callable[[Failure], float | None] | None = None


@dataclass(frozen=True)
class RepairRule:
    """A failure kind (and evidence) that a change of flags is known to cure.

    ``when``: flag values the crashed configuration must have (``None`` in the tuple: the flag not
    set). ``scope``: the flags whose values the crash depends on besides the moved one; a constraint
    learned from this repair holds only where they have the crashed configuration's values.
    ``hazard``: the ``when`` values are a known cause of crashes in their own right (CUDA graphs on a
    new architecture, an FP8 KV cache, two-batch overlap, …), so a stripped repair
    (``tuner.space.repair.stripped``) turns them off whatever the crash was.
    """

    kind: FailureKind
    moves: tuple[Move, ...]
    why: str
    evidence: str | None = None  # a regex the failure's matched lines or log tail must match
    when: Mapping[str, tuple[object, ...]] = field(default_factory=dict)
    phases: tuple[Phase, ...] = ()  # empty: any phase
    scope: tuple[str, ...] = ()
    hazard: bool = False

    def applies(self, failure: Failure, flags: Mapping[str, object]) -> bool:
        if failure.kind is not self.kind or (self.phases and failure.phase not in self.phases):
            return False
        if self.evidence is not None:
            text = "\n".join(failure.matched_lines) + "\n" + failure.log_tail
            if not re.search(self.evidence, text):
                return False
        return self.holds(flags)

    def holds(self, flags: Mapping[str, object]) -> bool:
        """The configuration (its ``flags``) has the ``when`` values."""
        return all(flags.get(flag) in allowed for flag, allowed in self.when.items())


_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_TORCH_OOM = re.compile(
    r"Tried to allocate (?P<ask>[\d.]+) (?P<ask_u>[KMGT]?i?B)\. GPU \d+ has a total capacity of "
    r"(?P<total>[\d.]+) (?P<total_u>[KMGT]?i?B) of which (?P<free>[\d.]+) (?P<free_u>[KMGT]?i?B) is free"
)


def oom_shortfall_fraction(failure: Failure) -> float | None:
    """The share of the GPU that was missing, from PyTorch's CUDA out-of-memory message.

    ``Tried to allocate 6.00 GiB. GPU 0 has a total capacity of 31.40 GiB of which 0.50 GiB is free``
    -> (6.00 - 0.50) / 31.40. At least this much more must stay outside the static pool, so it is
    what ``--mem-fraction-static`` must drop by (a lower bound: others may allocate after it).

    >>> from tuner.core.failures import Failure, FailureKind, Phase
    >>> f = Failure(FailureKind.CUDA_OOM, Phase.STARTUP, matched_lines=("torch.OutOfMemoryError: CUDA out of "
    ...     "memory. Tried to allocate 6.00 GiB. GPU 0 has a total capacity of 32.00 GiB of which 2.00 GiB is free.",))
    >>> oom_shortfall_fraction(f)
    0.125
    """
    for line in (*failure.matched_lines, *failure.log_tail.splitlines()):
        m = _TORCH_OOM.search(line)
        if m is None:
            continue
        ask, total, free = (float(m[k]) * _UNITS.get(m[f"{k}_u"], 1) for k in ("ask", "total", "free"))
        if total > 0:
            return max(0.0, ask - free) / total
    return None


def mem_fraction_shortfall(failure: Failure) -> float | None:
    """How far ``--mem-fraction-static`` must drop: the missing share plus a 2-point margin."""
    share = oom_shortfall_fraction(failure)
    return None if share is None else share + 0.02
