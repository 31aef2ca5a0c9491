"""What one study run is asked to do: the value the CLI, the nightly job and the benchmarks all build."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_SPACE = "search_spaces/sglang-rtx5090-qwen3-32b-awq.yaml"
DEFAULT_STORAGE = "sqlite:///storage/tuner.db"


@dataclass(frozen=True)
class StudyOptions:
    """Options of one study run (``python -m tuner.study --help`` describes each).

    ``trials`` is the study's TOTAL of finished trials: running again after an interruption resumes
    and stops at that total.
    """

    space: str = DEFAULT_SPACE
    storage: str = DEFAULT_STORAGE
    trials: int = 50
    study: str | None = None  # default: the space's name
    seed: int | None = None
    sampler: Literal["tpe", "random"] = "tpe"
    prune: bool = False
    seed_trials: bool = True  # enqueue the space's seed_trials first
    warm_start: bool = True  # then its warm_start tiers (with seed_trials)
    guide: bool = True  # repairs after crashes, learned constraints, no duplicates (tuner.search.guide)
    cover_start: bool = True  # start-up draws cover every choice before one repeats (tuner.search.startup)
    careful_start: bool = True  # ... leaving known hazards off, numbers in the widest gap (same module)
    stop_slower: bool = True  # a benchmark 1.25x longer than the best trial's stops (it cannot win)
    worker: str = "0"
    workers: int = 1
    gpus: tuple[int, ...] | None = None  # overrides the space's launch.gpu_ids
    heartbeat: int = 10
    out: Path = Path("storage")
    timeout_min: float | None = None

    def sampler_seed(self) -> int | None:
        """``seed``, made distinct per worker when several share the study.

        Workers with one seed would propose the same configurations in the same order.
        """
        if self.seed is None or self.workers <= 1:
            return self.seed
        return (self.seed + zlib.crc32(self.worker.encode())) % 2**32
