"""How far a configuration's decode speed is from what the GPU's memory bandwidth allows: an estimate.

Every decode step reads each weight of the model at least once, whatever the batch size, so no
stream can produce tokens faster than ``memory bandwidth / weight bytes`` per second (e.g. Qwen3-32B-AWQ's
19.8 GB of weights on an RTX 5090's 1.792 TB/s: ~91 tokens/s). A trial's own per-stream decode rate
is ``1000 / median TPOT (ms)``; its share of the bound says how much a better configuration could still
gain on decode. KV-cache reads, activations and kernel overheads are left out, so the bound is loose:
real servers reach a fraction of it, the more so at small batches. Prefill is not covered.

The bound needs a GPU and a model profile (``tuner/sim/profiles.py``): the simulator's, or the GPU
NVML named in the trial's provenance and a model whose Hugging Face id a profile carries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuner.sim.profiles import GPUS, MODELS, GpuProfile, ModelProfile
from tuner.space.schema import SearchSpace
from tuner.space.targets import SimulatorTarget


@dataclass(frozen=True)
class DecodeBound:
    """The per-stream decode bound of one GPU and model."""

    gpu: GpuProfile
    model: ModelProfile

    @property
    def tokens_per_s(self) -> float:
        return self.gpu.bandwidth_tbs * 1e12 / self.model.weight_bytes

    def formula(self) -> str:
        """``1.792 TB/s / 19.8 GB of weights = 90.7 tok/s per stream (NVIDIA GeForce RTX 5090, qwen3-32b-awq)``"""
        return (
            f"{self.gpu.bandwidth_tbs:g} TB/s / {self.model.weight_bytes / 1e9:.1f} GB of weights = "
            f"{self.tokens_per_s:.1f} tok/s per stream ({self.gpu.name}, {self.model.name})"
        )

    def share(self, metrics: Mapping[str, Any] | None) -> float | None:
        """A trial's decode rate (1000 / median TPOT) as a share of the bound; ``None`` without TPOT."""
        tpot = (metrics or {}).get("tpot_median_ms")
        if (
            not isinstance(tpot, int | float)
            or isinstance(tpot, bool)
            or not math.isfinite(tpot)
            or tpot <= 0
        ):
            return None
        return 1000.0 / tpot / self.tokens_per_s


def decode_bound(space: SearchSpace, gpu_name: str | None = None) -> DecodeBound | None:
    """The bound for ``space`` on the GPU it ran on (``gpu_name``: NVML's name), if profiles cover both."""
    target = space.target
    if isinstance(target, SimulatorTarget):
        gpu = GPUS.get(target.gpu)
        model = MODELS.get(target.model) if target.model else _model_for(space.model)
    else:
        gpu = next((g for g in GPUS.values() if gpu_name and g.name == gpu_name.split(",")[0].strip()), None)
        model = _model_for(space.model)
    return DecodeBound(gpu, model) if gpu is not None and model is not None else None


def _model_for(model_id: str | None) -> ModelProfile | None:
    return next((m for m in MODELS.values() if model_id and m.hf_id == model_id), None)
