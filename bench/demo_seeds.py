"""The demo's headline over many seeds: `make demo`'s study, run as the user runs it, once per seed.

Each run is the real command line (``python -m tuner.study --trials 50 --seed S``, the default space:
simulated RTX 5090, SQLite in a temporary directory), its confirmation included: the top 2 and the
field report's Balanced-v2 re-measured in 4 interleaved rounds, the winner / Balanced-v2 ratio with
its paired bootstrap 95 % interval (``tuner.study.confirm``). ``--no-guide`` runs the plain sampler
(no repairs, learned constraints, feasibility model or duplicate screening) for comparison.

    .venv/bin/python bench/demo_seeds.py --seeds 0-9 --parallel 5              # the committed run
    .venv/bin/python bench/demo_seeds.py --seeds 0-4 --parallel 5 --no-guide --append

Writes ``bench/results/demo_seeds.{md,json}``. Runs in parallel share the machine: the wall times are
those of a loaded machine (the simulator sleeps its modelled times, so a run's own figures hold).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tuner.report.learning import crash_rate_by_half  # noqa: E402
from tuner.search.learned import learned_constraints, ran  # noqa: E402
from tuner.store.attrs import is_crash  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SPACE = ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml"
GOAL = 1.5  # confirmed best / Balanced-v2


def run_seed(seed: int, trials: int, guide: bool, work: Path) -> dict[str, Any]:
    """One demo study; what it found, what it cost."""
    name = f"demo-{'guided' if guide else 'plain'}-{seed}"
    db = f"sqlite:///{work}/{name}.db"
    cmd = [sys.executable, "-m", "tuner.study", "--space", str(SPACE), "--storage", db, "--study", name,
           "--trials", str(trials), "--seed", str(seed), "--out", str(work / name)]  # fmt: skip
    if not guide:
        cmd.append("--no-guide")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=db)
    all_trials = study.get_trials()
    done = [t for t in all_trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    confirmation = study.user_attrs.get("confirmation") or {}
    base = next((c for c in confirmation.get("candidates", []) if c.get("baseline") == "balanced-v2"), None)
    ratio = (base or {}).get("vs_winner")
    winner = confirmation["candidates"][0] if confirmation.get("candidates") else None
    halves = crash_rate_by_half(all_trials)
    launched = [t for t in done if ran(t) or is_crash(t)]
    flags = [json.dumps(t.user_attrs.get("flags"), sort_keys=True) for t in launched]
    return {
        "seed": seed,
        "guide": guide,
        "exit_code": proc.returncode,
        "wall_s": wall,
        "ratio": ratio,  # winner / balanced-v2: estimate, low, high (paired bootstrap)
        "winner": winner and {"trial": winner["trial"], "ci": winner.get("ci"), "flags": winner.get("flags")},
        "trials": len(done),
        "launched": len(launched),
        "crashed": sum(is_crash(t) for t in done),
        "pruned_before_launch": len(done) - len(launched),
        "repairs": sum("repair" in t.user_attrs for t in done),
        "duplicate_proposals": sum("duplicate_of" in t.user_attrs for t in all_trials),
        "measured_twice": len(flags) - len(set(flags)),
        "learned": [c.describe() for c in learned_constraints(all_trials)],
        "vetoed": sum(map(_vetoed, done)),
        # how the feasibility model's probability ranked the launched proposals: crashed vs ran
        "model_scores": [
            [t.user_attrs["predicted_crash"], is_crash(t)]
            for t in launched
            if "predicted_crash" in t.user_attrs
        ],
        "crash_halves": halves.as_dict(),
        "stderr_tail": proc.stderr[-2000:] if proc.returncode else "",
        # what the user saw at the end: the summary the study printed (the README quotes one)
        "summary": proc.stdout[proc.stdout.find(f"study {name}:") :]
        if f"study {name}:" in proc.stdout
        else "",
    }


def _vetoed(t: optuna.trial.FrozenTrial) -> bool:
    """Pruned before launch by the feasibility model."""
    return str((t.user_attrs.get("failure") or {}).get("detail", "")).startswith("predicted crash")


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def markdown(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# The demo over seeds (bench/demo_seeds.py)",
        "",
        f"Run {meta['date']} on {meta['machine']}; commands: `{meta['command']}`; {meta['parallel']} runs at a "
        f"time; wall-clock of the last command {meta['wall_min']:.1f} min."
        + (f" {meta['note']}" if meta.get("note") else ""),
        "",
        "Each run: `python -m tuner.study --trials 50 --seed S` on the default space (simulated RTX 5090), then",
        "its own confirmation: the top 2 and Balanced-v2 in 4 interleaved rounds. Ratio = confirmed winner /",
        "Balanced-v2 with its paired bootstrap 95 % CI. Crashes = servers that failed (not prunes before launch).",
        "",
    ]
    for guide in (True, False):
        arm = [r for r in runs if r["guide"] is guide]
        if not arm:
            continue
        ratios = [r["ratio"]["estimate"] for r in arm if r["ratio"]]
        lows = [r["ratio"]["low"] for r in arm if r["ratio"]]
        reach = sum(x >= GOAL for x in ratios)
        title = "with the search guide (the default)" if guide else "plain TPE (`--no-guide`)"
        first, first_n, second, second_n = (
            sum(r["crash_halves"][k] for r in arm)
            for k in ("first_crashes", "first_launched", "second_crashes", "second_launched")
        )
        lines += [
            f"## {title}: {len(arm)} seeds",
            "",
            (
                f"Confirmed best / Balanced-v2 ≥ {GOAL}×: **{reach} of {len(arm)}** seeds (lower CI bound ≥ {GOAL}×: "
                f"{sum(x >= GOAL for x in lows)}); median ratio {statistics.median(ratios):.2f}×"
                if ratios
                else "No confirmation"
            )
            + f"; crash rate of launched servers {first}/{first_n} in the first half → {second}/{second_n} in the "
            f"second; median wall {statistics.median(r['wall_s'] for r in arm) / 60:.1f} min per run.",
            "",
            "| seed | best / balanced-v2 (95 % CI) | launched | crashed | pruned before launch | repairs | duplicates proposed / measured twice | learned constraints | wall min |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(arm, key=lambda r: r["seed"]):
            q = r["ratio"]
            shown = (
                f"{q['estimate']:.2f} [{q['low']:.2f}, {q['high']:.2f}]"
                if q
                else f"– (exit {r['exit_code']})"
            )
            lines.append(
                f"| {r['seed']} | {shown} | {r['launched']} | {r['crashed']} | {r['pruned_before_launch']} "
                f"| {r['repairs']} | {r['duplicate_proposals']} / {r['measured_twice']} | {len(r['learned'])} "
                f"| {r['wall_s'] / 60:.1f} |"
            )
        lines.append("")
    scores = [sc for r in runs if r["guide"] for sc in r.get("model_scores", [])]
    crashed = [p for p, c in scores if c]
    fine = [p for p, c in scores if not c]
    if crashed and fine:
        auc = sum((a > b) + 0.5 * (a == b) for a in crashed for b in fine) / (len(crashed) * len(fine))
        vetoed = sum(r.get("vetoed", 0) for r in runs if r["guide"])
        lines += [
            f"Feasibility model (random forest): {vetoed} proposals vetoed before launch in all guided runs; on the "
            f"{len(scores)} launched proposals it scored, AUC {auc:.2f} for telling the {len(crashed)} that crashed "
            f"from the {len(fine)} that ran (0.5 = chance).",
            "",
        ]
    shown = sorted((r for r in runs if r["guide"] and r["learned"]), key=lambda r: r["seed"])[:2]
    if shown:
        lines += [f"Constraints learned by guided seeds {', '.join(str(r['seed']) for r in shown)} (each with the "
                  "trials that support it; every run's are in demo_seeds.json):", ""]  # fmt: skip
        lines += [f"- seed {r['seed']}: {c}" for r in shown for c in r["learned"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5")
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--parallel", type=int, default=5)
    p.add_argument("--no-guide", action="store_true", help="the plain sampler arm")
    p.add_argument("--append", action="store_true", help="keep the other arm's runs already in --out")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--render", action="store_true", help="only re-write the Markdown from the JSON in --out")
    args = p.parse_args(argv)
    path = args.out / "demo_seeds.json"
    if args.render:
        saved = json.loads(path.read_text())
        (args.out / "demo_seeds.md").write_text(markdown(saved["runs"], saved["meta"]))
        return 0
    t0 = time.perf_counter()
    guide = not args.no_guide
    with (
        tempfile.TemporaryDirectory(prefix="demo-seeds-") as tmp,
        ThreadPoolExecutor(max_workers=args.parallel) as pool,
    ):
        futures = [pool.submit(run_seed, s, args.trials, guide, Path(tmp)) for s in _seeds(args.seeds)]
        runs = []
        for f in futures:
            r = f.result()
            q = r["ratio"]
            print(f"seed {r['seed']}: {q['estimate']:.2f}x [{q['low']:.2f}, {q['high']:.2f}]" if q
                  else f"seed {r['seed']}: no ratio (exit {r['exit_code']})", f"{r['wall_s'] / 60:.1f} min",
                  flush=True)  # fmt: skip
            runs.append(r)
    earlier: list[str] = []
    if args.append and path.exists():
        saved = json.loads(path.read_text())
        runs = [r for r in saved["runs"] if r["guide"] is not guide] + runs
        earlier = [saved["meta"]["command"]]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": "2 CPU cores, no GPU (simulated RTX 5090)",
        "command": "; ".join(
            [
                *earlier,
                " ".join(["python bench/demo_seeds.py", *(argv if argv is not None else sys.argv[1:])]),
            ]
        ),
        "parallel": args.parallel,
        "wall_min": (time.perf_counter() - t0) / 60,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1, default=str))
    (args.out / "demo_seeds.md").write_text(markdown(runs, meta))
    print((args.out / "demo_seeds.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
