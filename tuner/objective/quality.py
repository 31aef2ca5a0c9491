"""The output-quality gate's verdict: how far a configuration's greedy answers agree with the reference's.

Answers are compared word by word (the APIs return text, not token ids): a probe's *agreement* is the
share of the reference answer's words reproduced before the first difference (1.0: identical; a
configuration that answers nothing agrees 0). The trial's agreement is the mean over probes; below the
space's ``min_agreement``, or with a share of probes answered word for word below its ``min_exact``, the
``quality`` constraint (the larger shortfall) is violated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tuner.space.sections import QualitySpec


@dataclass(frozen=True)
class Divergence:
    """Where one probe's answer first differs from the reference's."""

    probe: int
    at_word: int  # index of the first different word
    reference: str  # the reference's word there ("" past its end)
    answer: str  # this answer's word there ("" past its end, or no answer)


@dataclass(frozen=True)
class QualityVerdict:
    agreement: float  # mean over probes, 0..1
    exact: float  # share of probes answered word for word as the reference
    n: int  # probes compared
    divergences: list[Divergence] = field(default_factory=list)

    def constraint(self, gate: QualitySpec) -> float:
        """Optuna's convention: <= 0 feasible (``QualitySpec.shortfall``)."""
        return round(gate.shortfall(self.agreement, self.exact), 6)

    def to_attrs(self, limit: int = 8) -> dict[str, Any]:
        return {"agreement": round(self.agreement, 4), "exact": round(self.exact, 4), "probes": self.n,
                "divergences": [asdict(d) for d in self.divergences[:limit]]}  # fmt: skip

    def describe(self) -> str:
        """``agreement 0.62 (3 of 8 probes word for word); first difference: probe 2 word 5: 'the' -> 'of'``"""
        text = (
            f"agreement {self.agreement:.2f} ({round(self.exact * self.n)} of {self.n} probes word for word)"
        )
        if self.divergences:
            d = self.divergences[0]
            text += f"; first difference: probe {d.probe} word {d.at_word}: {d.reference!r} -> {d.answer!r}"
        return text


def compare(reference: Sequence[str | None], answers: Sequence[str | None]) -> QualityVerdict:
    """The verdict of ``answers`` against ``reference`` (same probes, same order).

    >>> compare(["a b c d"], ["a b x d"]).agreement
    0.5
    """
    scores: list[float] = []
    exact = 0
    divergences: list[Divergence] = []
    for i, (ref, got) in enumerate(zip(reference, answers, strict=True)):
        r, g = (ref or "").split(), (got or "").split()
        same = 0
        while same < min(len(r), len(g)) and r[same] == g[same]:
            same += 1
        if got is not None and r == g:
            exact += 1
            scores.append(1.0)
            continue
        scores.append(same / len(r) if r else (1.0 if got is not None and not g else 0.0))
        divergences.append(
            Divergence(i, same, r[same] if same < len(r) else "", g[same] if same < len(g) else "")
        )
    n = len(scores)
    return QualityVerdict(sum(scores) / n if n else 1.0, exact / n if n else 1.0, n, divergences)
