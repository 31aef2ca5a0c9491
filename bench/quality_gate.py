"""The output-quality gate on a real engine: llama.cpp's quantized KV caches against f16.

    .venv/bin/python bench/quality_gate.py          # ~1-2 min on 2 cores; writes bench/results/quality_gate.md

llama-server on the CPU serving the random-weight test GGUF (``tuner.models.gguf_llama``, preset tiny),
flash attention on for every configuration; for each probe seed (3 seeds x 8 probes of 48 words, 32
greedy tokens each), the f16 KV cache's answers are the reference and each configuration's agreement is
computed as the study computes it (``tuner.objective.quality.compare``). f16 is measured twice (two
servers) to show the reference agrees with itself. Every configuration goes through the trial runner's
``ConfigRunner`` with the space's ``quality:`` section, so the probes are sent as in a study.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tuner.engines import llamacpp  # noqa: E402
from tuner.launch.process import ProcessLauncher  # noqa: E402
from tuner.models.gguf_llama import PRESETS, write  # noqa: E402
from tuner.objective.quality import compare  # noqa: E402
from tuner.space.load import parse_space  # noqa: E402
from tuner.space.sample import params_to_flags  # noqa: E402
from tuner.trial.measure import ConfigRunner  # noqa: E402

SPACE = ROOT / "search_spaces" / "llamacpp-cpu-tiny.yaml"
BASE = {"parallel": 1, "cont-batching": True, "threads": None, "poll": None, "flash-attn": "on"}
CONFIGS = {
    "f16": {**BASE, "cache-type-k": None, "cache-type-v": None},
    "f16 (again)": {**BASE, "cache-type-k": None, "cache-type-v": None},
    "q8_0": {**BASE, "cache-type-k": "q8_0", "cache-type-v": "q8_0"},
    "q4_0": {**BASE, "cache-type-k": "q4_0", "cache-type-v": "q4_0"},
}
SEEDS = (0, 1, 2)


def main() -> int:
    if llamacpp.find_binary() is None:
        print("llama-server missing: scripts/build-llama-server.sh", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    answers: dict[tuple[str, int], list[str | None]] = {}
    with tempfile.TemporaryDirectory(prefix="quality-gate-") as tmp:
        gguf = write(Path(tmp) / "tiny.gguf", PRESETS["tiny"])
        raw = yaml.safe_load(SPACE.read_text())
        raw["parameters"]["cache-type-k"]["choices"] = [None, "q8_0", "q4_0"]
        raw["model"] = str(gguf)
        raw["quality"] = {"reference": "defaults", "probes": 8, "probe_len": 48, "max_tokens": 32}
        for seed in SEEDS:
            raw["workload"].update(num_requests=4, warmup_requests=0, seed=seed, input_len=16, output_len=4)
            space = parse_space(raw, source="quality_gate")
            for name, params in CONFIGS.items():
                launcher = ProcessLauncher()
                try:
                    runner = ConfigRunner(space, launcher, study="quality-gate", log_dir=Path(tmp))
                    outcome = runner.measure(params_to_flags(space, params), run_index=len(answers))
                finally:
                    launcher.close()
                assert outcome.probe_answers is not None, outcome.failure
                answers[(name, seed)] = outcome.probe_answers
    rows: list[dict[str, Any]] = []
    for name in CONFIGS:
        verdicts = [compare(answers[("f16", s)], answers[(name, s)]) for s in SEEDS]
        rows.append({
            "configuration": name, "agreement_by_seed": [round(v.agreement, 3) for v in verdicts],
            "agreement": round(statistics.mean(v.agreement for v in verdicts), 3),
            "exact": sum(round(v.exact * v.n) for v in verdicts), "probes": sum(v.n for v in verdicts),
            "first_difference": next((v.divergences[0].__dict__ for v in verdicts if v.divergences), None),
        })  # fmt: skip
    wall = time.perf_counter() - t0
    lines = [
        "# The output-quality gate on llama.cpp: quantized KV caches against f16 (bench/quality_gate.py)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this 2-core machine, {wall / 60:.1f} min: "
        "llama-server (CPU) with the random-weight test GGUF (preset tiny), flash attention on, one server per "
        f"configuration and probe seed; probe seeds {', '.join(map(str, SEEDS))}, 8 probes of 48 words each, "
        "32 greedy tokens. Reference: the first f16 server of each seed. Agreement: the share of the reference "
        "answer's words reproduced before the first difference, averaged over probes (the study's gate, "
        "min_agreement 0.9 by default).",
        "",
        "| KV cache (-ctk/-ctv) | agreement (mean; by seed) | probes word for word | first difference |",
        "|---|---|---|---|",
    ]
    for r in rows:
        d = r["first_difference"]
        first = (
            f"probe {d['probe']} word {d['at_word']}: {d['reference']!r} -> {d['answer']!r}" if d else "none"
        )
        lines.append(
            f"| {r['configuration']} | {r['agreement']:.3f}; {', '.join(map(str, r['agreement_by_seed']))} "
            f"| {r['exact']} of {r['probes']} | {first} |"
        )
    lines += ["", "A random-weight model is far more sensitive to numeric changes than a trained one: the figures "
              "show the gate at work on a real engine, not the accuracy cost of KV quantization on a real model.",
              ""]  # fmt: skip
    out = ROOT / "bench" / "results"
    (out / "quality_gate.md").write_text("\n".join(lines))
    (out / "quality_gate.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
