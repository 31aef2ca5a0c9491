"""The output-quality gate on real engines: the lossy options that run on this CPU against their reference.

    .venv/bin/python bench/quality_gate.py                  # both engines, ~8 min on 2 cores
    .venv/bin/python bench/quality_gate.py --engine llamacpp   # ~1 min; --engine sglang ~7 min

Writes ``bench/results/quality_gate.md`` (and ``.json``). Every configuration goes through the trial
runner's ``ConfigRunner`` with the space's ``quality:`` section, so the probes are sent as in a study,
and each agreement is computed as the study computes it (``tuner.objective.quality.compare``); the
reference is measured twice (two servers) to show it agrees with itself.

* llama.cpp (``search_spaces/llamacpp-cpu-tiny.yaml``): llama-server serving the random-weight test
  GGUF (``tuner.models.gguf_llama``, preset tiny), flash attention on; quantized KV caches (``-ctk/-ctv
  q8_0``, ``q4_0``) against f16; one server per configuration and probe seed (3 seeds x 8 probes of 48
  words, 32 greedy tokens each).
* SGLang 0.5.23 (``search_spaces/sglang-cpu-tiny.yaml``, its CPU engine): the tiny random Llama served in
  lower precision (``--dtype bfloat16``, and ``auto``, which serves this float32 checkpoint in float16)
  against float32, the checkpoint's own; float32 with chunked prefill (32 tokens: each probe's prefill
  split in pieces) shows whether a lossless scheduling change moves the answers. FP8 KV caches, SGLang's
  usual lossy option, refuse to start on a CPU ("--kv-cache-dtype fp8_e5m2 is not supported on CPU").
  One server per configuration (SGLang starts in 20-60 s here), 24 probes of 48 words, 32 greedy tokens.
"""

from __future__ import annotations

import argparse
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

from tuner.engines import llamacpp, sglang  # noqa: E402
from tuner.launch.process import ProcessLauncher  # noqa: E402
from tuner.models.gguf_llama import PRESETS, write  # noqa: E402
from tuner.objective.quality import compare  # noqa: E402
from tuner.space.load import parse_space  # noqa: E402
from tuner.space.sample import params_to_flags  # noqa: E402
from tuner.trial.measure import ConfigRunner  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LLAMA_SPACE = ROOT / "search_spaces" / "llamacpp-cpu-tiny.yaml"
LLAMA_BASE = {"parallel": 1, "cont-batching": True, "threads": None, "poll": None, "flash-attn": "on"}
LLAMA_CONFIGS = {
    "f16": {**LLAMA_BASE, "cache-type-k": None, "cache-type-v": None},
    "f16 (again)": {**LLAMA_BASE, "cache-type-k": None, "cache-type-v": None},
    "q8_0": {**LLAMA_BASE, "cache-type-k": "q8_0", "cache-type-v": "q8_0"},
    "q4_0": {**LLAMA_BASE, "cache-type-k": "q4_0", "cache-type-v": "q4_0"},
}
LLAMA_SEEDS = (0, 1, 2)
SGLANG_SPACE = ROOT / "search_spaces" / "sglang-cpu-tiny.yaml"
SGLANG_MODEL = sglang.cpu_model_dir()
SGLANG_CONFIGS = {  # changes to the space's defaults seed
    "float32": {"dtype": "float32"},
    "float32 (again)": {"dtype": "float32"},
    "float32, chunked prefill 32": {"dtype": "float32", "chunked-prefill-size": 32},
    "bfloat16": {"dtype": "bfloat16"},
    "auto (float16)": {"dtype": None},
}
SGLANG_PROBES = 24
QUALITY = {"probes": 8, "probe_len": 48, "max_tokens": 32}


def _measure(space: Any, params: dict[str, Any], tmp: Path, index: int) -> list[str | None]:
    launcher = ProcessLauncher()
    try:
        runner = ConfigRunner(space, launcher, study="quality-gate", log_dir=tmp)
        outcome = runner.measure(params_to_flags(space, params), run_index=index)
    finally:
        launcher.close()
    if outcome.probe_answers is None:
        raise SystemExit(f"{params}: no probe answers ({outcome.failure})")
    return outcome.probe_answers


def run_llamacpp(tmp: Path) -> dict[str, Any]:
    answers: dict[tuple[str, int], list[str | None]] = {}
    gguf = write(tmp / "tiny.gguf", PRESETS["tiny"])
    raw = yaml.safe_load(LLAMA_SPACE.read_text())
    raw["parameters"]["cache-type-k"]["choices"] = [None, "q8_0", "q4_0"]
    raw["model"] = str(gguf)
    raw["quality"] = {"reference": "defaults", **QUALITY}
    for seed in LLAMA_SEEDS:
        raw["workload"].update(num_requests=4, warmup_requests=0, seed=seed, input_len=16, output_len=4)
        space = parse_space(raw, source="quality_gate")
        for name, params in LLAMA_CONFIGS.items():
            answers[(name, seed)] = _measure(space, params, tmp, len(answers))
    return {
        "engine": "llama.cpp", "option": "KV cache (-ctk/-ctv)", "reference": "f16", "seeds": list(LLAMA_SEEDS),
        "setup": "llama-server (CPU) with the random-weight test GGUF (preset tiny), flash attention on, one "
                 "server per configuration and probe seed; probe seeds 0, 1, 2, 8 probes of 48 words each, 32 "
                 "greedy tokens. Reference: the first f16 server of each seed.",
        "rows": _rows(LLAMA_CONFIGS, "f16", LLAMA_SEEDS, answers),
    }  # fmt: skip


def run_sglang(tmp: Path) -> dict[str, Any]:
    if sglang.find_cpu_python() is None or not (SGLANG_MODEL / "config.json").is_file():
        raise SystemExit(
            "SGLang CPU venv or model missing: scripts/setup-sglang-cpu.sh, setup-sglang-cpu-model.sh"
        )
    raw = yaml.safe_load(SGLANG_SPACE.read_text())
    raw["model"] = str(SGLANG_MODEL)
    raw["quality"] = {"reference": "float32", **QUALITY, "probes": SGLANG_PROBES}
    raw["workload"].update(num_requests=4, warmup_requests=0, seed=0)
    space = parse_space(raw, source="quality_gate")
    base = next(s.params for s in space.seed_trials if s.name == "defaults")
    answers = {(name, 0): _measure(space, {**base, **change}, tmp, i)
               for i, (name, change) in enumerate(SGLANG_CONFIGS.items())}  # fmt: skip
    return {
        "engine": "SGLang 0.5.23", "option": "configuration (--dtype, ...)", "reference": "float32", "seeds": [0],
        "setup": "real SGLang 0.5.23 on the CPU (its CPU engine) serving the tiny random Llama (float32 "
                 "checkpoint), the space's defaults otherwise (torch_native attention, 8192-token pool); one "
                 f"server per configuration, {SGLANG_PROBES} probes of 48 words (probe seed 0), 32 greedy tokens. "
                 "Reference: the first float32 server.",
        "rows": _rows(SGLANG_CONFIGS, "float32", (0,), answers),
    }  # fmt: skip


def _rows(configs: dict[str, Any], ref: str, seeds: tuple[int, ...], answers: dict[tuple[str, int], list[str | None]]) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for name in configs:
        verdicts = [compare(answers[(ref, s)], answers[(name, s)]) for s in seeds]
        rows.append({
            "configuration": name, "agreement_by_seed": [round(v.agreement, 3) for v in verdicts],
            "agreement": round(statistics.mean(v.agreement for v in verdicts), 3),
            "exact": sum(round(v.exact * v.n) for v in verdicts), "probes": sum(v.n for v in verdicts),
            "first_difference": next((v.divergences[0].__dict__ for v in verdicts if v.divergences), None),
        })  # fmt: skip
    return rows


def render(part: dict[str, Any]) -> list[str]:
    by_seed = len(part["seeds"]) > 1
    lines = [f"## {part['engine']}", "", f"Run {part['run']}, {part['minutes']:.1f} min: {part['setup']}", "",
             f"| {part['option']} | agreement{' (mean; by seed)' if by_seed else ''} | probes word for word "
             "| first difference |", "|---|---|---|---|"]  # fmt: skip
    for r in part["rows"]:
        d = r["first_difference"]
        first = (
            f"probe {d['probe']} word {d['at_word']}: {d['reference']!r} -> {d['answer']!r}" if d else "none"
        )
        seeds = f"; {', '.join(map(str, r['agreement_by_seed']))}" if by_seed else ""
        lines.append(
            f"| {r['configuration']} | {r['agreement']:.3f}{seeds} | {r['exact']} of {r['probes']} | {first} |"
        )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=["llamacpp", "sglang", "both"], default="both")
    args = parser.parse_args(argv)
    if args.engine != "sglang" and llamacpp.find_binary() is None:
        print("llama-server missing: scripts/build-llama-server.sh", file=sys.stderr)
        return 2
    path = RESULTS / "quality_gate.json"
    kept = {
        p["engine"]: p
        for p in (json.loads(path.read_text()) if path.is_file() else [])
        if isinstance(p, dict) and "engine" in p
    }
    runs = {"llamacpp": run_llamacpp, "sglang": run_sglang}
    for key in ("llamacpp", "sglang") if args.engine == "both" else (args.engine,):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="quality-gate-") as tmp:
            part = runs[key](Path(tmp))
        part.update(
            run=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), minutes=(time.perf_counter() - t0) / 60
        )
        kept[part["engine"]] = part
    lines = ["# The output-quality gate on real engines (bench/quality_gate.py)", "",
             "Agreement: the share of the reference answer's words reproduced before the first difference, "
             "averaged over probes (the study's gate: min_agreement 0.9 by default, optionally min_exact, the "
             "share of probes answered word for word).", ""]  # fmt: skip
    for part in kept.values():
        lines += render(part)
    lines += ["A random-weight model is far more sensitive to numeric changes than a trained one: the figures "
              "show the gate at work on real engines, not the accuracy cost of these options on a real model.", ""]  # fmt: skip
    (RESULTS / "quality_gate.md").write_text("\n".join(lines))
    path.write_text(json.dumps(list(kept.values()), indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
