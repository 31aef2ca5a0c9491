"""Issue 16's GPU goal: the guided search on `transformers serve` against a wide look at the space.

The space is ``search_spaces/transformers-h100-tiny.yaml`` without its best-known seed trial
(``cb-cuda-graph``); each seed's study is a plain ``python -m tuner.study --trials 12`` (run by
``bench/gpu/h200_guided.sh``). This script does the rest, on the GPU machine:

* ``space``      writes that space (the shipped one minus the seed) to a file;
* ``look``       measures a wide look at the space once each: every value of every parameter around the
                 best-known continuous-batching configuration (one factor at a time), a small product
                 grid of the flags that matter most (attention x batch tokens x KV blocks, with CUDA graphs)
                 and the non-batching configurations without compile; ``--part i --parts n`` splits the
                 list over GPUs;
* ``remeasure``  takes each seed study's best configuration and the look's two best and measures them
                 again in interleaved rounds (A, B, C, A, B, C, ...; each GPU starts the round at another
                 place), so drift hits every configuration alike;
* ``summary``    the Markdown table: per seed, its best's re-measured mean against the look's best
                 (paired by round, bootstrap interval of the ratio) and whether it reaches 0.95x.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tuner.core.stats import paired_ratio_ci  # noqa: E402
from tuner.launch.process import ProcessLauncher  # noqa: E402
from tuner.space.load import load_space  # noqa: E402
from tuner.space.sample import params_to_flags  # noqa: E402
from tuner.space.schema import SearchSpace  # noqa: E402
from tuner.study.confirm import mean_ci  # noqa: E402
from tuner.trial.measure import ConfigRunner  # noqa: E402

SHIPPED = ROOT / "search_spaces" / "transformers-h100-tiny.yaml"
REMOVED_SEED = "cb-cuda-graph"
GOAL = 0.95
BASE = {  # the removed seed: the best-known configuration, centre of the one-factor look
    "continuous-batching": True,
    "attn-implementation": "sdpa",
    "cb-use-cuda-graph": True,
    "cb-block-size": 32,
    "cb-max-batch-tokens": None,
    "cb-num-blocks": None,
    "cb-max-memory-percent": 0.8,
}


def write_space(path: Path, cpu_rehearsal: tuple[str, str] | None = None) -> None:
    data = yaml.safe_load(SHIPPED.read_text())
    data["seed_trials"] = [s for s in data["seed_trials"] if s["name"] != REMOVED_SEED]
    if cpu_rehearsal is not None:  # the same steps on a CPU machine: a tiny model, float32
        data["model"], data["target"]["command"] = cpu_rehearsal[0], [cpu_rehearsal[1], "serve"]
        data["fixed_flags"] = {"dtype": "float32", "device": "cpu"}
        data["workload"].update(num_requests=8, input_len=32, output_len=4, stall_timeout_s=20)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def look_points(space: SearchSpace) -> list[dict[str, Any]]:
    """The look, in a fixed order: one factor at a time around BASE, a product grid, non-batching."""
    points: list[dict[str, Any]] = [dict(BASE)]
    for name, p in space.parameters.items():
        if name not in BASE or name == "continuous-batching":
            continue
        values: list[Any]
        if p.type == "bool":
            values = [False, True]
        elif p.type == "categorical":
            values = list(p.choices)
        else:
            values = [round(p.low + i * p.step, 6) for i in range(round((p.high - p.low) / p.step) + 1)]
        points += [{**BASE, name: v} for v in values if v != BASE[name]]
    for attn, graph, tokens, blocks in itertools.product(
        ("sdpa", "eager"), (True,), (None, 4096), (None, 2048)
    ):
        points.append({**BASE, "attn-implementation": attn, "cb-use-cuda-graph": graph,
                       "cb-max-batch-tokens": tokens, "cb-num-blocks": blocks})  # fmt: skip
    for attn in ("sdpa", "eager", "flex_attention"):
        points.append({"continuous-batching": False, "attn-implementation": attn, "compile": False})
    unique: dict[str, dict[str, Any]] = {}
    for point in points:
        unique.setdefault(key(space, point), point)
    return list(unique.values())


def key(space: SearchSpace, params: dict[str, Any]) -> str:
    return json.dumps(params_to_flags(space, params), sort_keys=True)


def runner(space: SearchSpace, gpu: int, work: Path, name: str) -> ConfigRunner:
    gpus = [gpu] if gpu >= 0 else None  # -1: no GPU (the CPU rehearsal)
    space = space.model_copy(update={"launch": space.launch.model_copy(update={"gpu_ids": gpus})})
    return ConfigRunner(space, ProcessLauncher(), study=name, log_dir=work / "logs")


def measure(run: ConfigRunner, params: dict[str, Any], index: int) -> dict[str, Any]:
    t0 = time.monotonic()
    outcome = run.measure(params_to_flags(run.space, params), run_index=index)
    metric = run.space.objectives[0].metric
    value = None if outcome.metrics is None or outcome.failure else outcome.metrics.get(metric)
    row = {
        "params": params,
        "value": value,
        "failure": outcome.failure.kind.value if outcome.failure else None,
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def cmd_look(args: argparse.Namespace) -> None:
    space = load_space(args.space)
    points = look_points(space)[args.part :: args.parts]
    run = runner(space, args.gpu, args.work, f"look-{args.part}")
    # written after every point and picked up again, so a call cut at the device's limit loses nothing
    rows = json.loads(args.output.read_text()) if args.output.exists() else []
    measured = {key(space, r["params"]) for r in rows}
    for i, p in enumerate(points):
        if key(space, p) not in measured:
            rows.append(measure(run, p, 2_000_000 + args.part * 1000 + i))
            args.output.write_text(json.dumps(rows, indent=1))


def best_of_study(db: Path) -> tuple[int, dict[str, Any], float] | None:
    """The study's best COMPLETE, feasible trial: (number, params, value)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{db}")
    from tuner.objective.ranking import is_feasible

    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and is_feasible(t)]
    if not done:
        return None
    best = max(done, key=lambda t: t.values[0])
    return best.number, dict(best.params), float(best.values[0])


def candidates(space: SearchSpace, dbs: list[Path], looks: list[Path]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for db in dbs:
        found = best_of_study(db)
        if found is not None:
            number, params, value = found
            out.setdefault(key(space, params), {"params": params, "from": []})["from"].append(
                f"{db.stem} trial {number} ({value:.1f})"
            )
    rows = [r for path in looks for r in json.loads(path.read_text()) if r["value"] is not None]
    for r in sorted(rows, key=lambda r: -r["value"])[:2]:
        out.setdefault(key(space, r["params"]), {"params": r["params"], "from": []})["from"].append(
            f"look ({r['value']:.1f})"
        )
    return out


def cmd_remeasure(args: argparse.Namespace) -> None:
    space = load_space(args.space)
    cands = candidates(space, args.dbs, args.looks)
    order = list(cands)
    run = runner(space, args.gpu, args.work, f"remeasure-{args.gpu}")
    rows = []
    for r in range(args.rounds):
        shift = (r + max(args.gpu, 0) * len(order) // 2) % len(order)
        for i, k in enumerate(order[shift:] + order[:shift]):
            row = measure(run, cands[k]["params"], 3_000_000 + max(args.gpu, 0) * 10_000 + r * 100 + i)
            rows.append({**row, "key": k, "round": f"gpu{args.gpu}-{r}", "from": cands[k]["from"]})
    args.output.write_text(json.dumps(rows, indent=1))


def cmd_summary(args: argparse.Namespace) -> None:
    rows = [r for path in args.remeasured for r in json.loads(path.read_text())]
    by_key: dict[str, dict[str, float | None]] = {}
    origin: dict[str, list[str]] = {}
    for r in rows:
        by_key.setdefault(r["key"], {})[r["round"]] = r["value"]
        origin[r["key"]] = r["from"]
    means = {k: mean_ci([v for v in rounds.values() if v is not None]) for k, rounds in by_key.items()}
    look_keys = [k for k in by_key if any(f.startswith("look") for f in origin[k])]
    ref = max(look_keys, key=lambda k: means[k].mean if means[k] else -1.0)
    lines = [
        "| configuration | found by | re-measured output tok/s | / look's best (paired 95 % CI) | ≥ 0.95× |",
        "|---|---|---|---|---|",
    ]
    for k, rounds in sorted(by_key.items(), key=lambda kv: -(means[kv[0]].mean if means[kv[0]] else 0)):
        pairs = [(rounds[r], by_key[ref][r]) for r in rounds if rounds[r] and by_key[ref].get(r)]
        ci = paired_ratio_ci([b for _, b in pairs], [a for a, _ in pairs], maximize=True) if (
            k != ref and len(pairs) >= 2) else None  # fmt: skip
        m = means[k]
        ratio = "1 (reference)" if k == ref else (ci.describe() if ci else "-")
        ok = "" if k == ref or ci is None else ("yes" if ci.estimate >= GOAL else "no")
        flags = ", ".join(f"{f}={v}" for f, v in json.loads(k).items())
        lines.append(
            f"| `{flags}` | {'; '.join(origin[k])} | {m.describe() if m else 'crashed'} | {ratio} | {ok} |"
        )
    text = "\n".join(lines) + "\n"
    args.output.write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("space")
    s.add_argument("output", type=Path)
    s.add_argument("--cpu-rehearsal", nargs=2, metavar=("MODEL", "TRANSFORMERS_BIN"))
    lk = sub.add_parser("look")
    rm = sub.add_parser("remeasure")
    for q in (lk, rm):
        q.add_argument("--space", type=Path, required=True)
        q.add_argument("--gpu", type=int, default=0)
        q.add_argument("--work", type=Path, default=Path("/tmp/tf-guided"))
        q.add_argument("--output", type=Path, required=True)
    lk.add_argument("--part", type=int, default=0)
    lk.add_argument("--parts", type=int, default=1)
    rm.add_argument("--dbs", type=Path, nargs="+", required=True)
    rm.add_argument("--looks", type=Path, nargs="+", required=True)
    rm.add_argument("--rounds", type=int, default=2)
    sm = sub.add_parser("summary")
    sm.add_argument("remeasured", type=Path, nargs="+")
    sm.add_argument("--output", type=Path, required=True)
    sub.add_parser("points").add_argument("--space", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "space":
        write_space(args.output, args.cpu_rehearsal)
    elif args.cmd == "look":
        cmd_look(args)
    elif args.cmd == "remeasure":
        cmd_remeasure(args)
    elif args.cmd == "summary":
        cmd_summary(args)
    else:
        for point in look_points(load_space(args.space)):
            print(point)
    return 0


if __name__ == "__main__":
    sys.exit(main())
