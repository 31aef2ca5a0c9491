"""The demo's outcome: the best configuration a study found against the report's Balanced-v2.

Both are re-measured on the study's own workload in interleaved rounds (Balanced-v2, best, best,
Balanced-v2, …: drift cancels), each measurement a fresh simulated server, and the ratio of the
objective is reported with a paired bootstrap 95 % CI. Also the Baseline, for the report's
"Balanced-v2 vs Baseline" comparison.

    .venv/bin/python bench/demo_outcome.py --storage sqlite:///storage/tuner.db \
        --study sglang-rtx5090-qwen3-32b-awq --rounds 5

Writes ``bench/results/demo_outcome.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import optuna

from tuner.core.stats import paired_ratio_ci
from tuner.launch.process import ProcessLauncher
from tuner.nightly.remeasure import Remeasurer, paired_values, values
from tuner.objective.ranking import ranked_trials
from tuner.space import load_space, params_to_flags
from tuner.trial.measure import ConfigRunner

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", default="sqlite:///storage/tuner.db")
    p.add_argument("--study", default="sglang-rtx5090-qwen3-32b-awq")
    p.add_argument("--space", default=str(ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "demo_outcome.md"))
    args = p.parse_args()

    space = load_space(args.space)
    study = optuna.load_study(study_name=args.study, storage=args.storage)
    ranked = ranked_trials(study)
    if not ranked:
        print("the study has no feasible trial", file=sys.stderr)
        return 1
    best = ranked[0]
    seeds = {s.name: params_to_flags(space, s.params) for s in space.seed_trials}
    configs = {
        "balanced-v2": seeds["balanced-v2"],
        "best": best.user_attrs["flags"],
        "baseline": seeds["baseline"],
    }
    metric = space.objectives[0].metric
    maximize = space.objectives[0].direction == "maximize"

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runner = ConfigRunner(space, ProcessLauncher(), study="demo-outcome", log_dir=Path(tmp))
        measured = Remeasurer(runner, space).interleaved(configs, args.rounds)
    minutes = (time.perf_counter() - t0) / 60

    lines = [
        "# Demo outcome: best of the study vs the report's Balanced-v2 (simulated RTX 5090)",
        "",
        f"Study `{args.study}` ({len(study.trials)} trials); best trial #{best.number} "
        f"({metric} {best.values[0]:.2f} in the study, one measurement).",
        f"Re-measured in {args.rounds} interleaved rounds, each a fresh simulator process with run-to-run noise "
        f"({minutes:.1f} min). Workload: the space's (`{space.workload.fingerprint()}`).",
        "",
        f"| configuration | {metric} per round | mean | failures |",
        "|---|---|---|---|",
    ]
    for label, ms in measured.items():
        vals = values(ms)
        fails = [m.failure_kind for m in ms if not m.ok]
        mean = sum(vals) / len(vals) if vals else float("nan")
        lines.append(f"| {label} | {', '.join(f'{v:.2f}' for v in vals)} | {mean:.2f} | {len(fails)} |")
    lines += ["", "| comparison | ratio (paired bootstrap 95 % CI) |", "|---|---|"]
    for a, b in (("balanced-v2", "best"), ("baseline", "balanced-v2"), ("baseline", "best")):
        ref, cand = paired_values(measured[a], measured[b])
        ci = paired_ratio_ci(ref, cand, maximize=maximize)
        lines.append(f"| {b} / {a} | {ci.describe() if ci else 'n/a'} |")
    lines += ["", "Flags of the best trial:", "", "```", repr(configs["best"]), "```", ""]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
