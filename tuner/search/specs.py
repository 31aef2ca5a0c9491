"""The space file's search-efficiency sections, ``pruning:`` and ``confirm:``, as typed models.

Kept free of imports beyond pydantic so that ``tuner/space/schema.py`` can embed them without an
import cycle (the modules that act on them import the runner, which imports the schema).

    pruning: {pruner: wilcoxon, warmup_windows: 2, p_threshold: 0.1}
    confirm: {top_k: 3, repeats: 3, confidence: 0.95}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PrunerName = Literal["wilcoxon", "median", "patient", "none"]


class PruningSpec(BaseModel):
    """The space file's ``pruning:`` section (see ``tuner/search/pruning.py`` for each pruner).

    >>> PruningSpec(pruner="median", warmup_windows=1).pruner
    'median'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pruner: PrunerName = "wilcoxon"
    # windows measured before any pruning decision (Wilcoxon: paired windows needed, at least 2)
    warmup_windows: int = Field(default=2, ge=0)
    p_threshold: float = Field(default=0.1, gt=0, lt=1)  # wilcoxon: how sure "worse than the best" must be
    n_startup_trials: int = Field(default=5, ge=0)  # median/patient: complete trials before pruning starts
    patience: int = Field(default=2, ge=0)  # patient: windows without improvement before asking the median

    @property
    def reports(self) -> Literal["window", "running"]:
        """Which value a trial reports after each window: the window's own, or the running one."""
        return "window" if self.pruner == "wilcoxon" else "running"


class ConfirmSpec(BaseModel):
    """The space file's ``confirm:`` section: re-measure the final top candidates.

    >>> ConfirmSpec().repeats
    3
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: int = Field(default=3, ge=1)  # distinct configurations re-measured
    repeats: int = Field(default=3, ge=2)  # fresh measurements per candidate: two at least, for an interval
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


__all__ = ["ConfirmSpec", "PrunerName", "PruningSpec"]
