"""Search efficiency: the tuner against random search and peer-style grids, and what pruning saves.

    .venv/bin/python bench/search_efficiency.py                 # the committed run (~30-40 min, 2 cores)
    .venv/bin/python bench/search_efficiency.py --quick         # a smoke run (2 seeds, small budgets)

Every trial goes through the real loop: an Optuna study on SQLite (a temporary directory), the
``ConfigRunner``/``TrialRunner`` of ``tuner/trial/``, a real server process per trial (the SGLang
simulator, ``python -m tuner.sim``, or llama.cpp's ``llama-server`` on the CPU), the real load generator.

Methods (each run is one study with its own seed):

* ``tuner``          the study CLI's search with ``--prune``: TPE + the search guide (``tuner.search``:
                     repaired neighbours after crashes, learned constraints, the feasibility model, no
                     duplicates) + the Wilcoxon window pruner (``tuner.trial.pruning``) + the stop of
                     benchmarks 1.25x longer than the best trial's
* ``tuner-noprune``  the same without the window pruner: ``python -m tuner.study`` as it ships (the
                     pruner needs ``--prune``); the pair measures what pruning saves at equal trials
* ``tuner-nobisect`` the tuner with repairs that take the rule's step only (no bisection between a
                     crash and its siblings, ``tuner.search.bracket``): what bisection changes
* ``tuner-nolocal``  the tuner without local moves from the top trials between the sampler's proposals
                     (``SearchGuide.after_run``): what they change
* ``tuner-nostrip``  the tuner whose first repair after a crash moves only what the rule says, leaving the
                     configuration's other known hazards on (``tuner.space.repair.stripped``)
* ``tuner-noedge``   the tuner without the probe half-way back towards the crash after a repair that ran
                     (``SearchGuide.edge_probe``)
* ``tuner-noexploit`` the tuner without local moves after a breakthrough before the feasibility model is
                     trusted (``SearchGuide._exploit``)
* ``tuner-nocover``  the tuner whose sampler draws its start-up trials at random, as TPE does, instead of
                     covering every choice before one repeats (``tuner.search.startup``)
* ``tuner-notolerance`` the tuner whose Wilcoxon pruner stops a trial worse than the best on nearly every
                     window by any margin (tolerance 0) instead of by more than ``PruningSpec.tolerance``
* ``tuner-plainstart`` ``tuner-noprune`` whose start-up draws also cover the engine's known hazards and
                     draw numbers at random (``tuner.search.startup``: the start-up before it was careful)
* ``tpe``            TPE + pruning without the guide (the tuner before the guide existed)
* ``random``         Optuna's RandomSampler, no pruning
* ``grid-sglang``    SGLang auto-benchmark/autotune style: a few values per important flag, tiers in a
                     fixed order, each tier a product grid, the best of a tier carried into the next
* ``grid-vllm``      vLLM ``auto_tune.sh`` style: a sweep of two batching flags; for each pair the memory
                     fraction starts high and steps down until the server starts (each failed start costs)

All methods share the space file (and its known constraints, pruned before launch at zero cost).
The *best known* value is the best mean of the top configurations any run found, re-measured with
repeats (``tuner.study.confirm``); a run *reaches* the target at the first trial whose measured value
is within 3 % of it. Counted in launched trials (servers started) and in the run's own wall-clock.
Pruning's saving is the benchmark (measurement) time of ``tuner`` against ``tuner-noprune`` over the
same number of launched trials; its final quality is the re-measured value of each run's winner.
With ``--truth`` (simulator landscapes) every configuration the runs measured is measured once more
with the simulator's noise off (``bench/search_truth.py``), and the runs are also judged by what they
found: trials to a configuration within 3 % of the best one, and each winner against the best.
``--render --truth --out DIR`` does that for the runs already in DIR.

Results: ``bench/results/search_efficiency.{md,json}`` and ``search_efficiency_trials.csv``.
Runs of the simulator landscape go in parallel processes (the simulator sleeps in real time and
uses little CPU); llama.cpp runs are CPU-bound and go one at a time.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.search_analysis import add_near, analyse, markdown  # noqa: E402
from bench.search_landscapes import (  # noqa: E402
    DEFAULT_SPACE,
    METHODS,
    Landscape,
    llamacpp_landscape,
    sim_landscape,
)
from bench.search_runs import PRUNING, TrialRow, confirm_configs, map_tasks, run_task  # noqa: E402
from bench.search_truth import (  # noqa: E402
    add_truth,
    measure_truth,
    measured_configs,
    noise_free,
    read_truth,
    write_truth,
)
from tuner.engines import llamacpp  # noqa: E402
from tuner.space.sample import params_to_flags  # noqa: E402
from tuner.trial.pruning import check_windows  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SIMULATED = ("sim", "sim-default")  # the landscapes whose noise can be switched off (--truth)
BASELINE_SEED = "balanced-v2"  # the field report's best, which the re-measured winners are compared with


# --- main ------------------------------------------------------------------------------------------
def run_landscape(
    land: Landscape,
    seeds: int,
    jobs: int,
    repeats: int,
    top: int,
    work: Path,
    methods: Sequence[str] = METHODS,
) -> tuple[dict[str, Any], list[TrialRow]]:
    """All runs of one landscape, the confirmation of the best configurations, the analysis."""
    check_windows(PRUNING, land.space().workload, source=land.name)
    tasks = [(land, m, s, str(work)) for s in range(seeds) for m in methods]
    print(f"{land.name}: {len(tasks)} runs, {jobs if land.parallel else 1} at a time", flush=True)
    rows = [r for rs in map_tasks(run_task, tasks, jobs if land.parallel else 1) for r in rs]
    # Candidates: the top configurations overall plus every run's winner (for the final-quality figure)
    measured = sorted((r for r in rows if r.value is not None), key=lambda r: -(r.value or 0.0))
    pool: list[str] = []
    for r in measured:
        if r.params not in pool:
            pool.append(r.params)
        if len(pool) >= top:
            break
    for method in methods:
        for s in range(seeds):
            run = [r for r in measured if r.method == method and r.seed == s]
            if run and run[0].params not in pool:
                pool.append(run[0].params)
    baseline = baseline_config(land)
    if baseline is not None and baseline not in pool:
        pool.append(baseline)
    print(f"{land.name}: re-measuring {len(pool)} configurations x {repeats}", flush=True)
    confirmed = confirm_configs(land, pool, repeats, work, jobs)
    return analyse(land, rows, confirmed, seeds, baseline), rows


def baseline_config(land: Landscape) -> str | None:
    """Balanced-v2's flags as the trials CSV writes a configuration (``None``: not a seed of the space)."""
    space = land.space()
    named = {seed.name: seed for seed in space.seed_trials}
    if BASELINE_SEED not in named:
        return None
    return json.dumps(dict(params_to_flags(space, named[BASELINE_SEED].params)), sort_keys=True, default=str)


def landscape(name: str, quick: bool, work: Path) -> Landscape | None:
    """The landscape called ``name`` (``None``: llama-server is not built)."""
    if name == "sim":
        return sim_landscape(quick)
    if name == "sim-default":  # the default demo space: no constraints, no warm-start tiers
        return sim_landscape(quick, DEFAULT_SPACE, "sim-rtx5090-default")
    if name == "llamacpp":
        if llamacpp.find_binary() is None:
            print("llama-server not built (scripts/build-llama-server.sh): llamacpp landscape skipped")
            return None
        from tuner.models.gguf_llama import PRESETS, write

        # ~58 M parameters: a benchmark of 1-3 s (the 4 M "tiny" one finishes in 0.1 s: all noise)
        return llamacpp_landscape(quick, write(work / "small.gguf", PRESETS["small"]))
    raise SystemExit(f"--landscapes: unknown {name!r} (sim, sim-default, llamacpp)")


def add_noise_free(
    land: Landscape,
    rows: list[TrialRow],
    methods: Sequence[str],
    truth: dict[str, dict[str, float | None]],
    work: Path,
    jobs: int,
) -> None:
    """Measure, with the simulator's noise off, every configuration the runs of ``methods`` measured
    (and Balanced-v2) that ``truth`` lacks; ``truth`` is updated in place."""
    if noise_free(land) is None:
        return
    known = truth.setdefault(land.name, {})
    configs = measured_configs(rows, land.name, set(methods))
    if (baseline := baseline_config(land)) is not None:
        configs.append(baseline)
    missing = [c for c in dict.fromkeys(configs) if c not in known]
    print(f"{land.name}: measuring {len(missing)} configurations without noise", flush=True)
    known.update(measure_truth(land, missing, work, jobs))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 seeds, small budgets (a smoke run)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default 5; quick: 2)")
    p.add_argument(
        "--landscapes", default="sim-default,sim,llamacpp", help="comma list of sim-default, sim, llamacpp"
    )
    p.add_argument("--jobs", type=int, default=6, help="simulator runs in parallel")
    p.add_argument("--repeats", type=int, default=3, help="re-measurements of each best configuration")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of methods to run")
    p.add_argument("--budget", type=int, default=None, help="launched trials per run (default per landscape)")
    p.add_argument("--random-budget", type=int, default=None, help="random search's launched trials per run")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--render", action="store_true", help="only re-write the Markdown table from the JSON in --out"
    )
    p.add_argument(
        "--truth",
        action="store_true",
        help="simulator landscapes: measure every configuration the --methods' runs measured once more "
        "with the noise off, and report trials to a configuration within 3 %% of the best one "
        "(with --render: the configurations of the runs in --out that have no such value yet)",
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="keep the other landscapes already in --out (replace the ones run)",
    )
    args = p.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    if args.render:
        saved = json.loads((args.out / "search_efficiency.json").read_text())
        rows = _read_rows(args.out)
        truth = read_truth(args.out)
        with tempfile.TemporaryDirectory(prefix="search-eff-") as tmp:
            for res in saved["results"]:
                add_near(res, rows)  # results written before the 95 % target existed get it from their trials
                if _short(res["landscape"]) not in SIMULATED or not (args.truth or res["landscape"] in truth):
                    continue
                land = landscape(_short(res["landscape"]), args.quick, Path(tmp))
                if land is None:
                    continue
                if args.truth:
                    methods = [m for m in args.methods.split(",") if m in res["methods"]]
                    add_noise_free(land, rows, methods, truth, Path(tmp), args.jobs)
                if res["landscape"] in truth:
                    add_truth(res, rows, truth[res["landscape"]], baseline_config(land))
        if args.truth:
            write_truth(args.out, truth)
        (args.out / "search_efficiency.json").write_text(json.dumps(saved, indent=1, default=str))
        (args.out / "search_efficiency.md").write_text(markdown(saved["results"], saved["meta"]))
        print((args.out / "search_efficiency.md").read_text())
        return 0
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    rows: list[TrialRow] = []
    if args.append:
        results, rows = _previous(args.out, args.landscapes.split(","))
    with tempfile.TemporaryDirectory(prefix="search-eff-") as tmp:
        work = Path(tmp)
        truth = read_truth(args.out) if args.append else {}
        for name in args.landscapes.split(","):
            land = landscape(name, args.quick, work)
            if land is None:
                continue
            if args.budget:
                land.launched_budget = args.budget
            land.random_budget = args.random_budget
            methods = tuple(m for m in args.methods.split(",") if m in land.methods)
            t_land = time.perf_counter()
            res, rs = run_landscape(land, seeds, args.jobs, args.repeats, 5, work, methods)
            res["run"] = {
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "seeds": seeds,
                "command": " ".join(["python bench/search_efficiency.py", *(argv or sys.argv[1:])]),
                "wall_min": (time.perf_counter() - t_land) / 60,
            }
            if args.truth:
                truth.pop(land.name, None)  # a new run: its configurations are measured afresh
                add_noise_free(land, rs, methods, truth, work, args.jobs)
                add_truth(res, rs, truth[land.name], baseline_config(land))
                write_truth(args.out, truth)
            results.append(res)
            rows += rs
            _write(args.out, results, rows, seeds, t0, argv)
    _write(args.out, results, rows, seeds, t0, argv)
    print((args.out / "search_efficiency.md").read_text())
    return 0


def _short(landscape_name: str) -> str:
    """The ``--landscapes`` name of a landscape's full name."""
    return {"sim-rtx5090": "sim", "sim-rtx5090-default": "sim-default", "llamacpp-cpu": "llamacpp"}.get(
        landscape_name, landscape_name
    )


def _previous(out: Path, rerun: list[str]) -> tuple[list[dict[str, Any]], list[TrialRow]]:
    """Results and rows of the landscapes in ``out`` that are not being run again."""
    path = out / "search_efficiency.json"
    if not path.exists():
        return [], []
    old = json.loads(path.read_text())
    results = [r for r in old["results"] if _short(r["landscape"]) not in rerun]
    for r in results:  # each landscape keeps the run that produced it
        r.setdefault("run", old.get("meta"))
    return results, [r for r in _read_rows(out) if _short(r.landscape) not in rerun]


def _read_rows(out: Path) -> list[TrialRow]:
    """The trials CSV in ``out`` as rows."""
    rows = []
    with (out / "search_efficiency_trials.csv").open() as f:
        for d in csv.DictReader(f):
            rows.append(
                TrialRow(
                    d["landscape"], d["method"], int(d["seed"]), int(d["number"]), d["state"],
                    d["launched"] == "True", float(d["value"]) if d["value"] else None, d["failure_kind"],
                    d["pruned_slow"] == "True", int(d["windows"]), float(d["duration_s"]), float(d["bench_s"]),
                    d["params"], d.get("origin") or "sampler",
                    float(d["p_crash"]) if d.get("p_crash") else None,
                )
            )  # fmt: skip
    return rows


def _write(
    out: Path,
    results: list[dict[str, Any]],
    rows: list[TrialRow],
    seeds: int,
    t0: float,
    argv: Sequence[str] | None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": "2 CPU cores, no GPU (simulated RTX 5090; llama.cpp on the CPU)",
        "seeds": seeds,
        "command": " ".join(["python bench/search_efficiency.py", *(argv or sys.argv[1:])]),
        "wall_min": (time.perf_counter() - t0) / 60,
    }
    (out / "search_efficiency.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1, default=str)
    )
    with (out / "search_efficiency_trials.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(TrialRow.__dataclass_fields__))
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))
    (out / "search_efficiency.md").write_text(markdown(results, meta))


if __name__ == "__main__":
    sys.exit(main())
