"""Does the winner depend on the traffic? A space tuned under its synthetic workload and under shared
system prompts, each winner then measured under both.

    .venv/bin/python bench/workload_winners.py                       # the simulator, ~10 min on 2 cores
    .venv/bin/python bench/workload_winners.py --landscape sglang-cpu --trials 6 --seeds 1 --parallel 1
                                                                     # real SGLang on the CPU, ~35 min

For each workload and seed: ``python -m tuner.study`` (the real command, the landscape's space with that
workload, ``--trials`` trials, confirmation off) and its best feasible configuration. Then every
winner is measured again under both workloads in interleaved rounds (each a fresh server), so "the
synthetic winner under shared prefixes" and "the shared-prefix winner under shared prefixes" are
compared side by side, with paired bootstrap intervals (``tuner.core.stats.paired_ratio_ci``).

Landscapes:

* ``sim`` (``bench/results/workload_winners.md``): the default simulated RTX 5090 space. Shared
  prefixes: 4 system prompts of 320 words before 90 % of the requests, 64 words of question each
  (SGLang's ``generated-shared-prefix`` shape); synthetic: the space's own (128-384 words, no reuse).
* ``sglang-cpu`` (``bench/results/workload_winners_sglang_cpu.md``): real SGLang 0.5.23 on the CPU
  (``search_spaces/sglang-cpu-tiny.yaml``, the tiny random Llama) with float32, torch_native attention
  and an 8192-token pool fixed, the search over the radix cache, scheduling policy, chunking, the running
  batch, decode steps and overlap scheduling; seeds: SGLang's defaults and the same with the radix cache
  off (the field report's choice). Lengths in the model's own tokens (``workload.tokenizer``). Shared
  prefixes: 4 system prompts of 384 tokens before 90 % of the requests, 32 tokens of question;
  synthetic: the space's own (64 tokens, random words).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tuner.core.stats import paired_ratio_ci  # noqa: E402
from tuner.engines import sglang  # noqa: E402
from tuner.launch.process import ProcessLauncher  # noqa: E402
from tuner.objective.ranking import ranked_trials  # noqa: E402
from tuner.space.load import load_space  # noqa: E402
from tuner.trial.measure import ConfigRunner  # noqa: E402

RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Landscape:
    space: Path
    workloads: dict[str, dict[str, Any]]
    shown: tuple[str, ...]
    results: str  # file stem under bench/results
    about: str
    patch: Callable[[dict[str, Any]], None] = lambda raw: None


def _sglang_cpu(raw: dict[str, Any]) -> None:
    """The real SGLang space with this machine's model, the dtype/backend/pool fixed, two seeds."""
    raw["model"] = str(SGLANG_MODEL)
    raw["workload"]["tokenizer"] = str(SGLANG_MODEL)
    raw.pop("quality", None)  # float32 throughout: every trial answers as the reference would
    for name, value in {"dtype": "float32", "attention-backend": "torch_native", "max-total-tokens": 8192,
                        "stream-interval": None}.items():  # fmt: skip
        del raw["parameters"][name]
        if value is not None:
            raw["fixed_flags"][name] = value
    defaults = {k: v for k, v in raw["seed_trials"][0]["params"].items() if k in raw["parameters"]}
    raw["seed_trials"] = [
        {"name": "defaults", "params": defaults},
        {"name": "radix-off", "note": "the field report's choice", "params": {**defaults, "disable-radix-cache": True}},
    ]  # fmt: skip


SGLANG_MODEL = sglang.cpu_model_dir()
LANDSCAPES = {
    "sim": Landscape(
        space=ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml",
        workloads={"synthetic": {}, "shared-prefix": {
            "dataset": {"kind": "shared_prefix", "groups": 4, "prefix_len": 320, "share": 0.9}, "input_len": 64}},
        shown=("quantization", "disable-radix-cache", "schedule-policy", "mem-fraction-static",
               "chunked-prefill-size", "max-total-tokens", "num-continuous-decode-steps"),
        results="workload_winners",
        about="the simulated RTX 5090, Qwen3-32B-AWQ. Shared-prefix workload: 4 system prompts of 320 words "
              "before 90 % of the requests, 64 words of question each; synthetic: the space's own (128-384 "
              "random words, no reuse).",
    ),
    "sglang-cpu": Landscape(
        space=ROOT / "search_spaces" / "sglang-cpu-tiny.yaml",
        workloads={"synthetic": {}, "shared-prefix": {
            "dataset": {"kind": "shared_prefix", "groups": 4, "prefix_len": 384, "share": 0.9}, "input_len": 32}},
        shown=("disable-radix-cache", "schedule-policy", "chunked-prefill-size", "max-running-requests",
               "num-continuous-decode-steps", "disable-overlap-schedule"),
        results="workload_winners_sglang_cpu",
        about="real SGLang 0.5.23 on the CPU (its CPU engine), the tiny random Llama in float32, torch_native "
              "attention, an 8192-token pool; lengths in the model's own tokens. Shared-prefix workload: 4 "
              "system prompts of 384 tokens before 90 % of the requests, 32 tokens of question each; "
              "synthetic: the space's own (64 tokens of random words, no reuse), 64 requests after 16 of "
              "warm-up, 4 clients in a closed loop.",
        patch=_sglang_cpu,
    ),
}  # fmt: skip


def space_file(land: Landscape, work: Path, workload: str) -> Path:
    data = yaml.safe_load(land.space.read_text())
    land.patch(data)
    data["workload"].update(land.workloads[workload])
    data.pop("confirm", None)  # the cross-measurement below is the confirmation
    path = work / f"space-{workload}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tune(land: Landscape, work: Path, workload: str, seed: int, trials: int) -> dict[str, Any]:
    name = f"{workload}-{seed}"
    db = f"sqlite:///{work}/{name}.db"
    cmd = [sys.executable, "-m", "tuner.study", "--space", str(space_file(land, work, workload)), "--storage", db,
           "--study", name, "--trials", str(trials), "--seed", str(seed), "--out", str(work / name)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: the study exited {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}")
    ranked = ranked_trials(optuna.load_study(study_name=name, storage=db))
    if not ranked:
        raise SystemExit(f"{name}: no feasible trial (exit {proc.returncode}): {proc.stdout[-2000:]}")
    best = ranked[0]
    return {"workload": workload, "seed": seed, "trial": best.number, "value": best.values[0],
            "flags": best.user_attrs["flags"], "minutes": (time.perf_counter() - t0) / 60}  # fmt: skip


def cross(land: Landscape, work: Path, winners: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """Every distinct winner under every workload, ``rounds`` interleaved rounds (rotated order)."""
    distinct: dict[str, dict[str, Any]] = {}
    for w in winners:
        distinct.setdefault(json.dumps(w["flags"], sort_keys=True), {"flags": w["flags"], "from": []})[
            "from"
        ].append(f"{w['workload']} seed {w['seed']}")
    keys = list(distinct)
    rows = []
    for workload in land.workloads:
        space = load_space(space_file(land, work, workload))
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


def render(
    land: Landscape, winners: list[dict[str, Any]], rows: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    lines = [
        "# Does the winner depend on the traffic? (bench/workload_winners.py)",
        "",
        f"Run {meta['date']} on 2 CPU cores; {meta['wall_min']:.1f} min; `{meta['command']}`. Each workload: "
        f"`python -m tuner.study --trials {meta['trials']}` for seeds {', '.join(map(str, meta['seeds']))} "
        f"(confirmation off); then every distinct winner measured under both workloads in {meta['rounds']} "
        "interleaved rounds, a fresh server each.",
        "",
        f"Landscape: {land.about}",
        "",
        "## Winners",
        "",
        "| tuned under | seed | best (one measurement) | " + " | ".join(land.shown) + " |",
        "|---|---|---|" + "---|" * len(land.shown),
    ]
    for w in winners:
        lines.append(f"| {w['workload']} | {w['seed']} | {w['value']:.2f} | "
                     + " | ".join(str(w["flags"].get(k, "–")) for k in land.shown) + " |")  # fmt: skip
    lines += [
        "",
        "## Each workload's winners measured under each workload (mean output tok/s over rounds)",
        "",
    ]
    for workload in land.workloads:
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
    p.add_argument("--landscape", choices=sorted(LANDSCAPES), default="sim")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    land = LANDSCAPES[args.landscape]
    t0 = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="workload-winners-") as tmp,
        ThreadPoolExecutor(args.parallel) as pool,
    ):
        work = Path(tmp)
        (work / "logs").mkdir()
        jobs = [(w, s) for w in land.workloads for s in range(args.seeds)]
        winners = list(pool.map(lambda job: tune(land, work, job[0], job[1], args.trials), jobs))
        rows = cross(land, work, winners, args.rounds)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_min": (time.perf_counter() - t0) / 60,
            "command": "python bench/workload_winners.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "trials": args.trials, "seeds": list(range(args.seeds)), "rounds": args.rounds}  # fmt: skip
    text = render(land, winners, rows, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{land.results}.md").write_text(text)
    (args.out / f"{land.results}.json").write_text(
        json.dumps({"meta": meta, "winners": winners, "rows": rows}, indent=1)
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
