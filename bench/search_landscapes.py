"""The landscapes and methods of ``bench/search_efficiency.py``: each tuning problem's space (with the
benchmark's short workload), its budget, and the peer-style grids run on it (SGLang's tiers, vLLM's sweep).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuner.engines import llamacpp
from tuner.space.schema import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
SIM_SPACE = ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq-constrained.yaml"
DEFAULT_SPACE = ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml"
METHODS = (
    "tuner",
    "tuner-noprune",
    "tuner-nobisect",
    "tuner-nolocal",
    "tuner-nostrip",
    "tuner-noedge",
    "tuner-noexploit",
    "tuner-nocover",
    "tuner-notolerance",
    "tuner-plainstart",
    "tpe",
    "random",
    "grid-sglang",
    "grid-vllm",
)
# the tuner with one part of its search switched off: arm -> the part (a SearchGuide keyword, the
# sampler's covering start-up, StudyOptions.cover_start, its care, StudyOptions.careful_start, or the pruner's
# tolerance, PruningSpec.tolerance)
ABLATIONS = {
    "tuner-nobisect": "bisect",
    "tuner-nolocal": "local",
    "tuner-nostrip": "strip",
    "tuner-noedge": "edge",
    "tuner-noexploit": "exploit",
    "tuner-nocover": "cover",
    "tuner-notolerance": "tolerance",
    "tuner-plainstart": "careful",  # against tuner-noprune: it does not prune either
}
GUIDE_PARTS = ("bisect", "local", "strip", "edge", "exploit")
GUIDED = ("tuner", "tuner-noprune", *ABLATIONS)


@dataclass
class Landscape:
    """One tuning problem: a space (with the bench workload), its budget and its grids."""

    name: str
    space_data: dict[str, Any]
    launched_budget: int  # servers started per run (infeasible trials cost nothing and do not count)
    max_trials: int  # cap on all trials of a run (random search proposes many infeasible ones)
    grid_sglang: list[list[dict[str, Any]]]  # tiers, each a list of parameter overrides
    grid_vllm: list[dict[str, Any]]  # sweep points (overrides), memory fraction searched per point
    grid_base: dict[str, Any]  # the parameters a grid does not set
    memory_param: str | None  # vLLM-style memory search: this parameter steps down until start-up
    memory_steps: list[float] = field(default_factory=list)
    parallel: bool = True
    methods: tuple[str, ...] = METHODS
    random_budget: int | None = None  # random search's own budget (it may need far more to arrive)

    def budget(self, method: str) -> int:
        return self.random_budget if method == "random" and self.random_budget else self.launched_budget

    def space(self) -> SearchSpace:
        return SearchSpace.model_validate(self.space_data)


def sim_landscape(quick: bool, space: Path = SIM_SPACE, name: str = "sim-rtx5090") -> Landscape:
    """The simulator's RTX 5090 (Qwen3-32B-AWQ), by default with the known constraints, a short workload."""
    data = yaml.safe_load(space.read_text())
    # 8 windows of 4 requests at 4 clients (window k serves the same prompts in every trial)
    data["workload"].update(
        input_len={"dist": "uniform", "low": 64, "high": 256},
        output_len=4,
        num_requests=32,
        window_requests=4,
        warmup_requests=1,
        stall_timeout_s=3,
        request_timeout_s=30,
    )
    data["target"]["startup_scale"] = 0.01
    data["launch"]["stop_timeout_s"] = 2
    # the report's Baseline; compile's max batch is set for the grid points that turn compile on
    base = {**yaml.safe_load(SIM_SPACE.read_text())["seed_trials"][0]["params"], "torch-compile-max-bs": 8}
    tiers = [
        # low/mid/high of the memory range, both AWQ kernels
        _product({"quantization": ["awq", "awq_marlin"], "mem-fraction-static": [0.75, 0.85, 0.95]}),
        _product({"schedule-policy": ["fcfs", "lpm", "lof"], "num-continuous-decode-steps": [1, 2, 4]}),
        _product({"chunked-prefill-size": [None, 1024, 4096], "enable-torch-compile": [False, True]}),
    ]
    vllm = _product(
        {"chunked-prefill-size": [512, 1024, 2048, 4096], "max-total-tokens": [3072, 8192, 16384]}
    )
    return Landscape(
        name=name,
        space_data=data,
        launched_budget=12 if quick else 40,
        max_trials=60 if quick else 400,
        grid_sglang=tiers,
        grid_vllm=vllm,
        grid_base=base,
        memory_param="mem-fraction-static",
        memory_steps=[0.95, 0.90, 0.85, 0.80, 0.75, 0.70],
    )


def llamacpp_landscape(quick: bool, model: Path) -> Landscape:
    """llama.cpp's llama-server on this machine's CPU with a random-weight GGUF."""
    data: dict[str, Any] = {
        "name": "llamacpp-cpu-bench",
        "engine": "llamacpp",
        "engine_version": llamacpp.DEFAULT_VERSION,
        "model": str(model),
        "target": {"kind": "process", "command": [str(llamacpp.find_binary())]},
        "launch": {"startup_timeout_s": 60, "stop_timeout_s": 3},
        "fixed_flags": {"ctx-size": 2048},
        "parameters": {
            "parallel": {"type": "int", "low": 1, "high": 8},
            "threads": {"type": "int", "low": 1, "high": 4},
            "batch-size": {"type": "categorical", "choices": [32, 128, 512, 2048]},
            "ubatch-size": {"type": "categorical", "choices": [16, 64, 256, 512]},
            "flash-attn": {"type": "categorical", "choices": ["on", "off"]},
            "cache-type-k": {"type": "categorical", "choices": ["f16", "q8_0", "q4_0"]},
            # a quantized V cache needs flash attention: a hidden constraint (start-up failure)
            "cache-type-v": {"type": "categorical", "choices": ["f16", "q8_0", "q4_0"]},
            "cont-batching": {"type": "bool"},
        },
        "workload": {
            "api": "completions",
            "input_len": {"dist": "uniform", "low": 32, "high": 96},
            "output_len": 16,
            "arrival": {"kind": "closed", "clients": 4},
            "num_requests": 24,
            "window_requests": 4,
            "warmup_requests": 1,
            "seed": 0,
            "request_timeout_s": 60,
            "stall_timeout_s": 10,
        },
        "objectives": [{"metric": "output_throughput", "direction": "maximize"}],
        "slos": {"error_rate": 0.05},
    }
    base = {
        "parallel": 1, "threads": 2, "batch-size": 2048, "ubatch-size": 512, "flash-attn": "off",
        "cache-type-k": "f16", "cache-type-v": "f16", "cont-batching": True,
    }  # fmt: skip  # llama-server's defaults (threads: this machine's cores)
    tiers = [
        _product({"parallel": [1, 2, 4, 8]}),
        _product({"threads": [1, 2, 4], "flash-attn": ["off", "on"]}),
        _product({"batch-size": [512, 2048], "ubatch-size": [64, 512]}),
    ]
    vllm = _product({"parallel": [1, 2, 4, 8], "batch-size": [128, 512, 2048]})
    return Landscape(
        name="llamacpp-cpu",
        space_data=data,
        launched_budget=8 if quick else 12,
        max_trials=30 if quick else 60,
        grid_sglang=tiers,
        grid_vllm=vllm,
        grid_base=base,
        memory_param=None,
        parallel=False,
        # CPU-bound and run one at a time: pruning is measured on the simulator only
        methods=("tuner", "tpe", "random", "grid-sglang", "grid-vllm"),
    )


def _product(values: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """itertools.product over the values, last key varying fastest (SGLang autotune's order)."""
    points: list[dict[str, Any]] = [{}]
    for key, vals in values.items():
        points = [{**p, key: v} for p in points for v in vals]
    return points
