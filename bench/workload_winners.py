"""Does the winner depend on the traffic? The default simulated RTX 5090 space tuned under its synthetic
workload and under shared system prompts, each winner then measured under both.

    .venv/bin/python bench/workload_winners.py      # ~10 min on 2 cores; writes bench/results/workload_winners.md

For each workload and seed: ``python -m tuner.study`` (the real command, the default space with that
workload, ``--trials`` trials, confirmation off) and its best feasible configuration. Then every
winner is measured again under both workloads in interleaved rounds (each a fresh simulated server), so
"the synthetic winner under shared prefixes" and "the shared-prefix winner under shared prefixes" are
compared side by side, with paired bootstrap intervals (``tuner.core.stats.paired_ratio_ci``).

The shared-prefix workload: 4 system prompts of 320 words before 90 % of the requests, 64 words of
question each (SGLang's ``generated-shared-prefix`` shape): what a radix cache and longest-prefix-match
scheduling are for. The synthetic one is the space's own (128-384 words, no reuse).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tuner.core.stats import paired_ratio_ci  # noqa: E402
from tuner.launch.process import ProcessLauncher  # noqa: E402
from tuner.objective.ranking import ranked_trials  # noqa: E402
from tuner.space.load import load_space  # noqa: E402
from tuner.trial.measure import ConfigRunner  # noqa: E402

SPACE = ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml"
RESULTS = ROOT / "bench" / "results"
SHARED = {"kind": "shared_prefix", "groups": 4, "prefix_len": 320, "share": 0.9}
WORKLOADS: dict[str, dict[str, Any]] = {
    "synthetic": {},
    "shared-prefix": {"dataset": SHARED, "input_len": 64},
}
SHOWN = ("quantization", "disable-radix-cache", "schedule-policy", "mem-fraction-static", "chunked-prefill-size",
         "max-total-tokens", "num-continuous-decode-steps")  # fmt: skip


def space_file(work: Path, workload: str) -> Path:
    data = yaml.safe_load(SPACE.read_text())
    data["workload"].update(WORKLOADS[workload])
    data.pop("confirm", None)  # the cross-measurement below is the confirmation
    path = work / f"space-{workload}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tune(work: Path, workload: str, seed: int, trials: int) -> dict[str, Any]:
    name = f"{workload}-{seed}"
    db = f"sqlite:///{work}/{name}.db"
    cmd = [sys.executable, "-m", "tuner.study", "--space", str(space_file(work, workload)), "--storage", db,
           "--study", name, "--trials", str(trials), "--seed", str(seed), "--out", str(work / name)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ranked = ranked_trials(optuna.load_study(study_name=name, storage=db))
    if not ranked:
        raise SystemExit(f"{name}: no feasible trial (exit {proc.returncode}): {proc.stdout[-2000:]}")
    best = ranked[0]
    return {"workload": workload, "seed": seed, "trial": best.number, "value": best.values[0],
            "flags": best.user_attrs["flags"], "minutes": (time.perf_counter() - t0) / 60}  # fmt: skip


def cross(work: Path, winners: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """Every distinct winner under every workload, ``rounds`` interleaved rounds (rotated order)."""
    distinct: dict[str, dict[str, Any]] = {}
    for w in winners:
        distinct.setdefault(json.dumps(w["flags"], sort_keys=True), {"flags": w["flags"], "from": []})[
            "from"
        ].append(f"{w['workload']} seed {w['seed']}")
    keys = list(distinct)
    rows = []
    for workload in WORKLOADS:
        space = load_space(space_file(work, workload))
        launcher = ProcessLauncher()
        runner = ConfigRunner(space, launcher, study=f"cross-{workload}", log_dir=work / "logs")
        try:
            for r in range(rounds):
                for i, k in enumerate(keys[r % len(keys) :] + keys[: r % len(keys)]):
                    outcome = runner.measure(distinct[k]["flags"], run_index=1000 * r + i)
                    value = (
                        None
                        if outcome.metrics is None or outcome.failure
                        else outcome.metrics["output_throughput"]
                    )
                    rows.append({"workload": workload, "round": r, "key": k, "value": value,
                                 "from": distinct[k]["from"]})  # fmt: skip
        finally:
            launcher.close()
    return rows


def render(winners: list[dict[str, Any]], rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Does the winner depend on the traffic? (bench/workload_winners.py)",
        "",
        f"Run {meta['date']} on 2 CPU cores (the simulated RTX 5090, Qwen3-32B-AWQ); {meta['wall_min']:.1f} min; "
        f"`{meta['command']}`. Each workload: `python -m tuner.study --trials {meta['trials']}` for seeds "
        f"{', '.join(map(str, meta['seeds']))} (confirmation off); then every distinct winner measured under both "
        f"workloads in {meta['rounds']} interleaved rounds, a fresh server each.",
        "",
        "Shared-prefix workload: 4 system prompts of 320 words before 90 % of the requests, 64 words of question "
        "each; synthetic: the space's own (128-384 random words, no reuse).",
        "",
        "## Winners",
        "",
        "| tuned under | seed | best (one measurement) | " + " | ".join(SHOWN) + " |",
        "|---|---|---|" + "---|" * len(SHOWN),
    ]
    for w in winners:
        lines.append(f"| {w['workload']} | {w['seed']} | {w['value']:.2f} | "
                     + " | ".join(str(w["flags"].get(k, "–")) for k in SHOWN) + " |")  # fmt: skip
    lines += [
        "",
        "## Each workload's winners measured under each workload (mean output tok/s over rounds)",
        "",
    ]
    for workload in WORKLOADS:
        here = [r for r in rows if r["workload"] == workload]
        keys = sorted({r["key"] for r in here})
        means = {k: [r["value"] for r in here if r["key"] == k and r["value"] is not None] for k in keys}
        best_key = max(keys, key=lambda k: sum(means[k]) / max(1, len(means[k])))
        lines += [f"### Under the {workload} workload", "", "| winner of | mean | / the best here (paired 95 % CI) |",
                  "|---|---|---|"]  # fmt: skip
        for k in keys:
            ref = {r["round"]: r["value"] for r in here if r["key"] == best_key}
            mine = {r["round"]: r["value"] for r in here if r["key"] == k}
            paired = [(mine[x], ref[x]) for x in mine if mine[x] is not None and ref.get(x) is not None]
            ci = (
                paired_ratio_ci([b for _, b in paired], [a for a, _ in paired], maximize=True)
                if len(paired) >= 2
                else None
            )
            shown = "reference" if k == best_key else (ci.describe() if ci else "–")
            source = ", ".join(next(r["from"] for r in here if r["key"] == k))
            mean = sum(means[k]) / len(means[k]) if means[k] else float("nan")
            lines.append(f"| {source} | {mean:.2f} | {shown} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="workload-winners-") as tmp,
        ThreadPoolExecutor(args.parallel) as pool,
    ):
        work = Path(tmp)
        (work / "logs").mkdir()
        jobs = [(w, s) for w in WORKLOADS for s in range(args.seeds)]
        winners = list(pool.map(lambda job: tune(work, job[0], job[1], args.trials), jobs))
        rows = cross(work, winners, args.rounds)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_min": (time.perf_counter() - t0) / 60,
            "command": "python bench/workload_winners.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "trials": args.trials, "seeds": list(range(args.seeds)), "rounds": args.rounds}  # fmt: skip
    text = render(winners, rows, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workload_winners.md").write_text(text)
    (args.out / "workload_winners.json").write_text(
        json.dumps({"meta": meta, "winners": winners, "rows": rows}, indent=1)
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
